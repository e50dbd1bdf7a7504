"""Kill a running study (Snakemake and the training trial, SIGKILL) and resume it; then grow it.

A rerun with --resume must finish the study without re-running finished trials (same
result.json, no new Optuna trial for their slots) and the killed trial must continue from its
last epoch checkpoint. Raising num_trials from 4 to 6 must then run slots 4 and 5 only and
select the best model again.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from workflow_helpers import OCTOPI, job_counts, tiny_config, write_study

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

NUM_EPOCHS = 3


def _epochs_done(trial_dir: Path) -> int:
    """Epochs finished according to epochs.csv (rewritten after each epoch's checkpoint)."""
    epochs = trial_dir / "epochs.csv"
    if not epochs.is_file():
        return 0
    return max(0, len(epochs.read_text().strip().splitlines()) - 1)


def _job_done(study: Path, slot: int) -> bool:
    """Whether Snakemake recorded slot ``slot``'s job as done (its metadata record, named by
    the URL-safe base64 of the output path). Trials run two at a time on the CPU, so a trial
    may have written result.json while its job is not over yet: a kill then leaves the job
    incomplete, and the rerun writes result.json again from the finished Optuna trial."""
    name = base64.urlsafe_b64encode(f"trials/{slot}/result.json".encode()).decode()
    return (study / ".snakemake" / "metadata" / name).is_file()


def _wait_for_kill_point(study: Path, process: subprocess.Popen, log: Path) -> tuple[set, int]:
    """Wait until one trial's job is done and another has checkpointed epoch >= 1 but not
    finished.

    Returns (slots whose jobs are done, slot in progress).
    """
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the study ended before it could be killed:\n{log.read_text()[-4000:]}")
        written = {int(p.parent.name) for p in study.glob("trials/*/result.json")}
        finished = {slot for slot in written if _job_done(study, slot)}
        running = [
            int(d.name)
            for d in study.glob("trials/*")
            if d.is_dir()
            and int(d.name) not in written
            and (d / "checkpoint.pt").is_file()
            and 1 <= _epochs_done(d) < NUM_EPOCHS
        ]
        if finished and running:
            return finished, running[0]
        time.sleep(0.1)
    pytest.fail(f"no kill point within 15 minutes:\n{log.read_text()[-4000:]}")


def _kill_everything(process: subprocess.Popen) -> None:
    """SIGKILL the model-explore/Snakemake process group and every trial process below it."""
    tree = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGKILL)
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait(timeout=60)
    psutil.wait_procs(tree, timeout=60)


def _slot_trials(study: Path) -> dict[int, list[str]]:
    """Slot → states of its Optuna trials, read from the study journal."""
    import optuna

    from octopi.search.storage import journal_storage

    summaries = optuna.get_all_study_summaries(journal_storage(study))
    trials = optuna.load_study(
        study_name=summaries[0].study_name, storage=journal_storage(study)
    ).get_trials(deepcopy=False)
    slots: dict[int, list[str]] = {}
    for trial in trials:
        slots.setdefault(int(trial.user_attrs["slot"]), []).append(trial.state.name)
    return slots


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [OCTOPI, "model-explore", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1200,
    )


def test_killed_study_resumes_and_grows(tmp_path: Path, tiny_project) -> None:
    config = tiny_config(
        tiny_project.config_path,
        tiny_project.voxel_size_angstrom,
        training={"num_epochs": NUM_EPOCHS},
        # No pruning: a pruned trial's result.json does not say where it resumed from.
        search={"num_trials": 4, "pruner": "none"},
    )
    study = write_study(tmp_path / "study", config)
    log = tmp_path / "first-run.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [OCTOPI, "model-explore", "--output", str(study)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole below
        )
    try:
        finished, killed_slot = _wait_for_kill_point(study, process, log)
        _kill_everything(process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    killed_epochs = _epochs_done(study / "trials" / str(killed_slot))
    assert not (study / "trials" / str(killed_slot) / "result.json").exists()
    mtimes = {slot: (study / f"trials/{slot}/result.json").stat().st_mtime for slot in finished}

    # A plain rerun stops at the stale lock and says how to continue.
    locked = _run("--output", str(study))
    assert locked.returncode != 0 and "--resume" in locked.stdout, locked.stdout[-3000:]

    resumed = _run("--output", str(study), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-6000:]
    for slot, mtime in mtimes.items():
        assert (study / f"trials/{slot}/result.json").stat().st_mtime == mtime, slot
    result = json.loads((study / f"trials/{killed_slot}/result.json").read_text())
    assert result["resumed_from_epoch"] >= killed_epochs >= 1
    assert result["epochs_completed"] == NUM_EPOCHS
    assert "resumed after epoch" in (study / f"logs/trial/{killed_slot}.log").read_text()
    slots = _slot_trials(study)
    assert sorted(slots) == [0, 1, 2, 3]
    for slot in finished:
        assert len(slots[slot]) == 1, slots  # never re-run, no second Optuna trial
    assert slots[killed_slot][-1] in ("COMPLETE", "PRUNED")
    assert sum(s in ("COMPLETE", "PRUNED") for s in slots[killed_slot]) == 1, slots
    best = study / "best" / "summary.json"
    assert best.is_file() and (study / "report.html").is_file()

    # More trials: only slots 4 and 5 run; best/ is selected again.
    mtimes = {p: p.stat().st_mtime for p in study.glob("trials/*/result.json")}
    best_mtime = best.stat().st_mtime
    grown = _run("--output", str(study), "--num-trials", "6")
    assert grown.returncode == 0, grown.stdout[-6000:]
    assert job_counts(grown.stdout)["trial"] == 2
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes
    assert sorted(_slot_trials(study)) == [0, 1, 2, 3, 4, 5]
    assert (study / "trials/5/result.json").is_file()
    assert best.stat().st_mtime > best_mtime
    assert json.loads(best.read_text())["trial_counts"]
