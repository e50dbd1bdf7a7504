"""The user docs (docs/*.md) agree with the code: generated pages are fresh, every CLI option
is documented, the published tool's flags are mapped, and every link resolves."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import click
import pytest

from octopi.cli import main
from octopi.docgen import config_reference, pages

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FLAGS_PAGE = DOCS / "flags.md"
REGENERATE = "run `python -m octopi.docgen` and commit the result"

# Every option of the published octopi 1.7.0 `train` and `model-explore` (PyPI wheel,
# octopi/entry_points/run_train.py, run_optuna.py and common.py), as click lists them.
PUBLISHED_FLAGS: dict[str, tuple[str, ...]] = {
    "train": (
        "-c", "--config",
        "-uri", "--tomo-uri",
        "-turi", "--target-uri",
        "-truns", "--trainRunIDs",
        "-vruns", "--validateRunIDs",
        "-split", "--data-split",
        "-mc", "--model-config",
        "-mw", "--model-weights",
        "-ch", "--channels",
        "-s", "--strides",
        "--res-units",
        "-dim", "--dim-in",
        "-nepochs", "--num-epochs",
        "--val-interval",
        "-ncache", "--ncache-tomos",
        "-metric", "--best-metric",
        "-bs", "--batch-size",
        "-lr", "--lr",
        "-ta", "--tversky-alpha",
        "-bgr", "--background-ratio",
        "-o", "--output",
    ),
    "model-explore": (
        "-c", "--config",
        "-uri", "--tomo-uri",
        "-turi", "--target-uri",
        "-truns", "--trainRunIDs",
        "-vruns", "--validateRunIDs",
        "-split", "--data-split",
        "-n", "--study-name",
        "-o", "--output",
        "--model-type",
        "-nepochs", "--num-epochs",
        "--val-interval",
        "-ncache", "--ncache-tomos",
        "-metric", "--best-metric",
        "-bgr", "--background-ratio",
        "-nt", "--num-trials",
        "--random-seed",
        "--submitit",
        "-nj", "--njobs",
        "-cc", "--cpu-constraint",
        "-gc", "--gpu-constraint",
        "--timeout",
        "--db-backend",
    ),
}  # fmt: skip
PUBLISHED_PYTHON = ROOT / "benchmarks" / ".envs" / "octopi-1.7.0" / "bin" / "python"

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole heading line) up to the next heading of its level
    or above."""
    lines = text.splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    start = lines.index(heading)
    end = len(lines)
    for index in range(start + 1, len(lines)):
        match = re.match(r"^(#+) ", lines[index])
        if match and len(match.group(1)) <= level:
            end = index
            break
    return "\n".join(lines[start + 1 : end])


def _commands() -> list[tuple[str, click.Command]]:
    context = click.Context(main, info_name="octopi")
    return [(name, main.get_command(context, name)) for name in main.list_commands(context)]


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = re.match(r"^#+ (.*)$", line)
        if match and not in_code:
            slug = _slug(match.group(1))
            anchor, n = slug, 0
            while anchor in anchors:
                n += 1
                anchor = f"{slug}-{n}"
            anchors.add(anchor)
    return anchors


def test_generated_pages_are_fresh() -> None:
    for path, expected in pages.expected_pages(DOCS).items():
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing: {REGENERATE}"
        assert path.read_text() == expected, f"{path.relative_to(ROOT)} is stale: {REGENERATE}"


def test_config_reference_covers_every_model_and_field() -> None:
    text = (DOCS / pages.CONFIG_REFERENCE).read_text()
    models, _ = config_reference.model_order()
    for model in models:
        section = _section(text, f"## {model.__name__}")
        for name in model.model_fields:
            assert f"| `{name}` |" in section, f"{model.__name__}.{name} missing: {REGENERATE}"


def test_every_config_field_has_a_description() -> None:
    missing = config_reference.missing_descriptions()
    assert not missing, (
        f"config fields without a description: {missing}; give them Field(description=...) "
        "or a 'name: text' line in the model's docstring (src/octopi/config/)"
    )


def test_every_cli_option_is_in_flags_page() -> None:
    text = FLAGS_PAGE.read_text()
    missing = []
    for name, command in _commands():
        heading = f"### octopi {name}"
        assert heading in text.splitlines(), f"no section {heading!r} in docs/flags.md"
        section = _section(text, heading)
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            for opt in [*param.opts, *param.secondary_opts]:
                if f"`{opt}`" not in section:
                    missing.append(f"octopi {name} {opt}")
    assert not missing, f"options missing from docs/flags.md: {missing}; {REGENERATE}"


@pytest.mark.parametrize("command", sorted(PUBLISHED_FLAGS))
def test_published_flags_are_mapped(command: str) -> None:
    text = FLAGS_PAGE.read_text()
    table = _section(text, f"### `octopi {command}` (1.7.0)")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    first_cells = " ".join(row.split(" | ")[0] for row in rows)
    missing = [flag for flag in PUBLISHED_FLAGS[command] if f"`{flag}`" not in first_cells]
    assert not missing, (
        f"docs/flags.md: the published `octopi {command}` table lacks rows for {missing}"
    )


@pytest.mark.skipif(
    not PUBLISHED_PYTHON.is_file(),
    reason="the published octopi 1.7.0 venv is absent (python -m benchmarks install)",
)
def test_published_flags_constant_matches_the_published_tool() -> None:
    script = (
        "import json\n"
        "from octopi.entry_points.run_train import cli as train\n"
        "from octopi.entry_points.run_optuna import cli as explore\n"
        "print(json.dumps({c.name: [o for p in c.params for o in p.opts]"
        " for c in (train, explore)}))\n"
    )
    result = subprocess.run(
        [str(PUBLISHED_PYTHON), "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PUBLISHED_PYTHON.parent,  # not the repository root: its octopi must not shadow
    )
    assert result.returncode == 0, result.stderr
    published = json.loads(result.stdout.strip().splitlines()[-1])
    for command, flags in PUBLISHED_FLAGS.items():
        assert sorted(flags) == sorted(published[command]), command


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = set(LINK.findall(readme))
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if f"docs/{p.name}" not in targets]
    assert not missing, f"README.md does not link {missing}"


def test_index_links_every_docs_page() -> None:
    targets = set(LINK.findall((DOCS / "index.md").read_text()))
    missing = [
        p.name for p in sorted(DOCS.glob("*.md")) if p.name != "index.md" and p.name not in targets
    ]
    assert not missing, f"docs/index.md does not link {missing}"


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_relative_links_resolve(page: str) -> None:
    path = DOCS / page
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no file {linked})")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no heading #{anchor} in {linked.name})")
    assert not broken, f"docs/{page}: broken links: {broken}"
