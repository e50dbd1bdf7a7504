"""The up-front Slurm check (how job states will be learnt) and the heartbeat of a running
study; the real cluster runs of both are in tests/slurm/test_slurm_status.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from octopi import cluster_check
from octopi.cluster_check import ClusterFacts, Partition, gather_facts, plan_status
from octopi.study_monitor import StudyMonitor, read_head_log, take_snapshot

PROFILE = "/site/profiles/slurm"


def facts(**changes) -> ClusterFacts:
    values = {
        "slurm_version": "22.05.8",
        "cluster_name": "c",
        "partitions": [Partition("gpu*", "up", "4", "gpu:a100:4", "2-00:00:00")],
        "accounting": False,
        "sacct_message": "Slurm accounting storage is disabled",
        "accounting_enforce": "none",
        "user_accounts": [],
        "min_job_age_seconds": 300,
        "plugin_version": "2.8.0",
    }
    return ClusterFacts(**(values | changes))


def test_without_accounting_squeue_is_chosen_and_no_account_asked_for() -> None:
    plan = plan_status(facts(), {}, PROFILE)
    assert plan.problem is None and plan.status_command == "squeue"
    assert plan.extra_args == ["--slurm-status-command", "squeue"]
    assert "sacct does not answer (Slurm accounting storage is disabled)" in plan.notes[0]
    assert "no Slurm account needed (no accounting)" in plan.notes[1]
    assert "MinJobAge 300 s ≥ 3 × slurm-init-seconds-before-status-checks 40 s" in plan.notes[0]


def test_with_accounting_the_executor_default_stays() -> None:
    plan = plan_status(facts(accounting=True, sacct_message=""), {}, PROFILE)
    assert (plan.problem, plan.status_command, plan.extra_args) == (None, "sacct", [])


@pytest.mark.parametrize(
    ("cluster", "profile", "expected"),
    [
        (
            {},
            {"slurm-status-command": "sacct"},
            "slurm-status-command in /site/profiles/slurm/config.yaml is sacct, but sacct "
            "does not answer (Slurm accounting storage is disabled): set it to squeue",
        ),
        (
            {"accounting": True, "min_job_age_seconds": 100},
            {"slurm-status-command": "squeue"},
            "is squeue, but MinJobAge 100 s < 3 × slurm-init-seconds-before-status-checks 40 s"
            ": set it to sacct",
        ),
        (
            {"min_job_age_seconds": 60},
            {},
            "no way to learn when jobs end: sacct does not answer",
        ),
        ({"plugin_version": None}, {}, "pip install snakemake-executor-plugin-slurm"),
    ],
    ids=["sacct-without-accounting", "squeue-short-min-job-age", "neither", "no-plugin"],
)
def test_a_setting_that_cannot_work_is_a_problem_naming_the_key(
    cluster: dict, profile: dict, expected: str
) -> None:
    plan = plan_status(facts(**cluster), profile, PROFILE)
    assert plan.problem is not None and expected in plan.problem, plan.problem
    assert plan.extra_args == []


def test_a_shorter_first_status_check_makes_squeue_usable() -> None:
    profile = {"slurm-init-seconds-before-status-checks": 20}
    plan = plan_status(facts(min_job_age_seconds=60), profile, PROFILE)
    assert plan.problem is None and plan.extra_args == ["--slurm-status-command", "squeue"]


FAKE_TOOLS = {
    "scontrol": "printf 'ClusterName = octopi-fake\\nMinJobAge = 1h\\nSLURM_VERSION = 23.11.1\\n"
    "AccountingStorageEnforce = associations\\n'",
    "sinfo": "printf 'gpu*|up|2|gpu:4|1-00:00:00\\ncpu|up|8|(null)|infinite\\n'",
    "squeue": "exit 0",
    "sbatch": "exit 0",
    "sacct": "exit 0",
    "sacctmgr": "printf '  lab-a \\n  lab-b\\n'",
}


def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **tools: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (FAKE_TOOLS | tools).items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(cluster_check, "_plugin_version", lambda: "2.8.0")


def test_facts_come_from_the_slurm_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_slurm(tmp_path, monkeypatch)
    found = gather_facts()
    assert (found.cluster_name, found.slurm_version) == ("octopi-fake", "23.11.1")
    assert found.min_job_age_seconds == 3600 and found.accounting
    assert found.partitions[0] == Partition("gpu*", "up", "2", "gpu:4", "1-00:00:00")
    assert found.user_accounts == ["lab-a", "lab-b"] and found.problems == []

    fake = "echo 'sacct: error: Slurm accounting storage is disabled' >&2; exit 1"
    (tmp_path / "bin" / "sacct").write_text(f"#!/bin/sh\n{fake}\n")
    found = gather_facts()
    assert not found.accounting
    assert found.sacct_message == "sacct: error: Slurm accounting storage is disabled"


def test_model_explore_stops_before_writing_or_submitting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_project
) -> None:
    from octopi.cli.explore_cmds import model_explore

    sbatch_calls = tmp_path / "sbatch-calls"
    fake_slurm(
        tmp_path,
        monkeypatch,
        sacct="echo 'Slurm accounting storage is disabled' >&2; exit 1",
        sbatch=f"echo called >> {sbatch_calls}",
    )
    profile = tmp_path / "profile"
    profile.mkdir()
    settings = {"executor": "slurm", "slurm-status-command": "sacct"}
    (profile / "config.yaml").write_text(yaml.safe_dump(settings))
    study = tmp_path / "study"
    args = ["--config", str(tiny_project.config_path), "--output", str(study)]
    result = CliRunner().invoke(model_explore, [*args, "--profile", str(profile)])
    assert result.exit_code == 1, result.output
    assert f"slurm-status-command in {profile}/config.yaml is sacct" in result.output
    assert "octopi check-cluster --profile" in result.output
    assert not study.exists() and not sbatch_calls.exists()


# --------------------------------------------------------------------------- heartbeat

HEAD_LOG = """
[Wed Dec  2 15:47:24 2026]
rule trial:
    input: split.json
    output: trials/{slot}/result.json
    log: logs/trial/{slot}.log
    jobid: {job}
    reason: Missing output files: trials/{slot}/result.json
    wildcards: slot={slot}
    resources: tmpdir=<TBD>, mem_mb=1000, runtime=10, gpu=1
