"""A trial longer than its Slurm time limit, on the real test cluster: Slurm warns the job
(``--signal=TERM@N`` from ``trial_resources.warning_seconds``), the trial saves a checkpoint of
its current step and exits, Snakemake's retry continues from that step, and the trial ends
with every epoch trained once: the attempts join up step for step.

Cluster and plugin: .ci/slurm/run_tests.sh (see tests/slurm/conftest.py).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from test_slurm_study import _explore, _tail, _trial_jobs  # noqa: E402
from workflow_helpers import tiny_config, write_study  # noqa: E402

# Slurm's limits are whole minutes and it sends the warning up to 60 s before the time asked:
# with 2 minutes and a 30 s warning each job gets the warning 30-90 s after it started. The
# training needs ~130 s on the 2-core test machine (0.4 s an epoch), so never fits into one.
RUNTIME_MINUTES = 2
WARNING_SECONDS = 30
STOPPED_BY_TIMER = f"Slurm time limit in {WARNING_SECONDS} s"


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_trial_longer_than_its_time_limit_continues_step_for_step(
    tmp_path: Path, tiny_project, slurm_profile: Path, slurm_run
) -> None:
    epochs = 320
    config = tiny_config(
        tiny_project.config_path,
        tiny_project.voxel_size_angstrom,
        training={"num_epochs": epochs, "val_interval": 80},
        search={"num_trials": 1, "pruner": "none"},
        trial_resources={
            "gpu": 1,
            "threads": 1,
            "mem_mb": 1000,
            "runtime_minutes": RUNTIME_MINUTES,
            "warning_seconds": WARNING_SECONDS,
            "retries": 6,
        },
    )
    study = write_study(tmp_path / "study", config)
    log = tmp_path / "study.log"
    start, submitted_after = time.monotonic(), time.time() - 1
    head = slurm_run.start(_explore(study, slurm_profile), log)
    assert head.wait(timeout=840) == 0, _tail(log)
    wall = time.monotonic() - start

    result = json.loads((study / "trials/0/result.json").read_text())
    attempts = result["training"]["attempts"]
    assert len(attempts) >= 2, attempts  # the training did not fit into one job
    assert attempts[0]["start"] == {"epoch": 0, "step": 0}, attempts
    assert attempts[-1]["end"] == {"epoch": epochs, "step": 0}, attempts
    for before, after in zip(attempts, attempts[1:], strict=False):
        assert after["start"] == before["end"], attempts  # no step trained twice or skipped
        # Slurm's warning signal, or the trial's own timer where it comes first
        assert before["stopped_by"] in ("SIGTERM", STOPPED_BY_TIMER), attempts
    assert attempts[-1]["stopped_by"] is None
    assert result["epochs_completed"] == epochs
    rows = (study / "trials/0/epochs.csv").read_text().strip().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(1, epochs + 1))

    jobs = [j for j in _trial_jobs(slurm_run, study)[0] if j.submit >= submitted_after]
    assert len(jobs) == len(attempts), (jobs, attempts)  # one Slurm job per attempt
    # each stopped job exited (status 75) before its limit: FAILED, not TIMEOUT
    assert [j.state for j in jobs[:-1]] == ["FAILED"] * (len(jobs) - 1), jobs
    assert jobs[-1].state == "COMPLETED", jobs
    for job in jobs[:-1]:  # the trial stopped on purpose (status 75), it did not crash
        slurm_log = study / f".snakemake/slurm_logs/rule_trial/0/{job.job_id}.log"
        assert "returned non-zero exit status 75" in slurm_log.read_text(), job
    print(
        f"\n{epochs} epochs in {len(jobs)} Slurm jobs of {RUNTIME_MINUTES} min "
        f"(warning {WARNING_SECONDS} s): {wall:.0f} s; attempts "
        + ", ".join(f"{a['start']['epoch']}.{a['start']['step']}" for a in attempts)
        + "; stopped by "
        + ", ".join(str(a["stopped_by"]) for a in attempts[:-1])
    )
