"""Reading the files a user hands to a command.

Each reader raises one :class:`~octopi.errors.InputError` that names the file and what is
wrong with it (missing, a folder, not text, not YAML/JSON, truncated, of another kind), so a
command stops with one line before it writes anything. Nothing here ever suggests loading a
file in a way that could run code from it.
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from octopi.errors import InputError, MissingInputError, validation_problems

ModelT = TypeVar("ModelT", bound=BaseModel)


def absolute_path(path: str | Path, base: str | Path | None = None) -> Path:
    """``path`` (``~`` expanded) made absolute against ``base`` (default: the working folder),
    symlinks resolved: the one rule for the copick config paths a study or a run records."""
    return ((Path.cwd() if base is None else Path(base)) / Path(path).expanduser()).resolve()


def check_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path; :class:`MissingInputError` unless it is an existing file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise MissingInputError(f"{what} not found: {path}")
    return path


def read_text_file(path: str | Path, what: str) -> str:
    """The text of ``path`` (UTF-8); an InputError when it is missing or binary."""
    path = check_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{what} {path} is not a text file (byte {error.start} is not UTF-8): corrupt, or "
            "another kind of file"
        ) from error


def read_yaml_mapping(path: str | Path, what: str, allow_empty: bool = False) -> dict[str, Any]:
    """The mapping a YAML file holds; an InputError when it is not YAML or not a mapping."""
    path = Path(path)
    text = read_text_file(path, what)
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "unreadable"
        raise InputError(f"{what} {path} is not valid YAML ({problem}{where})") from error
    if values is None and allow_empty:
        return {}
    if not isinstance(values, dict):
        kind = "nothing" if values is None else f"a {type(values).__name__}"
        raise InputError(f"{what} {path} holds {kind}, not a mapping of settings")
    return values


def read_json_file(path: str | Path, what: str) -> Any:
    """The data a JSON file holds; an InputError when it is not JSON."""
    path = Path(path)
    text = read_text_file(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{what} {path} is not valid JSON ({error.msg} at line {error.lineno}, column "
            f"{error.colno}): truncated or corrupt?"
        ) from error


def validate_file(model: type[ModelT], values: Any, path: str | Path, what: str) -> ModelT:
    """``model`` from the values read from ``path``; an InputError listing the bad keys."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        problems = validation_problems(error)
        raise InputError(
            f"{what} {path} is not valid: "
            + "; ".join(problems[:5])
            + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        ) from error


def load_torch_file(path: str | Path, what: str, fix: str = "", map_location: str = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, never code.

    Raises an InputError naming the file when it is missing, corrupt, truncated, not a
    PyTorch file, or a pickle of other Python objects (which octopi never loads); ``fix``
    (how to go on) ends its message.
    """
    import torch

    path = check_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4"
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever the unpickler met, the file is bad
        if isinstance(error, pickle.UnpicklingError) and zipfile.is_zipfile(path):
            problem = (
                "holds Python objects besides tensors and plain data, so it was not written "
                "by octopi; octopi does not load such files (they can run code)"
            )
        else:
            problem = "is corrupt, truncated or not a PyTorch file"
        raise InputError(f"{what} {path} {problem}" + (f"; {fix}" if fix else "")) from error
