"""``python -m octopi.docgen [--check] [--docs-dir DIR]``: regenerate (or check) the pages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import octopi.docgen
from octopi.docgen import COMMAND
from octopi.docgen.pages import DOCS_DIR, stale_pages, write_pages


def main(argv: list[str] | None = None) -> int:
    description = (octopi.docgen.__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog=COMMAND, description=description)
    parser.add_argument("--docs-dir", type=Path, default=DOCS_DIR, help="docs folder")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a page is stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages(args.docs_dir)
        for path in stale:
            print(f"stale: {path} (run `{COMMAND}`)")
        return 1 if stale else 0
    changed = write_pages(args.docs_dir)
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print("docs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
