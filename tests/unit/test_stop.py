"""Stopping a training on a signal (Slurm's warning before the time limit, preemption): a
checkpoint of the exact step, and a resume that ends bit-identical to an unstopped run."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_trainer import (  # noqa: E402
    SETTINGS,
    TINY_ARCH,
    one_torch_thread,  # noqa: F401 - the module's autouse fixture
    states_equal,
    tiny_data,
    tiny_training,
)

from octopi.training import loop as loop_module  # noqa: E402
from octopi.training.stop import (  # noqa: E402
    TrainingStopped,
    request_stop,
    stop_at,
    stop_on_signals,
    stop_requested,
)
from octopi.training.trainer import train_model  # noqa: E402


def _data(project):
    runs = project.run_names
    return tiny_data(project, train_run_ids=runs[:3], validate_run_ids=runs[3:])


def _stop_at_check(monkeypatch: pytest.MonkeyPatch, stop_at: int) -> list[int]:
    """Make the loop see a stop request at its ``stop_at``-th check (one check per step,
    one after each epoch); returns the list the checks are counted in."""
    calls: list[int] = []

    def fake_stop_requested() -> str | None:
        calls.append(1)
        return "SIGTERM" if len(calls) >= stop_at else None

    monkeypatch.setattr(loop_module, "stop_requested", fake_stop_requested)
    return calls


@pytest.mark.parametrize("stop_at", [5, 3], ids=["inside-epoch-2", "after-last-step-of-epoch-1"])
def test_a_run_stopped_mid_epoch_resumes_bit_exactly(
    tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_at: int
) -> None:
    data, training = _data(tiny_project), tiny_training(num_epochs=2)
    reference = train_model(
        data, training, TINY_ARCH, tmp_path / "reference", tracking_uri="none", **SETTINGS
    )
    # 3 training runs: 3 steps per epoch; checks: steps 1-3, after epoch 1, steps 1-3, ...
    assert reference.attempts == [
        {"start": {"epoch": 0, "step": 0}, "end": {"epoch": 2, "step": 0}, "stopped_by": None}
    ]

    output = tmp_path / "stopped"
    _stop_at_check(monkeypatch, stop_at)
    with pytest.raises(TrainingStopped, match="stopped on SIGTERM"):
        train_model(data, training, TINY_ARCH, output, tracking_uri="none", **SETTINGS)
    checkpoint = torch.load(output / "checkpoint.pt", weights_only=True)
    where = {5: {"epoch": 1, "step": 1}, 3: {"epoch": 0, "step": 3}}[stop_at]
    assert checkpoint["epoch"] == where["epoch"] and not checkpoint["finished"]
    assert checkpoint["partial_epoch"]["steps_done"] == where["step"]
    assert not (output / "result.json").exists()

    monkeypatch.undo()
    result = train_model(data, training, TINY_ARCH, output, tracking_uri="none", **SETTINGS)
    assert result.epochs_completed == 2
    assert result.attempts == [
        {"start": {"epoch": 0, "step": 0}, "end": where, "stopped_by": "SIGTERM"},
        {"start": where, "end": {"epoch": 2, "step": 0}, "stopped_by": None},
    ]
    ours = torch.load(output / "checkpoint.pt", weights_only=True)
    theirs = torch.load(reference.output_dir / "checkpoint.pt", weights_only=True)
    assert states_equal(ours["model"], theirs["model"])
    assert states_equal(ours["ema"]["module"], theirs["ema"]["module"])
    assert [r["train_loss"] for r in ours["history"]] == [
        r["train_loss"] for r in theirs["history"]
    ]
    assert ours["partial_epoch"] is None


def test_a_stop_during_validation_keeps_the_epoch_checkpoint(
    tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, training = _data(tiny_project), tiny_training(num_epochs=2)
    _stop_at_check(monkeypatch, 4)  # the check after epoch 1 (its validation)
    with pytest.raises(TrainingStopped, match="after epoch 1, step 0"):
        train_model(data, training, TINY_ARCH, tmp_path / "run", tracking_uri="none", **SETTINGS)
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["partial_epoch"] is None
    assert len(checkpoint["history"]) == 1


def test_signals_only_ask_for_a_stop_inside_the_block() -> None:
    with stop_on_signals():
        assert stop_requested() is None
        os.kill(os.getpid(), signal.SIGTERM)  # handled: the process lives on
        assert stop_requested() == "SIGTERM"
    assert stop_requested() is None  # cleared on leaving the block


def test_a_second_signal_stops_at_once_and_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped, match="SIGUSR1 again"), stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGUSR1)
    assert signal.getsignal(signal.SIGTERM) is before
    assert stop_requested() is None


def test_a_timer_asks_for_a_stop_and_a_later_signal_is_not_a_second_one() -> None:
    with stop_on_signals(), stop_at(time.time() + 0.05, "Slurm time limit in 30 s"):
        deadline = time.monotonic() + 5
        while stop_requested() is None:
            assert time.monotonic() < deadline, "the timer never fired"
            time.sleep(0.01)
        assert stop_requested() == "Slurm time limit in 30 s"
        os.kill(os.getpid(), signal.SIGTERM)  # Slurm's warning after the timer: no escalation
        assert stop_requested() == "Slurm time limit in 30 s"
    with stop_on_signals(), stop_at(None, "never"):
        request_stop("by hand")
        assert stop_requested() == "by hand"
    assert stop_requested() is None