Shell command: exec octopi explore-trial --study-dir . --slot {slot} > logs/trial/{slot}.log 2>&1
"""


def head_log(
    study: Path, jobs: dict[int, int], ended: list[int], failed: tuple[int, ...] = ()
) -> Path:
    """A head log as Snakemake writes it: trial jobs (job id → slot) submitted, some ended."""
    text = "".join(HEAD_LOG.format(job=job, slot=slot) for job, slot in jobs.items())
    for job in ended:
        text += f"[Wed Dec  2 15:48:04 2026]\nFinished jobid: {job} (Rule: trial)\n"
    for job in failed:
        text += (
            f"[Wed Dec  2 15:35:28 2026]\nError in rule trial:\n    message: SLURM-job '3' "
            f"failed, SLURM status is: 'FAILED'.\n    jobid: {job}\n    input: split.json\n"
        )
    path = study / ".snakemake/log/2026-12-02T154724.188197.snakemake.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_result(study: Path, slot: int, age_seconds: float) -> None:
    path = study / "trials" / str(slot) / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    written = time.time() - age_seconds
    os.utime(path, (written, written))


def test_the_head_log_says_which_trials_it_has_seen_end(tmp_path: Path) -> None:
    head_log(tmp_path, {2: 0, 6: 2, 5: 1, 7: 3}, ended=[2, 5], failed=(7,))
    view = read_head_log(tmp_path, since=0)
    assert view.trial_slots == {"2": 0, "6": 2, "5": 1, "7": 3}
    assert view.noticed_slots() == {0, 1, 3}  # a failed job's end is noticed too
    assert read_head_log(tmp_path, since=time.time() + 60).trial_slots == {}  # an older run


def test_the_heartbeat_counts_trials_and_warns_about_unnoticed_results(tmp_path: Path) -> None:
    study = tmp_path / "study"
    since = time.time() - 3600
    head_log(study, {2: 0, 3: 1, 4: 2}, ended=[2])
    write_result(study, 0, age_seconds=900)  # finished and noticed
    write_result(study, 1, age_seconds=700)  # finished, the head has not seen its job end
    write_result(study, 3, age_seconds=7200)  # finished before this run
    squeue = lambda: ["RUNNING", "PENDING"]  # noqa: E731
    snapshot = take_snapshot(study, 4, since, squeue)
    assert (snapshot.finished, snapshot.running, snapshot.queued) == (3, 1, 1)
    assert list(snapshot.unnoticed) == [1] and snapshot.unnoticed[1] >= 700

    lines: list[str] = []
    monitor = StudyMonitor(
        study, 4, heartbeat_seconds=60, stall_seconds=600, profile="slurm", since=since
    )
    monitor.slurm_states, monitor.echo = squeue, lines.append
    monitor.beat()
    assert "study alive: 3/4 trials finished, 1 running, 1 queued on Slurm" in lines[0]
    assert "no job end noticed yet" in lines[0]
    assert monitor.check_stalls()
    assert "WARNING: trial(s) 1 wrote their result 12 min ago" in lines[1]
    assert "slurm-status-command" in lines[1] and "check-cluster --profile slurm" in lines[1]
    assert not monitor.check_stalls()  # said once per trial


def test_the_monitor_thread_notices_job_ends_and_beats(tmp_path: Path) -> None:
    study = tmp_path / "study"
    lines: list[str] = []
    monitor = StudyMonitor(
        study, 1, heartbeat_seconds=0.3, stall_seconds=600, poll_seconds=0.05, echo=lines.append
    )
    with monitor:
        head_log(study, {2: 0}, ended=[])
        time.sleep(0.2)
        write_result(study, 0, age_seconds=0)
        head_log(study, {2: 0}, ended=[2])  # the head saw the job end
        deadline = time.monotonic() + 10
        while not any("last job end noticed" in line for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
    assert monitor.last_noticed is not None
    assert "1/1 trials finished" in lines[-1]
