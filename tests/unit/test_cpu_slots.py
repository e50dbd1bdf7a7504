"""CPU shares for trials that train side by side on a machine without GPUs (octopi.cpu_slots):
the split, the claim (each process its own share, by lock file), and what is restored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from octopi.cpu_slots import CPU_TRIALS_ENV, claim_cpu_share, cpu_shares, default_cpu_trials
from octopi.gpu_slots import _try_lock

needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity control and 2 cores",
)


def test_shares_split_the_cores_evenly_and_never_outnumber_them() -> None:
    assert cpu_shares([0, 1], 2) == [[0], [1]]
    assert cpu_shares([0, 1, 2, 3, 4], 2) == [[0, 1, 2], [3, 4]]
    assert cpu_shares([4, 5, 6], 3) == [[4], [5], [6]]
    assert cpu_shares([0, 1], 5) == [[0], [1]]
    assert cpu_shares([0, 1, 2, 3], 1) == [[0, 1, 2, 3]]
    assert [default_cpu_trials(n) for n in (1, 2, 16)] == [1, 2, 2]


def test_without_the_variable_or_with_one_trial_nothing_is_claimed(tmp_path: Path) -> None:
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    for environ in ({}, {CPU_TRIALS_ENV: "1"}, {CPU_TRIALS_ENV: "x"}):
        with claim_cpu_share(environ, lock_dir=tmp_path) as share:
            assert share is None
    assert not list(tmp_path.iterdir())
    if before is not None:
        assert os.sched_getaffinity(0) == before


@needs_affinity
def test_a_claim_takes_a_free_share_runs_on_it_and_restores_the_cores(tmp_path: Path) -> None:
    cores = os.sched_getaffinity(0)
    environ = {CPU_TRIALS_ENV: "2"}
    first, second = cpu_shares(sorted(cores), 2)
    with claim_cpu_share(environ, lock_dir=tmp_path) as share:
        assert share == first and os.sched_getaffinity(0) == set(first)
    assert os.sched_getaffinity(0) == cores
    # Another trial holds the first share: this one gets the second.
    held = _try_lock(tmp_path, ["cpu-share-0-of-2"], prefix="")
    with claim_cpu_share(environ, lock_dir=tmp_path) as share:
        assert share == second and os.sched_getaffinity(0) == set(second)
    # Both held (more trials than shares): it keeps every core.
    also_held = _try_lock(tmp_path, ["cpu-share-1-of-2"], prefix="")
    with claim_cpu_share(environ, lock_dir=tmp_path) as share:
        assert share is None and os.sched_getaffinity(0) == cores
    for _, lock in (held, also_held):
        lock.release()


_TRIAL = """
import json, os, sys, time
from pathlib import Path
from octopi.cpu_slots import claim_cpu_share
with claim_cpu_share(lock_dir=sys.argv[1]) as share:
    import torch
    from octopi.runtime import configure_threads
    configure_threads()
    Path(sys.argv[2]).touch()
    while len(list(Path(sys.argv[1]).parent.glob("ready-*"))) < 2:
        time.sleep(0.05)
    print(json.dumps({"share": share, "threads": torch.get_num_threads(),
                      "affinity": sorted(os.sched_getaffinity(0))}))
"""


@needs_affinity
def test_two_trial_processes_at_once_train_on_disjoint_cores(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    env = {**os.environ, CPU_TRIALS_ENV: "2"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _TRIAL, str(locks), str(tmp_path / f"ready-{index}")],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    found = [json.loads(process.communicate(timeout=120)[0]) for process in processes]
    shares = [set(item["share"]) for item in found]
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] == os.sched_getaffinity(0)
    for item in found:
        assert item["affinity"] == sorted(item["share"])
        assert item["threads"] == len(item["share"])
