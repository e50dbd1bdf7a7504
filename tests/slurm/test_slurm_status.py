"""The shipped profiles/slurm on a cluster without accounting (the CI cluster has no slurmdbd,
so ``sacct`` exists but answers nothing): the study must not wait forever for jobs that ended.

``model-explore`` checks up front how job states can be learnt, picks ``squeue`` here and says
so in one line; a profile whose status command cannot work stops before anything is submitted.
The running study prints a heartbeat. Cluster and plugin: .ci/slurm/run_tests.sh.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from test_slurm_study import _explore, _tail  # noqa: E402
from workflow_helpers import OCTOPI, tiny_config, write_study  # noqa: E402

from octopi.study_monitor import read_head_log  # noqa: E402
from octopi.workflow_runner import workflow_root  # noqa: E402

SHIPPED = workflow_root() / "profiles" / "slurm"


def _tiny_study(root: Path, project, num_trials: int) -> Path:
    config = tiny_config(
        project.config_path,
        project.voxel_size_angstrom,
        search={"num_trials": num_trials, "pruner": "none"},
        trial_resources={"gpu": 1, "threads": 1, "mem_mb": 1000, "runtime_minutes": 10},
        monitor={"heartbeat_minutes": 0.25},  # study settings, not the profile's
    )
    return write_study(root / "study", config)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_shipped_profile_finishes_a_study_without_accounting(
    tmp_path: Path, tiny_project, slurm_cluster, slurm_run
) -> None:
    study = _tiny_study(tmp_path, tiny_project, num_trials=3)
    log = tmp_path / "study.log"
    start = time.monotonic()
    head = slurm_run.start(_explore(study, SHIPPED), log)
    # When each trial's result appeared, and when the head logged that its job ended.
    written: dict[int, float] = {}
    noticed: dict[int, float] = {}
    since = time.time() - 1
    while head.poll() is None and time.monotonic() - start < 540:
        ended = read_head_log(study, since).noticed_slots()
        for slot in range(3):
            result = study / f"trials/{slot}/result.json"
            if result.is_file() and slot not in written:
                written[slot] = result.stat().st_mtime
            if slot in ended:
                noticed.setdefault(slot, time.time())
        time.sleep(0.5)
    assert head.wait(timeout=60) == 0, _tail(log)
    output = log.read_text()
    assert "cluster: job status from squeue: sacct does not answer" in output
    assert "cluster: no Slurm account needed (no accounting)" in output
    assert "study alive:" in output and "trials finished" in output
    assert "WARNING" not in output
    assert sorted(written) == [0, 1, 2]
    delays = [noticed[slot] - written[slot] for slot in sorted(written)]
    assert max(delays) < 180, delays
    print(
        f"\n3-trial study, shipped profile (status from squeue, first check after 40 s): "
        f"{time.monotonic() - start:.0f} s; trial end -> head noticed: "
        + ", ".join(f"{d:.0f} s" for d in delays)
    )


@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_a_status_command_that_cannot_work_stops_the_study_before_any_job(
    tmp_path: Path, tiny_project, slurm_cluster, slurm_run
) -> None:
    profile = tmp_path / "profile"
    shutil.copytree(SHIPPED, profile)
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    settings["slurm-status-command"] = "sacct"
    (profile / "config.yaml").write_text(yaml.safe_dump(settings))
    study = _tiny_study(tmp_path, tiny_project, num_trials=3)
    start = time.monotonic()
    head = slurm_run.start(_explore(study, profile), tmp_path / "study.log")
    assert head.wait(timeout=60) == 1
    seconds = time.monotonic() - start
    output = (tmp_path / "study.log").read_text()
    assert f"slurm-status-command in {profile}/config.yaml is sacct, but sacct does not" in output
    assert "set it to squeue" in output
    assert not slurm_run.jobs(study)  # nothing was submitted
    assert sorted(p.name for p in study.iterdir()) == ["config.yaml", "search_space.yaml"]
    print(f"\nrefused in {seconds:.1f} s")

    check = slurm_run.start([OCTOPI, "check-cluster", "--profile", str(profile)], tmp_path / "c")
    assert check.wait(timeout=60) == 1
    report = (tmp_path / "c").read_text()
    for line in ("partitions (* default):", "debug*: up", "gres gpu:2", "accounting: off"):
        assert line in report, report
    assert "MinJobAge: 600 s" in report and "snakemake-executor-plugin-slurm 2.8" in report
