"""A tiny study through profiles/slurm on the real single-node test cluster, and its faults.

- every trial is one sbatch job with one of the 2 fake GPUs, at most 2 run at once, and the
  study ends with the same outputs as a local run;
- a trial job cancelled mid-training (as by a node failure or preemption) is retried and
  resumes from its last epoch checkpoint; nothing else runs again;
- after the Snakemake head is SIGKILLed, one command (`model-explore --resume`) cancels the
  jobs it left, unlocks the study and finishes it without redoing finished trials.

Trials are tiny (16³ crops, a few epochs on 4 runs of 32×48×48 voxels); they take ~20-50 s
as Slurm jobs on 2 cores, mostly Python start-up. Cluster and plugin: .ci/slurm/run_tests.sh.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from octopi.workflow_runner import snakemake_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from workflow_helpers import OCTOPI, tiny_config, write_study  # noqa: E402


def on_slurm(test):
    """Marks of the tests that need the cluster (the last tests of this file need none)."""
    for mark in (pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(600)):
        test = mark(test)
    return test


STUDY_TIMEOUT = 480


def _study(root: Path, project, num_trials: int, num_epochs: int, retries: int) -> Path:
    config = tiny_config(
        project.config_path,
        project.voxel_size_angstrom,
        training={"num_epochs": num_epochs},
        # No pruning: a pruned trial's result.json does not say where it resumed from.
        search={"num_trials": num_trials, "pruner": "none"},
        trial_resources={
            "gpu": 1,
            "threads": 1,
            "mem_mb": 1000,
            "runtime_minutes": 10,
            "retries": retries,
        },
    )
    return write_study(root / "study", config)


def _explore(study: Path, profile: Path, *extra: str) -> list[str]:
    return [OCTOPI, "model-explore", "--output", str(study), "--profile", str(profile), *extra]


def _tail(log: Path | str, chars: int = 5000) -> str:
    return (log.read_text() if isinstance(log, Path) else log)[-chars:]


def _results(study: Path) -> dict[int, dict]:
    return {
        int(path.parent.name): json.loads(path.read_text())
        for path in study.glob("trials/*/result.json")
    }


def _epochs_done(study: Path, slot: int) -> int:
    """Epochs finished by the slot's trial (epochs.csv is rewritten after each checkpoint)."""
    epochs = study / "trials" / str(slot) / "epochs.csv"
    if not epochs.is_file():
        return 0
    return max(0, len(epochs.read_text().strip().splitlines()) - 1)


def _running_trial(slurm_run, study: Path, max_epochs: int) -> tuple[int, str, int] | None:
    """(slot, Slurm job, epochs done) of a trial that runs with 1..max_epochs epochs done."""
    for record in slurm_run.jobs(study):
        if record.state != "RUNNING" or not record.comment.startswith("rule_trial_"):
            continue
        slot = int(record.comment.rsplit("_", 1)[1])
        done = _epochs_done(study, slot)
        if 1 <= done <= max_epochs and not (study / f"trials/{slot}/result.json").exists():
            return slot, record.job_id, done
    return None


def _wait_for(condition, head: subprocess.Popen, log: Path, what: str, timeout: float = 400):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"the study ended before {what}:\n{_tail(log)}")
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"no {what} within {timeout:.0f} s:\n{_tail(log)}")


def _slot_trials(study: Path) -> dict[int, list[str]]:
    """Slot → states of its Optuna trials, read from the study journal."""
    import optuna

    from octopi.search.storage import journal_storage

    storage = journal_storage(study)
    name = optuna.get_all_study_summaries(storage)[0].study_name
    slots: dict[int, list[str]] = {}
    for trial in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
        slots.setdefault(int(trial.user_attrs["slot"]), []).append(trial.state.name)
    return slots


def _trial_jobs(slurm_run, study: Path) -> dict[int, list]:
    """Slot → its Slurm jobs (oldest first)."""
    jobs: dict[int, list] = {}
    for record in sorted(slurm_run.jobs(study), key=lambda r: int(r.job_id)):
        if record.comment.startswith("rule_trial_wildcards_"):
            jobs.setdefault(int(record.comment.rsplit("_", 1)[1]), []).append(record)
    return jobs


