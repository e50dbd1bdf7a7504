"""Atomic file writes and resolved-config records.

Every output is written to a temporary name in its final directory and renamed into place, so
a killed job never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The block creates the temporary file. On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A fresh unique name, not mkstemp: mkstemp creates the file with mode 0600, which the
    # rename would carry onto the output (unreadable to the group on a shared filesystem).
    # The writer creates the file, so it gets the usual umask-based permissions.
    temp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temp:
        temp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_yaml(path: str | Path, data: Any) -> None:
    """Write ``data`` as YAML to ``path`` atomically (keys in insertion order)."""
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def to_plain(value: Any) -> Any:
    """Config models, lists and paths as plain YAML/JSON-compatible data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_resolved_config(
    directory: str | Path, command: str, model: BaseModel | None = None, **parts: Any
) -> Path:
    """Record the fully resolved config a command ran with, as ``<command>_config.yaml``.

    ``model``'s fields go to the top level; each of ``parts`` (models, lists, paths or plain
    values) goes under its own key. Returns the path written.
    """
    record: dict[str, Any] = {"command": command}
    if model is not None:
        record.update(to_plain(model))
    record.update({key: to_plain(value) for key, value in parts.items()})
    path = Path(directory) / f"{command}_config.yaml"
    atomic_write_yaml(path, record)
    return path
