"""Trials submitted as one Slurm job array (``slurm-array-jobs: trial`` in the profile): a
6-trial study on the real test cluster ends as with one sbatch per trial, with every trial an
array task of one array job. Cluster and plugin: .ci/slurm/run_tests.sh."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from test_slurm_study import _explore, _tail  # noqa: E402
from workflow_helpers import tiny_config, write_study  # noqa: E402


def _array_tasks(folder: Path) -> list[tuple[str, str, str, str]]:
    """(array job id, task id, state, comment) of this user's jobs under ``folder``."""
    out = subprocess.run(
        ["squeue", "--me", "--states=all", "--noheader", "--format=%F|%K|%T|%k|%Z"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines()]
    return [tuple(r[:4]) for r in rows if len(r) == 5 and r[4].startswith(str(folder))]


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_six_trials_run_as_one_job_array(
    tmp_path: Path, tiny_project, slurm_profile: Path, slurm_run
) -> None:
    profile = tmp_path / "profile"
    profile.mkdir()
    settings = yaml.safe_load((slurm_profile / "config.yaml").read_text())
    settings["slurm-array-jobs"] = "trial"
    (profile / "config.yaml").write_text(yaml.safe_dump(settings))
    config = tiny_config(
        tiny_project.config_path,
        tiny_project.voxel_size_angstrom,
        search={"num_trials": 6, "pruner": "none"},
        trial_resources={"gpu": 1, "threads": 1, "mem_mb": 1000, "runtime_minutes": 10},
    )
    study = write_study(tmp_path / "study", config)
    log = tmp_path / "study.log"
    start = time.monotonic()
    head = slurm_run.start(_explore(study, profile), log)
    assert head.wait(timeout=540) == 0, _tail(log)
    wall = time.monotonic() - start

    results = {
        int(p.parent.name): json.loads(p.read_text()) for p in study.glob("trials/*/result.json")
    }
    assert sorted(results) == list(range(6))
    assert all(r["state"] == "COMPLETE" for r in results.values()), results
    tasks = _array_tasks(study)
    arrays = {array for array, task, _, _ in tasks if task not in ("N/A", "")}
    assert len(arrays) == 1, tasks  # one sbatch for the six trials
    assert sorted(task for _, task, _, _ in tasks) == [str(i) for i in range(1, 7)], tasks
    assert {state for _, _, state, _ in tasks} == {"COMPLETED"}, tasks
    job_ids = {r["placement"]["slurm_job_id"] for r in results.values()}
    assert len(job_ids) == 6, job_ids  # each task is a job of its own
    assert (study / "best" / "summary.json").is_file()
    print(f"\n6-trial study as one job array: {wall:.0f} s")
