"""The config reference page: every config model of :mod:`octopi.config` and its fields
(type, default, constraints, description), in the order of
:class:`~octopi.config.WorkflowConfig`, then the models of single commands."""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from octopi import config as config_module
from octopi.config import WorkflowConfig
from octopi.docgen import COMMAND
from octopi.docgen.config_descriptions import CHECKS, COMMAND_MODELS
from octopi.docgen.markdown import table_cell


def _anchor(name: str) -> str:
    return name.lower()


def _model_types(annotation: Any) -> Iterator[type[BaseModel]]:
    """Config models named anywhere inside a type annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _model_types(arg)


def _walk(model: type[BaseModel], path: str, seen: dict[str, list[str]]) -> None:
    """Record ``model`` at ``path``, then its nested models depth first, in field order."""
    seen.setdefault(model.__name__, [])
    if path:
        seen[model.__name__].append(path)
    for name, field in model.model_fields.items():
        for nested in _model_types(field.annotation):
            _walk(nested, f"{path}.{name}" if path else name, seen)


def model_order() -> tuple[list[type[BaseModel]], dict[str, list[str]]]:
    """Every config model: WorkflowConfig's tree first, then the other models of the module
    in source order; and the study-config key paths where each model appears."""
    seen: dict[str, list[str]] = {}
    _walk(WorkflowConfig, "", seen)
    models = {cls.__name__: cls for cls in _module_models()}
    ordered = [models[name] for name in seen if name in models]
    ordered += [cls for name, cls in models.items() if name not in seen]
    return ordered, seen


def _module_models() -> list[type[BaseModel]]:
    """Config models defined in the :mod:`octopi.config` package, in source order (its
    modules in the order ``__init__`` imports them)."""
    import inspect

    modules = list(dict.fromkeys(v.__module__ for v in vars(config_module).values()
                                 if isinstance(v, type)))  # fmt: skip
    found = [
        value
        for value in vars(config_module).values()
        if isinstance(value, type)
        and issubclass(value, config_module.Frozen)
        and value is not config_module.Frozen
        and value.__module__.startswith(f"{config_module.__name__}.")
    ]
    return sorted(
        found,
        key=lambda cls: (modules.index(cls.__module__), inspect.getsourcelines(cls)[1]),
    )


def format_type(annotation: Any) -> str:
    """A readable type: ``list[int]``, ``float | null``, ``"a" | "b"``, model links."""
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(annotation.__name__)})"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return format_type(args[0])
    if origin is Literal:
        return " \\| ".join(f"`{json.dumps(arg)}`" for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(format_type(arg) for arg in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(format_type(arg) for arg in args)}]"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def format_default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        if value == type(value)():
            name = type(value).__name__
            return f"[defaults](#{_anchor(name)})"
        value = value.model_dump(mode="json")
    elif isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value, ensure_ascii=False, default=str)}`"


_BOUNDS = {
    annotated_types.Gt: ("> {}", "gt"),
    annotated_types.Ge: ("≥ {}", "ge"),
    annotated_types.Lt: ("< {}", "lt"),
    annotated_types.Le: ("≤ {}", "le"),
    annotated_types.MinLen: ("length ≥ {}", "min_length"),
    annotated_types.MaxLen: ("length ≤ {}", "max_length"),
}


def format_constraints(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for kind, (template, attribute) in _BOUNDS.items():
            if isinstance(item, kind):
                parts.append(template.format(getattr(item, attribute)))
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


_DOC_ENTRY = re.compile(r"^(\w+(?:\s*/\s*\w+)*):\s+(\S.*)$")


def _rst(text: str) -> str:
    """Docstring markup as markdown: double backticks become single, Sphinx roles are dropped
    (their target stays, in code font)."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def docstring_fields(model: type[BaseModel]) -> dict[str, str]:
    """Field descriptions written in the model's docstring as ``name: text`` paragraphs
    (``a / b: text`` describes both; indented lines continue the text)."""
    entries: dict[str, str] = {}
    names: list[str] = []
    lines = (model.__doc__ or "").splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines[1:] if x.strip()), default=0)
    for raw in lines[1:]:
        line = raw[indent:] if raw.strip() else ""
        match = _DOC_ENTRY.match(line)
        if match and match.group(1).split("/")[0].strip() in model.model_fields:
            names = [name.strip() for name in match.group(1).split("/")]
            for name in names:
                entries[name] = match.group(2).strip()
        elif line.startswith((" ", "\t")) and names:
            for name in names:
                entries[name] += " " + line.strip()
        else:
            names = []
    return {name: _rst(text) for name, text in entries.items()}


def _description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    text = field.description or docstring_fields(model).get(name) or ""
    return re.sub(r"\bNone\b", "null", text)  # as written in the YAML config


def missing_descriptions() -> list[str]:
    """``Model.field`` of every field without a description (for the tests)."""
    models, _ = model_order()
    return [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not _description(model, name, field)
    ]


def _model_section(model: type[BaseModel], paths: list[str]) -> list[str]:
    doc = _rst(" ".join((model.__doc__ or "").strip().split("\n\n")[0].split()))
    lines = [f"## {model.__name__}", "", doc, ""]
    if model is WorkflowConfig:
        lines += ["The top level of a study's `config.yaml`.", ""]
    elif paths:
        lines += ["Study config key: " + ", ".join(f"`{path}`" for path in paths) + ".", ""]
    if model.__name__ in COMMAND_MODELS:
        lines += [f"Used by: {COMMAND_MODELS[model.__name__]}.", ""]
    lines += [
        "| field | type | default | constraints | description |",
        "|---|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        cells = (
            f"`{name}`",
            format_type(field.annotation),
            table_cell(format_default(field)),
            table_cell(format_constraints(field)),
            table_cell(_description(model, name, field)),
        )
        lines.append("| " + " | ".join(cells) + " |")
    checks = CHECKS.get(model.__name__)
    if checks:
        lines += ["", "Checks: " + "; ".join(checks) + "."]
    lines.append("")
    return lines


def render_config_reference() -> str:
    models, paths = model_order()
    study = [m for m in models if m is WorkflowConfig or paths.get(m.__name__)]
    others = [m for m in models if m not in study]
    lines = [
        "# Configuration reference",
        "",
        f"<!-- GENERATED by `{COMMAND}` from src/octopi/config/: do not edit by hand. -->",
        "",
        f"This page is generated by `{COMMAND}` from the pydantic models in",
        "`src/octopi/config/`, the one home of every default; do not edit it by hand (a test",
        "fails when it is stale). All models are frozen and reject unknown keys. A study's",
        "`config.yaml` is a [WorkflowConfig](#workflowconfig); the command-line flags that set",
        "these fields are listed in [flags.md](flags.md), and [config/README.md]"
        "(../config/README.md) walks through an example study config.",
        "",
        "Study config (in the order of `WorkflowConfig`):",
        "",
    ]
    lines += [f"- [{m.__name__}](#{_anchor(m.__name__)})" for m in study]
    lines += ["", "Models of single commands and of `model_config.yaml`:", ""]
    lines += [f"- [{m.__name__}](#{_anchor(m.__name__)})" for m in others]
    lines.append("")
    for model in models:
        lines += _model_section(model, paths.get(model.__name__, []))
    return "\n".join(lines).rstrip("\n") + "\n"
