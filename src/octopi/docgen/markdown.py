"""Markdown pieces shared by the generated pages: table cells and generated blocks."""

from __future__ import annotations

from octopi.docgen import COMMAND


def table_cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _begin(name: str) -> str:
    return f"<!-- BEGIN GENERATED {name}: `{COMMAND}` rewrites this block; do not edit. -->"


def _end(name: str) -> str:
    return f"<!-- END GENERATED {name} -->"


def replace_block(text: str, name: str, content: str, where: str) -> str:
    """``text`` with the generated block ``name`` replaced by ``content``."""
    begin, end = _begin(name), _end(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(
            f"{where}: the markers of the generated block {name!r} are missing; put\n"
            f"{begin}\n{end}\non lines of their own where the block belongs"
        )
    return text[: start + len(begin)] + "\n\n" + content.strip("\n") + "\n\n" + text[stop:]
