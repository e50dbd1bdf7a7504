"""A heartbeat of a running cluster study, printed by its head (``octopi model-explore``).

The Snakemake head writes what it sees to ``.snakemake/log/<start time>.snakemake.log``: a
``rule trial:`` block with ``jobid: N`` and ``wildcards: slot=S`` when it submits a trial,
``Finished jobid: N (Rule: trial)`` (or ``Error in rule trial:``) once its job status check
has seen the job end. (The ``.snakemake/incomplete`` marks do not tell: on a shared
filesystem the job's own Snakemake removes them.) So a trial whose ``result.json`` was written
during this run while the head has not logged its end is one the head has not noticed; when
that lasts, its job status checks get no answer (typically ``sacct`` on a cluster without
accounting). :class:`StudyMonitor` reads the log and the trial results from a thread: every
``heartbeat_seconds`` it prints one line (trials finished / running / queued on Slurm, the time
since the head last noticed a job end), and it warns, naming the likely cause, once trial
results wait longer than ``stall_seconds``.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HEAD_LOGS = Path(".snakemake") / "log"
_SUBMITTED = re.compile(
    r"^rule trial:\n(?:[ \t]+.*\n)*?[ \t]+jobid: (\d+)\n"
    r"(?:[ \t]+.*\n)*?[ \t]+wildcards: slot=(\d+)",
    re.MULTILINE,
)
_ENDED = re.compile(
    r"^(?:Finished jobid: (\d+) \(Rule: \w+\)"
    r"|Error in rule \w+:\n(?:[ \t]+.*\n)*?[ \t]+jobid: (\d+))",
    re.MULTILINE,
)


@dataclass(frozen=True)
class HeadView:
    """What the head has logged since ``since``: slot of each submitted trial job, and the
    job ids it has seen end (finished or failed, any rule)."""

    trial_slots: dict[str, int]
    ended: set[str]

    def noticed_slots(self) -> set[int]:
        return {slot for job, slot in self.trial_slots.items() if job in self.ended}


def read_head_log(study_dir: Path, since: float) -> HeadView:
    """Parse the newest head log of ``study_dir`` started at or after ``since`` (time.time())."""
    logs = [p for p in (study_dir / HEAD_LOGS).glob("*.snakemake.log") if _mtime(p) >= since]
    if not logs:
        return HeadView({}, set())
    text = max(logs, key=_mtime).read_text(errors="replace")
    slots = {job: int(slot) for job, slot in _SUBMITTED.findall(text)}
    ended = {a or b for a, b in _ENDED.findall(text)}
    return HeadView(slots, ended)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@dataclass(frozen=True)
class Snapshot:
    """The study at one moment, as the heartbeat line reports it."""

    finished: int
    num_trials: int
    running: int | None  # on Slurm (None: squeue did not answer)
    queued: int | None
    unnoticed: dict[int, float]  # slot → seconds since its result.json was written


def take_snapshot(
    study_dir: Path,
    num_trials: int,
    since: float,
    slurm_states: Callable[[], list[str]] | None = None,
) -> Snapshot:
    """Count finished trials (``trials/<slot>/result.json``), the running/queued Slurm jobs
    of the study (``slurm_states``: their squeue states), and the trials whose result was
    written after ``since`` without the head logging the end of their job."""
    now, finished, written = time.time(), 0, {}
    for slot in range(num_trials):
        stamp = _mtime(study_dir / "trials" / str(slot) / "result.json")
        if stamp:
            finished += 1
            if stamp >= since:
                written[slot] = now - stamp
    noticed = read_head_log(study_dir, since).noticed_slots()
    unnoticed = {slot: age for slot, age in written.items() if slot not in noticed}
    running = queued = None
    if slurm_states is not None:
        try:
            states = slurm_states()
            running = sum(state == "RUNNING" for state in states)
            queued = sum(state == "PENDING" for state in states)
        except RuntimeError:
            pass
    return Snapshot(finished, num_trials, running, queued, unnoticed)


def heartbeat_line(snapshot: Snapshot, since_noticed: float | None) -> str:
    parts = [f"{snapshot.finished}/{snapshot.num_trials} trials finished"]
    if snapshot.running is not None:
        parts.append(f"{snapshot.running} running")
    if snapshot.queued is not None:
        parts.append(f"{snapshot.queued} queued on Slurm")
    noticed = (
        "no job end noticed yet"
        if since_noticed is None
        else f"last job end noticed {_ago(since_noticed)} ago"
    )
    return f"[{time.strftime('%H:%M:%S')}] study alive: {', '.join(parts)}; {noticed}"


def stall_warning(unnoticed: dict[int, float], profile: str | None) -> str:
    slots = ", ".join(str(s) for s in sorted(unnoticed))
    check = f"octopi check-cluster --profile {profile}" if profile else "octopi check-cluster"
    return (
        f"[{time.strftime('%H:%M:%S')}] WARNING: trial(s) {slots} wrote their result "
        f"{_ago(max(unnoticed.values()))} ago, but the head has not noticed their jobs end: its "
        "job status checks get no answer. Likely cause: the profile's slurm-status-command "
        "(sacct on a cluster without accounting, or squeue with MinJobAge below 3 × "
        f"slurm-init-seconds-before-status-checks). Run `{check}`, stop this run (Ctrl-C), "
        "set the key in the profile and rerun with --resume: finished trials are kept."
    )


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class StudyMonitor:
    """The heartbeat thread (see the module docstring); use as a context manager around the
    Snakemake run (the run's start bounds which log and which results count)."""

    def __init__(
        self,
        study_dir: Path,
        num_trials: int,
        *,
        heartbeat_seconds: float,
        stall_seconds: float,
        slurm_states: Callable[[], list[str]] | None = None,
        profile: str | None = None,
        poll_seconds: float = 5.0,
        echo: Callable[[str], None] | None = None,
        since: float | None = None,
    ):
        self.study_dir, self.num_trials = study_dir, num_trials
        self.heartbeat_seconds, self.stall_seconds = heartbeat_seconds, stall_seconds
        self.slurm_states, self.profile, self.poll_seconds = slurm_states, profile, poll_seconds
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.since = since  # None: when the block starts
        self.last_noticed: float | None = None
        self._ended = 0
        self._warned: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="octopi-monitor", daemon=True)

    def __enter__(self) -> StudyMonitor:
        if self.since is None:  # file times have coarse resolution on some filesystems
            self.since = time.time() - 1
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_seconds
        while not self._stop.wait(self.poll_seconds):
            self.check_stalls()
            if time.monotonic() >= next_beat:
                self.beat()
                next_beat = time.monotonic() + self.heartbeat_seconds

    def beat(self) -> Snapshot:
        """Print the heartbeat line."""
        snapshot = take_snapshot(self.study_dir, self.num_trials, self.since, self.slurm_states)
        since = None if self.last_noticed is None else time.monotonic() - self.last_noticed
        self.echo(heartbeat_line(snapshot, since))
        return snapshot

    def check_stalls(self) -> bool:
        """Note job ends the head logged; warn (once per trial) about trial results it has not
        noticed for ``stall_seconds``. True when a warning was printed."""
        ended = len(read_head_log(self.study_dir, self.since).ended)
        if ended > self._ended:
            self._ended, self.last_noticed = ended, time.monotonic()
        unnoticed = take_snapshot(self.study_dir, self.num_trials, self.since).unnoticed
        stalled = {slot: age for slot, age in unnoticed.items() if age >= self.stall_seconds}
        if not stalled.keys() - self._warned:
            return False
        self.echo(stall_warning(stalled, self.profile))
        self._warned |= stalled.keys()
        return True
