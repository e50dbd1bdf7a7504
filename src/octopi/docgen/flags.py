"""The option tables of ``docs/flags.md``: one table per ``octopi`` subcommand, read from the
click commands (imported when the tables are made)."""

from __future__ import annotations

import re
from typing import Any

from octopi.docgen.markdown import table_cell

_DEFAULT_IN_HELP = re.compile(r"\s*\[default: (.*?)\]\s*$", re.S)


def _unset(default: Any) -> bool:
    """No default: None, or click's UNSET sentinel (click ≥ 8.2)."""
    return default is None or type(default).__name__ == "Sentinel"


def _code(value: str) -> str:
    """A value in code font; prose ("the model's") stays prose."""
    return value if " " in value else f"`{value}`"


def _config_defaults() -> dict[str, str]:
    """Defaults of the shared data options, whose help texts do not show them (the value
    comes from :class:`~octopi.config.DataConfig` when the option is left out)."""
    from octopi.config import DataConfig

    fields = DataConfig.model_fields

    def joined(name: str) -> str:
        return ",".join(str(v) for v in fields[name].get_default(call_default_factory=True))

    return {
        "voxel_size": f"{fields['voxel_size_angstrom'].default:g}",
        "target_info": str(fields["target"].get_default(call_default_factory=True)),
        "tomo_alg": joined("tomo_algorithms"),
        "data_split": joined("data_split"),
    }


def _option_default(option: Any, config_defaults: dict[str, str]) -> tuple[str, str]:
    """(default text, help without its ``[default: …]`` suffix)."""
    text = " ".join((option.help or "").split())
    match = _DEFAULT_IN_HELP.search(text)
    if match:
        return _code(match.group(1)), text[: match.start()].rstrip()
    if option.name in config_defaults and _unset(option.default):
        return _code(config_defaults[option.name]), text
    if option.required:
        return "**required**", text
    default = option.default
    if option.is_flag and not option.secondary_opts:
        return "off", text
    if _unset(default) or callable(default):
        return "", text
    if isinstance(default, bool) and option.secondary_opts:
        chosen = option.opts if default else option.secondary_opts
        return f"`{chosen[0]}`", text
    return f"`{default}`", text


def _option_type(option: Any) -> str:
    import click

    if option.is_flag:
        return "flag"
    if isinstance(option.type, click.Choice):
        return " \\| ".join(f"`{choice}`" for choice in option.type.choices)
    name = option.type.name.upper()
    return {"PATH": "path", "DIRECTORY": "folder", "FILE": "file"}.get(name, name.lower())


def _option_names(option: Any) -> str:
    names = " / ".join(f"`{name}`" for name in [*option.opts, *option.secondary_opts])
    if option.multiple:
        names += " (repeatable)"
    if option.hidden:
        names += " (hidden)"
    return names


def render_flags() -> str:
    """One table per ``octopi`` subcommand: every option (hidden ones too)."""
    import click

    from octopi.cli import main

    context = click.Context(main, info_name="octopi")
    config_defaults = _config_defaults()
    lines: list[str] = []
    for name in main.list_commands(context):
        command = main.get_command(context, name)
        summary = " ".join((command.help or "").strip().split("\n\n")[0].split())
        lines += [f"### octopi {name}", "", summary, ""]
        lines += ["| option | type | default | description |", "|---|---|---|---|"]
        for option in command.params:
            if not isinstance(option, click.Option):
                continue
            default, text = _option_default(option, config_defaults)
            cells = (_option_names(option), _option_type(option), default, table_cell(text))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
