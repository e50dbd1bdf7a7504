"""Run one measured command in a fresh subprocess: wall time, exit status, peak memory, log.

Memory is sampled by polling the whole process tree (the command and every descendant, e.g.
DataLoader workers or localization pools) every ``poll_seconds``:

- ``peak_pss_mb``: the largest sum over the tree of PSS (proportional set size: shared pages
  split between the processes that share them). Forked workers share the parent's pages
  copy-on-write, so summing RSS would count those pages once per worker; summed PSS is the
  tree's real footprint. This is the figure the report shows.
- ``peak_rss_mb``: the largest sum over the tree of RSS (over-counts shared pages).
- ``max_rss_mb``: the kernel's own high-water mark of the largest single process
  (``ru_maxrss`` from ``wait4``; exact, but blind to the other processes).

``cpu_seconds`` is user + system CPU time of the command and every descendant it reaped
(``wait4``): on a machine shared with other work, it is steadier than wall time.
``load_average`` holds the 1-minute load average at start and at end (for a 2-core machine,
a load far above 2 means the timings were taken while other work competed for the cores).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

MB = 1024 * 1024


@dataclass
class ProcResult:
    """Outcome of one command (JSON-ready through :meth:`to_dict`)."""

    argv: list[str]
    returncode: int
    wall_seconds: float
    peak_pss_mb: float
    peak_rss_mb: float
    max_rss_mb: float
    cpu_seconds: float
    load_average: tuple[float, float]
    log: str
    samples: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["command"] = shlex.join(self.argv)
        del out["argv"]
        return out


# PSS comes from /proc/<pid>/smaps, whose reading walks every mapping under the process's
# mmap lock and so can slow its page faults: octopi 1.7.0's segment of a 184×630×630
# tomogram (9.6 GB, 62 million minor faults) took 995 s here with PSS read every 0.2 s, and
# 750 s under /usr/bin/time the same day (2026-12-04). RSS (/proc/<pid>/statm, counters
# only) is read at every poll.
PSS_INTERVAL_SECONDS = 5.0


def _memory(proc: psutil.Process, *, full: bool) -> int:
    """Bytes of ``proc``: its PSS (``full``, from smaps; RSS where PSS is unknown) or RSS; 0
    once it is gone."""
    try:
        info = proc.memory_full_info() if full else proc.memory_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0
    return getattr(info, "pss", info.rss) if full else info.rss


class _TreeSampler(threading.Thread):
    """Polls a process tree's summed RSS until stopped, and its summed PSS at the first poll,
    every :data:`PSS_INTERVAL_SECONDS`, and whenever RSS has grown by a tenth."""

    def __init__(self, pid: int, poll_seconds: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.poll_seconds = poll_seconds
        self.peak_pss = 0
        self.peak_rss = 0
        self.samples = 0
        self.pss_samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        next_pss, rss_at_pss = time.monotonic(), 0
        while not self._stop_event.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = sum(_memory(proc, full=False) for proc in procs)
            self.peak_rss = max(self.peak_rss, rss)
            # PSS on schedule, and whenever RSS has grown by a tenth since it was last read,
            # so that the peak of a short or growing process is not missed.
            if time.monotonic() >= next_pss or rss > 1.1 * rss_at_pss:
                self.peak_pss = max(self.peak_pss, sum(_memory(p, full=True) for p in procs))
                self.pss_samples += 1
                next_pss, rss_at_pss = time.monotonic() + PSS_INTERVAL_SECONDS, rss
            self.samples += 1
            self._stop_event.wait(self.poll_seconds)

    def stop(self) -> None:
        self._stop_event.set()


def run_measured(
    argv: list[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout_seconds: float | None = None,
    poll_seconds: float = 0.2,
) -> ProcResult:
    """Run ``argv`` to completion, stdout+stderr to ``log_path``; never raises on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        sampler = _TreeSampler(proc.pid, poll_seconds)
        sampler.start()
        returncode, usage = _wait(proc, timeout_seconds, start)
        wall = time.perf_counter() - start
        sampler.stop()
        sampler.join(timeout=5)
    return ProcResult(
        argv=[str(a) for a in argv],
        returncode=returncode,
        wall_seconds=round(wall, 3),
        peak_pss_mb=round(sampler.peak_pss / MB, 1),
        peak_rss_mb=round(sampler.peak_rss / MB, 1),
        max_rss_mb=round(usage.ru_maxrss / 1024, 1),
        cpu_seconds=round(usage.ru_utime + usage.ru_stime, 2),
        load_average=(round(load_start, 2), round(os.getloadavg()[0], 2)),
        log=str(log_path),
        samples=sampler.samples,
    )


def _wait(proc: subprocess.Popen, timeout_seconds: float | None, start: float):
    """Reap ``proc`` with ``wait4`` (for its rusage); kill its process group on timeout."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        if timeout_seconds is not None and time.perf_counter() - start > timeout_seconds:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = 124
            return 124, usage
        time.sleep(0.05)


def tail(path: str | Path, lines: int = 20) -> str:
    """Last ``lines`` lines of a log, for error messages."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])
