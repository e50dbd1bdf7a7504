"""The dry-run planning benchmark: its table's goal flags, and one real (tiny) measurement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO))

from benchmarks import planning  # noqa: E402


def _cell(wall: float) -> dict:
    return {
        "wall_seconds": wall,
        "cpu_seconds": wall + 0.1,
        "all_wall_seconds": [wall, wall + 0.4],
        "load_average": [[0.5, 0.7], [0.6, 0.9]],
        "command": "snakemake -n",
    }


def _results(walls_200: dict[str, float], walls_1000: dict[str, float]) -> dict:
    return {
        "benchmark": "dry-run",
        "timestamp": "2026-01-01T00:00:00",
        "repeats": 2,
        "cores": 2,
        "imports_torch": False,
        "trial_counts": {
            "200": {name: _cell(walls_200.get(name, 1.0)) for name in planning.COMMANDS},
            "1000": {name: _cell(walls_1000.get(name, 2.0)) for name in planning.COMMANDS},
        },
    }


def _row(table: str, trials: int, name: str) -> list[str]:
    label = planning.LABELS[name]
    [line] = [row for row in table.splitlines() if row.startswith(f"| {trials} | {label} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_goals_are_judged_per_trial_count_on_the_user_commands() -> None:
    table = planning.markdown(
        _results(
            {"model_explore_dry_run": 1.4, "snakemake_n": 1.6},
            {"model_explore_dry_run": 3.2, "snakemake_n": 2.9, "bare_snakemake_n": 9.0},
        )
    )
    assert _row(table, 200, "model_explore_dry_run")[-2:] == ["< 1.5 s", "met"]
    assert _row(table, 200, "snakemake_n")[-2:] == ["< 1.5 s", "not met"]
    assert _row(table, 1000, "model_explore_dry_run")[-2:] == ["< 3 s", "not met"]
    assert _row(table, 1000, "snakemake_n")[-2:] == ["< 3 s", "met"]
    assert _row(table, 1000, "bare_snakemake_n")[-2:] == ["—", "—"]  # a reference, no goal
    row = _row(table, 1000, "snakemake_n")
    assert row[2:6] == ["2.90", "3.00", "2.90–3.30", "0.5–0.9"]
    assert "Torch imported while planning: **no**" in table


@pytest.mark.slow
def test_a_tiny_measurement_runs_every_command(tmp_path: Path) -> None:
    results = planning.measure(tmp_path, trial_counts=(3,), repeats=1)
    row = results["trial_counts"]["3"]
    assert set(row) == set(planning.COMMANDS)
    assert row["model_explore_dry_run"]["planned_trial_jobs"] == 3
    assert all(cell["wall_seconds"] > 0 for cell in row.values())
    assert results["imports_torch"] is False
    assert not (tmp_path / "new-study-3").exists()  # the dry run left no study behind
    assert "| 3 | `octopi model-explore --dry-run` |" in planning.markdown(results)