def _max_concurrent(intervals: list[tuple[float, float]]) -> int:
    return max(sum(s <= start < e for s, e in intervals) for start, _ in intervals)


@on_slurm
def test_each_trial_is_a_slurm_job_on_its_own_gpu(
    tmp_path: Path, tiny_project, slurm_profile: Path, slurm_run
) -> None:
    study = _study(tmp_path, tiny_project, num_trials=4, num_epochs=2, retries=0)
    log = tmp_path / "study.log"
    start = time.monotonic()
    head = slurm_run.start(_explore(study, slurm_profile), log)
    assert head.wait(timeout=STUDY_TIMEOUT) == 0, _tail(log)
    wall = time.monotonic() - start

    results = _results(study)
    assert sorted(results) == [0, 1, 2, 3]
    jobs = _trial_jobs(slurm_run, study)
    assert sorted(jobs) == [0, 1, 2, 3] and all(len(j) == 1 for j in jobs.values()), jobs
    # Light rules (discover_runs, split_runs, select_best, tables) ran in the head process.
    assert {r.comment for r in slurm_run.jobs(study)} == {
        f"rule_trial_wildcards_{slot}" for slot in range(4)
    }
    overheads, waits, intervals = [], [], []
    for slot, result in results.items():
        (job,) = jobs[slot]
        placement = result["placement"]
        assert result["state"] in ("COMPLETE", "PRUNED"), result
        assert job.state == "COMPLETED" and "gpu:1" in job.tres_per_job, job
        assert placement["slurm_job_id"] == job.job_id, (placement, job)
        assert placement["cuda_visible_devices"] in ("0", "1"), placement
        slurm_log = study / ".snakemake/slurm_logs/rule_trial" / str(slot) / f"{job.job_id}.log"
        assert slurm_log.is_file(), slurm_log
        overheads.append(placement["process_started"] - job.start)
        waits.append(job.start - job.submit)
        intervals.append((placement["process_started"], placement["finished"]))
    # 2 fake GPUs: 2 trials at once, never more, and never 2 on one GPU.
    assert _max_concurrent(intervals) == 2, intervals
    for a, b in ((a, b) for a in results for b in results if a < b):
        pa, pb = results[a]["placement"], results[b]["placement"]
        if pa["process_started"] < pb["finished"] and pb["process_started"] < pa["finished"]:
            assert pa["cuda_visible_devices"] != pb["cuda_visible_devices"], (pa, pb)

    # Outputs as with the local profile (tests/workflow/test_workflow.py).
    for name in ("model_config.yaml", "best_model_weights.pth", "summary.json"):
        assert (study / "best" / name).is_file(), name
    assert (study / "trials.csv").is_file() and list((study / "plots").glob("*.png"))
    assert (study / "optuna.journal").is_file() and (study / "mlflow.db").is_file()
    report = (study / "report.html").read_text()
    assert "trials.html" in report and "best.html" in report
    for slot in results:
        assert (study / f"trials/{slot}/epochs.csv").is_file()
        assert (study / f"logs/trial/{slot}.log").is_file()
    print(
        f"\n4-trial study under the slurm profile: {wall:.1f} s; sbatch -> job start "
        f"{min(waits):.0f} s (first jobs, 1 s resolution); job start -> trial process "
        f"{min(overheads):.1f}-{max(overheads):.1f} s"
    )


