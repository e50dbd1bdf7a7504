"""The generated pages: what each should hold, which are stale, and rewriting them."""

from __future__ import annotations

from pathlib import Path

from octopi.docgen.config_reference import render_config_reference
from octopi.docgen.flags import render_flags
from octopi.docgen.markdown import replace_block

DOCS_DIR = Path(__file__).resolve().parents[3] / "docs"
CONFIG_REFERENCE = "config-reference.md"
SEARCH_SPACE = "search-space.md"
FLAGS = "flags.md"


def render_search_space() -> str:
    from octopi.models.search_spaces import search_space_table

    return search_space_table() + "\n"


def expected_pages(docs_dir: Path = DOCS_DIR) -> dict[Path, str]:
    """The text each generated page should have (pages with blocks: their current prose)."""
    pages = {docs_dir / CONFIG_REFERENCE: render_config_reference()}
    for page, block, render in (
        (SEARCH_SPACE, "search-space", render_search_space),
        (FLAGS, "commands", render_flags),
    ):
        path = docs_dir / page
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: it holds the prose around the tables")
        pages[path] = replace_block(path.read_text(), block, render(), str(path))
    return pages


def stale_pages(docs_dir: Path = DOCS_DIR) -> list[Path]:
    return [
        path
        for path, text in expected_pages(docs_dir).items()
        if not path.is_file() or path.read_text() != text
    ]


def write_pages(docs_dir: Path = DOCS_DIR) -> list[Path]:
    """Regenerate the pages; return those that changed."""
    from octopi.io_utils import atomic_write_text

    changed = []
    for path, text in expected_pages(docs_dir).items():
        if not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)
            changed.append(path)
    return changed
