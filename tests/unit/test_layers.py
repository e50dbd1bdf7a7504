"""The import layers of docs/architecture.md: a module imports its own package and lower
layers only, never a package of its own layer or above (imports inside functions count)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# Bottom to top; a unit is a subpackage of octopi or one of its top-level modules. Keep this
# list and the table in docs/architecture.md the same.
LAYERS: list[set[str]] = [
    {"octopi", "errors", "locks", "class_match", "parallel"},
    {
        "config", "io_utils", "input_files", "config_diff", "runtime", "gpu_slots",
        "slurm_jobs", "cluster_check", "study_monitor", "tracking_calls",
    },
    {"models", "data", "tracking", "workflow_runner", "cpu_slots"},
    {"inference", "tracking_server", "study_settings", "snakemake_profiles"},
    {"evaluation", "study_tracking"},
    {"training"},
    {"search"},
    {"cli"},
    {"demo", "docgen"},
]  # fmt: skip
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """``octopi.data.patches`` → ``data``; ``octopi`` → ``octopi``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _submodule(name: str) -> str:
    """``octopi.<name>`` when it is a module or package, else ``octopi`` (``__version__``)."""
    package = SRC / "octopi"
    is_module = (package / name).is_dir() or (package / f"{name}.py").is_file()
    return f"octopi.{name}" if is_module else "octopi"


def octopi_imports(path: Path) -> set[str]:
    """Every octopi module ``path`` imports (``from octopi import tracking``: octopi.tracking)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("octopi")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("octopi"):
            if node.module == "octopi":
                found |= {_submodule(alias.name) for alias in node.names}
            else:
                found.add(node.module)
    return found


def upward_imports() -> list[str]:
    problems = []
    for path in sorted((SRC / "octopi").rglob("*.py")):
        importer = unit_of(module_name(path))
        for imported in sorted(octopi_imports(path)):
            target = unit_of(imported)
            if target == importer:
                continue
            if importer not in LEVEL or target not in LEVEL:
                missing = importer if importer not in LEVEL else target
                problems.append(f"{missing}: not in LAYERS (add it here and to the docs)")
            elif LEVEL[target] >= LEVEL[importer]:
                problems.append(f"{module_name(path)} imports {imported} (layer not below)")
    return sorted(set(problems))


def test_no_module_imports_its_own_layer_or_above() -> None:
    assert upward_imports() == []


def test_the_check_finds_an_upward_import(tmp_path: Path, monkeypatch) -> None:
    """A data module importing the model package (issue 15) is reported."""
    package = tmp_path / "octopi"
    (package / "data").mkdir(parents=True)
    (package / "data" / "bad.py").write_text(
        "def f():\n    from octopi.models.model_card import ModelCard\n"
    )
    monkeypatch.setattr(f"{__name__}.SRC", tmp_path)
    assert upward_imports() == [
        "octopi.data.bad imports octopi.models.model_card (layer not below)"
    ]
