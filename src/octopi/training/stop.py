"""Stop a training at the next step boundary when the scheduler says time is up.

Slurm warns a job before its time limit when asked (``sbatch --signal=TERM@N``: SIGTERM N
seconds early, see ``trial_resources.warning_seconds`` and docs/hpc-slurm.md) and sends SIGTERM
when it preempts a job. Inside :func:`stop_on_signals` such a signal only sets a flag; the
training loop checks it after every optimiser step (:func:`stop_requested`), writes a
checkpoint of that exact step and raises :class:`TrainingStopped`, so the retry (Snakemake's
``retries`` or Slurm's requeue) continues from that step, bit-exactly, instead of from the
last finished epoch. A second signal stops at once, without a checkpoint.

Why SIGTERM and not SIGUSR1: Slurm signals every process of the job step, and the executor's
job-step Snakemake dies of SIGUSR1 (Python's default action) before octopi could save, while it
treats SIGTERM as "let the running job finish". Both are handled here all the same.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator

# Exit status of a command stopped by :class:`TrainingStopped` (EX_TEMPFAIL: "try again").
STOPPED_EXIT_CODE = 75
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class TrainingStopped(Exception):  # noqa: N818 - reads as what happened
    """The training stopped on a signal; its checkpoint holds the last finished step."""


_requested: list[str] = []  # what asked for a stop (at most one reason)
_signals: list[str] = []  # the stop signals received


def stop_requested() -> str | None:
    """The signal that asked the running training to stop (None: no request)."""
    return _requested[0] if _requested else None


def request_stop(reason: str) -> None:
    """Ask the training to stop after its current step (what the signal handler does)."""
    if not _requested:
        _requested.append(reason)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[str, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` ask for a stop at the next step boundary (see the module
    docstring) instead of ending the process; the old handlers come back afterwards.

    Only the main thread can install signal handlers: elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if _signals:
            raise TrainingStopped(f"{name} again while stopping: stopped without a checkpoint")
        _signals.append(name)
        request_stop(name)
        print(
            f"{name} received (time limit near, or preempted): saving a checkpoint after the "
            "current training step, then stopping; a rerun continues from that step",
            file=sys.stderr,
            flush=True,
        )

    numbers = [getattr(signal, name) for name in signals]
    previous = {number: signal.signal(number, handler) for number in numbers}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
        _requested.clear()
        _signals.clear()


@contextlib.contextmanager
def stop_at(deadline: float | None, reason: str) -> Iterator[None]:
    """Within the block, ask for a stop (as a signal would) at ``deadline`` (``time.time()``
    seconds; None: never), e.g. a while before the job's time limit where no warning signal
    reaches the process (Slurm job arrays run the trial in the batch step, which
    ``--signal`` without ``B:`` does not signal)."""
    if deadline is None:
        yield
        return

    def fire() -> None:
        request_stop(reason)
        print(
            f"{reason}: saving a checkpoint after the current training step, then stopping; "
            "a rerun continues from that step",
            file=sys.stderr,
            flush=True,
        )

    timer = threading.Timer(max(0.0, deadline - time.time()), fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
