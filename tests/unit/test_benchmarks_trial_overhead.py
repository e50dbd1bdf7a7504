"""The trial-overhead benchmark's reading of a study: Snakemake's metadata, the trials'
result.json, and the table judged against the goal (no study is run here)."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO))

from benchmarks import trial_overhead  # noqa: E402


def _study(tmp_path: Path, jobs: list[tuple[float, float, float, float]]) -> Path:
    """A study folder as Snakemake and explore-trial leave it: per slot (job start, job end,
    training seconds, overhead in the trial)."""
    metadata = tmp_path / ".snakemake" / "metadata"
    metadata.mkdir(parents=True)
    for slot, (start, end, training, inside) in enumerate(jobs):
        output = f"trials/{slot}/result.json"
        name = base64.urlsafe_b64encode(output.encode()).decode()
        (metadata / name).write_text(json.dumps({"starttime": start, "endtime": end}))
        folder = tmp_path / "trials" / str(slot)
        folder.mkdir(parents=True)
        phases = {"imports": 3.0, "suggest": 0.5, "mlflow_parent": 0.25, "training": training}
        result = {
            "seconds_training": training,
            "seconds_overhead": inside,
            "seconds_phases": phases,
            "cpu_seconds_phases": phases,
        }
        (folder / "result.json").write_text(json.dumps(result))
    return tmp_path


def test_overhead_from_outside_is_the_job_wall_minus_training(tmp_path: Path) -> None:
    study = _study(tmp_path, [(100.0, 130.0, 24.0, 4.5), (131.5, 150.0, 12.0, 4.0)])
    rows = trial_overhead.trial_rows(study, 2)
    assert [row["job_seconds"] for row in rows] == [30.0, 18.5]
    assert [row["overhead_outside_seconds"] for row in rows] == [6.0, 6.5]
    assert [row["overhead_inside_seconds"] for row in rows] == [4.5, 4.0]
    assert trial_overhead.between_jobs(list(reversed(rows))) == [1.5]


def _results(rows: list[dict]) -> dict:
    return {
        "timestamp": "2026-01-01T00:00:00",
        "cores": 2,
        "trials": len(rows),
        "model_explore": {"load_average": [0.5, 1.0]},
        "slots": rows,
        "between_jobs_seconds": trial_overhead.between_jobs(rows),
        "imports": {"interpreter start": 0.25, "torch": 1.5, "monai": 2.0},
    }


@pytest.mark.parametrize(
    ("ends", "verdict", "median"),
    [((130.0, 150.0), "not met", "6.2"), ((128.5, 148.0), "met", "4.5")],
)
def test_table_judges_the_median_outside_overhead(tmp_path, ends, verdict, median) -> None:
    jobs = [(100.0, ends[0], 24.0, 4.5), (131.5, ends[1], 12.0, 4.0)]
    table = trial_overhead.markdown(_results(trial_overhead.trial_rows(_study(tmp_path, jobs), 2)))
    assert f"**{median} s** (goal < 5 s: {verdict})" in table
    # slot 0: imports 3 + suggest 0.5 + parent run 0.25 named; the rest of the outside figure
    assert (
        f"| 0 | {ends[0] - 100:.1f} | 24.0 | {ends[0] - 124:.1f} | 4.5 | 3.0 | 0.5 | 0.2 |" in table
    )
    assert "| monai | 2.00 | 3.75 |" in table  # cumulative over the import groups
