"""Independent CPU work spread over forked worker processes, results in order.

Calibration scores a grid of (class, threshold) settings, each an independent pass of
connected components, distance transforms and watersheds over the class probabilities. SciPy
releases the GIL inside those, but the Python around them (per component) holds it: on 2 cores
two threads took 3.4-4.5 s where two processes took 2.8-2.9 s and one 4.9 s
(docs/benchmarks.md, Calibration cost). Forking shares the parent's arrays with the workers
copy-on-write, so gigabytes of probabilities reach them without a copy or a pickle; only each
item and its result are pickled.

Where fork is not available (macOS, Windows), in a daemonic process (which may not have
children), or with one worker, the items run in this process, one after another, with the same
results. Workers never touch torch or CUDA: forking a process that uses them is safe for
NumPy/SciPy work (PyTorch's own DataLoader workers are forked the same way).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["can_fork", "map_forked", "usable_cpus"]

Context = TypeVar("Context")
Item = TypeVar("Item")
Result = TypeVar("Result")

# (function, context) of the map in progress, inherited by its forked workers.
_WORK: tuple[Callable[[Any, Any], Any], Any] | None = None


def usable_cpus() -> int:
    """The CPU cores this process may run on (Slurm and taskset limit them), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    """Whether :func:`map_forked` can use worker processes here."""
    return (
        sys.platform.startswith("linux")
        and "fork" in multiprocessing.get_all_start_methods()
        and not multiprocessing.current_process().daemon
    )


def map_forked(
    function: Callable[[Context, Item], Result],
    context: Context,
    items: Iterable[Item],
    workers: int,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """``[function(context, item) for item in items]``, computed by up to ``workers`` forked
    processes (fewer when there are fewer items). ``function`` must be a module-level function;
    ``context`` (e.g. large arrays) reaches the workers through fork, never pickled. Items are
    handed out one at a time in the given order, so put the longest first. A worker's
    exception is raised here. ``on_result(result)`` is called here with each result as it
    arrives, in order (a progress bar, or writing it out before the next is done)."""
    global _WORK
    items = list(items)
    workers = min(workers, len(items))
    done = on_result or (lambda _: None)
    if workers <= 1 or not can_fork():
        results = []
        for item in items:
            results.append(function(context, item))
            done(results[-1])
        return results
    if _WORK is not None:
        raise RuntimeError("map_forked is not re-entrant")
    _WORK = (function, context)
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a multi-threaded process (torch's thread pool)
            # may deadlock; the workers run NumPy/SciPy code only (see the module docstring).
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            pool = multiprocessing.get_context("fork").Pool(workers, initializer=_as_worker)
        try:
            results = []
            for result in pool.imap(_run_item, items, chunksize=1):
                results.append(result)
                done(result)
        except BaseException:
            pool.terminate()
            raise
        pool.close()  # the workers exit on their own: nothing to kill
        pool.join()
        return results
    finally:
        _WORK = None


def _as_worker() -> None:
    """A worker forgets the parent's signal handlers: training's SIGTERM handler (save a
    checkpoint, then stop) would otherwise print its message in every worker the pool ends,
    and keep it alive. Ctrl-C reaches the parent, which ends the pool."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_item(item: Any) -> Any:
    assert _WORK is not None, "map_forked's work is set before its workers are forked"
    function, context = _WORK
    return function(context, item)
