"""Which pinned packages ``benchmarks/gpu_check_offline.sh pack`` carries to a machine without
a package index.

``python -m benchmarks.offline_pins --have FILE --out DIR`` writes ``DIR/ours.txt`` (the pins of
``requirements-lock.txt``) and ``DIR/published.txt`` (those of ``benchmarks/published-lock.txt``,
octopi 1.7.0's venv, that our lock lacks or pins at another version), each less what the target
has already (``FILE``: package names, any separators), torch and its CUDA wheels (the target's
own CUDA build serves both tools), and the developer tools. ``torch-ema``, which octopi 1.7.0
imports, is the one ``torch*`` package kept.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUR_LOCK = REPO / "requirements-lock.txt"
PUBLISHED_LOCK = REPO / "benchmarks" / "published-lock.txt"
# Never imported by the GPU check: linters, formatters, build tools, Windows-only packages, and
# PuLP (Snakemake's ILP scheduler, 16 MB; the check runs no workflow).
TOOLS = {
    "ruff", "black", "snakefmt", "shfmt-py", "uv", "hatchling", "pywin32", "pyreadline3",
    "trove-classifiers", "pandas-stubs", "pytokens", "pip", "setuptools", "pulp",
}  # fmt: skip
TARGET_TORCH = ("torch", "nvidia-", "cuda-", "triton")
KEPT_TORCH = {"torch-ema"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(text: str) -> set[str]:
    """Package names in any list: one per line, comma- or space-separated."""
    return {normalise(name) for name in re.split(r"[\s,]+", text) if name}


def read_pins(text: str) -> dict[str, str]:
    """``{name: version}`` of the ``name==version`` lines of a lock (comments, hashes skipped)."""
    pins = {}
    for line in text.splitlines():
        line = line.strip()
        if "==" in line and not line.startswith("#"):
            name, version = line.split()[0].split(";")[0].split("==")
            pins[normalise(name)] = version
    return pins


def carried(pins: dict[str, str], have: set[str]) -> dict[str, str]:
    """The pins a target that has ``have`` (and a CUDA torch) still needs."""
    return {
        name: version
        for name, version in pins.items()
        if name not in have
        and name not in TOOLS
        and (name in KEPT_TORCH or not name.startswith(TARGET_TORCH))
    }


def select(ours_lock: str, published_lock: str, have: set[str]) -> tuple[dict, dict]:
    """(ours, published extra): what goes to ``site/`` and what to ``pub/``."""
    ours = carried(read_pins(ours_lock), have)
    published = carried(read_pins(published_lock), have)
    extra = {name: version for name, version in published.items() if ours.get(name) != version}
    return ours, extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--have", type=Path, help="package names the target has already")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    have = read_names(args.have.read_text()) if args.have else set()
    ours, extra = select(OUR_LOCK.read_text(), PUBLISHED_LOCK.read_text(), have)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, pins in (("ours", ours), ("published", extra)):
        lines = "".join(f"{package}=={version}\n" for package, version in sorted(pins.items()))
        (args.out / f"{name}.txt").write_text(lines)
        print(f"{args.out / name}.txt: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