@on_slurm
def test_a_cancelled_trial_job_is_retried_from_its_checkpoint(
    tmp_path: Path, tiny_project, slurm_profile: Path, slurm_run, monkeypatch
) -> None:
    epochs = 4
    study = _study(tmp_path, tiny_project, num_trials=2, num_epochs=epochs, retries=1)
    log = tmp_path / "study.log"
    # Snakemake itself (no report) with the environment model-explore gives it: octopi on PATH.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    args = snakemake_args(study, profile=slurm_profile)
    head = slurm_run.start([sys.executable, "-m", "snakemake", *args], log)

    slot, job_id, done = _wait_for(
        lambda: _running_trial(slurm_run, study, epochs - 1), head, log, "a trial with a checkpoint"
    )
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    assert head.wait(timeout=STUDY_TIMEOUT) == 0, _tail(log)

    result = _results(study)[slot]
    assert result["resumed_from_epoch"] >= done >= 1, result
    assert result["epochs_completed"] == epochs
    assert result["placement"]["slurm_job_id"] != job_id
    jobs = _trial_jobs(slurm_run, study)
    other = 1 - slot
    assert [(j.job_id, j.state) for j in jobs[slot]] == [
        (job_id, "CANCELLED"),
        (result["placement"]["slurm_job_id"], "COMPLETED"),
    ], jobs
    assert [j.state for j in jobs[other]] == ["COMPLETED"], jobs  # ran once
    trials = _slot_trials(study)
    assert trials[other] == ["COMPLETE"], trials
    assert trials[slot][-1] == "COMPLETE" and trials[slot].count("COMPLETE") == 1, trials
    assert "resumed after epoch" in (study / f"logs/trial/{slot}.log").read_text()
    assert (study / "best" / "summary.json").is_file()


