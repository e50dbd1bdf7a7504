"""Work spread over forked processes: same results, in order, errors raised here."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

import pytest

from octopi.parallel import can_fork, map_forked, usable_cpus

pytestmark = pytest.mark.skipif(not can_fork(), reason="needs fork (Linux)")


def _pid_and_square(context, item):
    return os.getpid(), context["offset"] + item * item


def _fail_on_three(context, item):
    if item == 3:
        raise ValueError(f"item {item} is bad")
    return item


def test_results_come_back_in_order_from_other_processes():
    # A lock cannot be pickled: the context reaches the workers through fork.
    context = {"offset": 100, "lock": threading.Lock()}
    results = map_forked(_pid_and_square, context, range(12), workers=3)
    assert [value for _, value in results] == [100 + i * i for i in range(12)]
    pids = {pid for pid, _ in results}
    assert os.getpid() not in pids and 1 <= len(pids) <= 3


@pytest.mark.parametrize("workers", [1, 3])
def test_each_result_is_announced_here_in_order(workers):
    announced = []
    results = map_forked(
        _pid_and_square, {"offset": 0}, range(5), workers, on_result=announced.append
    )
    assert announced == results and [value for _, value in results] == [0, 1, 4, 9, 16]


def test_one_worker_runs_here():
    results = map_forked(_pid_and_square, {"offset": 0}, [2, 3], workers=1)
    assert results == [(os.getpid(), 4), (os.getpid(), 9)]


def test_a_worker_error_is_raised_here():
    with pytest.raises(ValueError, match="item 3 is bad"):
        map_forked(_fail_on_three, None, range(6), workers=2)
    # The next map works: nothing was left behind.
    assert map_forked(_fail_on_three, None, [1, 2], workers=2) == [1, 2]


def _map_in_daemon(queue):
    queue.put(map_forked(_pid_and_square, {"offset": 0}, [1, 2, 3], workers=2))


def test_a_daemonic_process_runs_the_items_itself():
    """Pool workers are daemonic and may not have children: there the map runs in-process."""
    queue = multiprocessing.get_context("fork").Queue()
    daemon = multiprocessing.get_context("fork").Process(
        target=_map_in_daemon, args=(queue,), daemon=True
    )
    daemon.start()
    results = queue.get(timeout=60)
    daemon.join(timeout=60)
    assert [value for _, value in results] == [1, 4, 9]
    assert {pid for pid, _ in results} == {daemon.pid}


def _signal_handlers(context, item):
    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)


def _announce(*_):  # a handler that keeps the process alive, like training's
    print("SIGTERM received", flush=True)


def test_workers_drop_the_parent_s_signal_handlers():
    """Training's SIGTERM handler saves a checkpoint and keeps running: a worker that inherited
    it would print its message when the pool ends it, and live on."""
    previous = signal.signal(signal.SIGTERM, _announce)
    try:
        handlers = map_forked(_signal_handlers, None, range(4), workers=2)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert set(handlers) == {(signal.SIG_DFL, signal.SIG_IGN)}
    assert multiprocessing.active_children() == []  # every worker has exited


def test_usable_cpus_is_the_affinity():
    assert usable_cpus() == len(os.sched_getaffinity(0))
