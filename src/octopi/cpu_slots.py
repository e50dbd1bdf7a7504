"""Several trials at once on a machine without GPUs, each on its own share of the CPU cores.

PyTorch's CPU kernels scale poorly from one thread to two on small 3D crops, and a trial
spends seconds in single-threaded work (imports, calibration, localization). Two trials side
by side, one core each, finish 30 % sooner than the same two one after the other on both cores
(2-core machine, the demo's trial network: 27 s against 39 s; docs/benchmarks.md).

``octopi model-explore`` on a CPU-only machine (or with ``--gpus 0``) lets Snakemake run
``--cpu-trials`` trials at once and tells them so in ``$OCTOPI_CPU_TRIALS``. Each trial then
calls :func:`claim_cpu_share`: it locks one of the N shares (``cpu-share-<i>-of-<N>.lock`` in
the machine's lock folder, :func:`~octopi.gpu_slots.machine_lock_dir`, as GPUs are claimed),
and restricts itself to that share's cores (``os.sched_setaffinity``), so torch's threads, the
calibration's worker processes and anything else sized by
:func:`~octopi.parallel.usable_cpus` stay on them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from octopi.gpu_slots import _make_shared_dir, _try_lock, machine_lock_dir

CPU_TRIALS_ENV = "OCTOPI_CPU_TRIALS"


def default_cpu_trials(cores: int) -> int:
    """Trials at once on ``cores`` CPU cores without GPUs: 2 where there are 2 cores or more
    (measured on 2 cores; each trial holds its own tomogram cache, so more multiply memory)."""
    return 2 if cores >= 2 else 1


def cpu_shares(cores: list[int], shares: int) -> list[list[int]]:
    """``cores`` split into ``shares`` contiguous parts as even as possible (the first ones
    one larger); never more parts than cores."""
    shares = max(1, min(shares, len(cores)))
    size, extra = divmod(len(cores), shares)
    parts, start = [], 0
    for index in range(shares):
        end = start + size + (1 if index < extra else 0)
        parts.append(cores[start:end])
        start = end
    return parts


@contextlib.contextmanager
def claim_cpu_share(
    environ: MutableMapping[str, str] | None = None, lock_dir: str | Path | None = None
) -> Iterator[list[int] | None]:
    """Hold a free share of this process's cores for the ``with`` block and run on it; yield
    its cores (None: ``$OCTOPI_CPU_TRIALS`` unset or 1, or no affinity control here).

    The shares split the cores this process may use when it starts; a share another process
    holds is skipped, and when every share is held (more trials started than shares) the
    process keeps all its cores. The affinity is restored and the lock released on exit.
    """
    environ = os.environ if environ is None else environ
    try:
        trials = int(environ.get(CPU_TRIALS_ENV, "1"))
    except ValueError:
        trials = 1
    if trials <= 1 or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    cores = sorted(os.sched_getaffinity(0))
    shares = cpu_shares(cores, trials)
    if len(shares) <= 1:
        yield None
        return
    lock_dir = machine_lock_dir(environ) if lock_dir is None else Path(lock_dir)
    _make_shared_dir(lock_dir)
    names = [f"cpu-share-{index}-of-{len(shares)}" for index in range(len(shares))]
    claimed = _try_lock(lock_dir, names, prefix="")
    if claimed is None:
        print(f"every CPU share is held ({lock_dir}); this trial uses all cores", file=sys.stderr)
        yield None
        return
    name, lock = claimed
    share = shares[names.index(name)]
    os.sched_setaffinity(0, share)
    try:
        yield share
    finally:
        os.sched_setaffinity(0, cores)
        lock.release()