@on_slurm
def test_a_killed_head_is_recovered_by_one_command(
    tmp_path: Path, tiny_project, slurm_profile: Path, slurm_run
) -> None:
    # Kill while the running trial has >= 18 epochs left, so that it still runs when the
    # recovery looks for it (with fewer, a quiet machine finished it in between).
    epochs = 20
    study = _study(tmp_path, tiny_project, num_trials=3, num_epochs=epochs, retries=0)
    log = tmp_path / "first-run.log"
    head = slurm_run.start(_explore(study, slurm_profile), log)

    def kill_point():
        running = _running_trial(slurm_run, study, max_epochs=2)
        return running if running and _results(study) else None

    slot, job_id, done = _wait_for(kill_point, head, log, "a finished and a running trial")
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=30)

    # The head is gone; its Slurm jobs are not, and it left its lock and incomplete markers.
    assert any(r.job_id == job_id and r.state == "RUNNING" for r in slurm_run.jobs(study))
    assert list((study / ".snakemake/locks").iterdir())
    assert [p for p in (study / ".snakemake/incomplete").rglob("*") if p.is_file()]
    finished = {s: study / f"trials/{s}/result.json" for s in _results(study)}
    mtimes = {s: path.stat().st_mtime_ns for s, path in finished.items()}

    recovery = subprocess.run(
        _explore(study, slurm_profile, "--resume"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=STUDY_TIMEOUT,
    )
    assert recovery.returncode == 0, _tail(recovery.stdout)
    assert f"cancelled Slurm jobs left by the interrupted run: {job_id}" in recovery.stdout
    assert [r.state for r in slurm_run.jobs(study) if r.job_id == job_id] == ["CANCELLED"]
    assert not [r for r in slurm_run.jobs(study) if r.state not in slurm_run.ended_states]

    results = _results(study)
    assert sorted(results) == [0, 1, 2]
    assert {s: path.stat().st_mtime_ns for s, path in finished.items()} == mtimes
    assert results[slot]["resumed_from_epoch"] >= done >= 1, results[slot]
    trials = _slot_trials(study)
    for s in finished:
        assert trials[s] == ["COMPLETE"], trials  # never run again
    assert trials[slot].count("COMPLETE") == 1 and trials[slot][-1] == "COMPLETE", trials
    assert (study / "best" / "summary.json").is_file() and (study / "report.html").is_file()


# --------------------------------------------------------------------------- no cluster needed


def test_install_profile_keeps_an_edited_copy(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from octopi.cli.explore_cmds import _resolve_profile, install_profile
    from octopi.snakemake_profiles import PROFILE_MANIFEST
    from octopi.workflow_runner import workflow_root

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    packaged = workflow_root() / "profiles" / "slurm"
    assert _resolve_profile("slurm") == (str(packaged), "slurm")  # nothing installed yet
    runner = CliRunner()

    first = runner.invoke(install_profile, [])
    copy = tmp_path / "xdg" / "snakemake" / "slurm"
    assert first.exit_code == 0 and f"installed in {copy}" in first.output, first.output
    assert (copy / "config.yaml").read_text() == (packaged / "config.yaml").read_text()
    assert (copy / PROFILE_MANIFEST).is_file()
    assert _resolve_profile("slurm") == (str(copy), "slurm")  # the user's copy wins
    assert "up to date" in runner.invoke(install_profile, []).output

    # An unedited copy of an older octopi is updated.
    (copy / "config.yaml").write_text("executor: slurm\n")
    manifest = json.loads((copy / PROFILE_MANIFEST).read_text())
    manifest["files"]["config.yaml"] = hashlib.sha256(b"executor: slurm\n").hexdigest()
    (copy / PROFILE_MANIFEST).write_text(json.dumps(manifest))
    updated = runner.invoke(install_profile, [])
    assert updated.exit_code == 0 and "updated" in updated.output, updated.output
    assert (copy / "config.yaml").read_text() == (packaged / "config.yaml").read_text()

    # An edited copy is refused, then replaced with --force (the edit kept in a backup).
    edited = (packaged / "config.yaml").read_text() + "  slurm_account: mine\n"
    (copy / "config.yaml").write_text(edited)
    refused = runner.invoke(install_profile, [])
    assert refused.exit_code == 1 and "diff -ru" in refused.output, refused.output
    assert (copy / "config.yaml").read_text() == edited
    forced = runner.invoke(install_profile, ["--force"])
    assert forced.exit_code == 0 and "replaced" in forced.output, forced.output
    (backup,) = (tmp_path / "xdg" / "snakemake").glob("slurm.bak-*")
    assert (backup / "config.yaml").read_text() == edited

    other = runner.invoke(install_profile, ["--name", "gpu", "--dest", str(tmp_path / "p")])
    assert other.exit_code == 0 and (tmp_path / "p" / "gpu" / "config.yaml").is_file()


def test_running_head_is_this_host_and_alive(tmp_path: Path) -> None:
    import socket

    import psutil

    from octopi.workflow_runner import HEAD_RECORD, running_head

    record = tmp_path / HEAD_RECORD
    record.parent.mkdir(parents=True)
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    record.write_text(json.dumps({**me, "started": psutil.Process().create_time()}))
    assert running_head(tmp_path)["checked"] is True
    record.write_text(json.dumps({**me, "started": 1.0}))  # the PID was reused
    assert running_head(tmp_path) is None
    record.write_text(json.dumps({**me, "host": "elsewhere", "started": 1.0}))
    assert running_head(tmp_path)["checked"] is False
    record.unlink()
    assert running_head(tmp_path) is None


FAKE_SQUEUE = """#!/bin/sh
# squeue --me --noheader --format=%i|%T|%Z|%k : the jobs in $JOBS not yet cancelled
grep -v -x -F -f "$CANCELLED" "$JOBS" 2>/dev/null || cat "$JOBS"
"""
FAKE_SCANCEL = """#!/bin/sh
for id in "$@"; do grep "^$id|" "$JOBS" >> "$CANCELLED"; done
"""


def test_orphans_are_the_study_jobs_and_are_cancelled(tmp_path: Path, monkeypatch) -> None:
    from octopi.slurm_jobs import cancel_study_jobs, study_slurm_jobs

    study, other = tmp_path / "study", tmp_path / "other"
    study.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("squeue", FAKE_SQUEUE), ("scancel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    jobs = tmp_path / "jobs"
    jobs.write_text(
        f"11|RUNNING|{study}|rule_trial_wildcards_0\n"
        f"12|PENDING|{study}|rule_trial_wildcards_1\n"
        f"13|RUNNING|{other}|rule_trial_wildcards_0\n"  # another study
        f"14|RUNNING|{study}|(null)\n"  # not a Snakemake job
        f"15|COMPLETED|{study}|rule_trial_wildcards_2\n"
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("JOBS", str(jobs))
    monkeypatch.setenv("CANCELLED", str(tmp_path / "cancelled"))
    (tmp_path / "cancelled").write_text("")

    assert [j.job_id for j in study_slurm_jobs(study)] == ["11", "12"]
    cancelled = cancel_study_jobs(study, timeout_seconds=10, poll_seconds=0.1)
    assert [(j.job_id, j.comment) for j in cancelled] == [
        ("11", "rule_trial_wildcards_0"),
        ("12", "rule_trial_wildcards_1"),
    ]
    assert study_slurm_jobs(study) == []
    assert [j.job_id for j in study_slurm_jobs(other)] == ["13"]
