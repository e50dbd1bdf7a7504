"""The one lockf lock (locks.posix_lock) behind slot locks, study records and the MLflow
SQLite set-up lock."""

from __future__ import annotations

import errno
import fcntl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from octopi.locks import LockHeldError, posix_lock
from octopi.tracking_calls import sqlite_init_lock


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Path]:
    """``mlflow.db.lock`` held (lockf) by another process."""
    path = tmp_path / "mlflow.db.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+b'); "
            "fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield path
    finally:
        holder.kill()
        holder.wait()


def test_held_lock_refuses_at_once_or_after_the_timeout(held: Path) -> None:
    with (
        pytest.raises(LockHeldError, match="locked by another process"),
        posix_lock(held, blocking=False),
    ):
        pass
    uri = f"sqlite:///{held.with_name('mlflow.db')}"
    with (
        pytest.raises(TimeoutError, match="setting up the MLflow store; delete it"),
        sqlite_init_lock(uri, timeout_s=0.3),
    ):
        pass


def test_free_lock_is_taken_and_released(tmp_path: Path) -> None:
    with posix_lock(tmp_path / "a" / "x.lock", blocking=False):
        pass
    with posix_lock(tmp_path / "a" / "x.lock", timeout_s=0.1):
        pass


def test_a_failing_lock_is_reported_at_once_not_waited_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # e.g. ENOLCK: an NFS mount without a lock manager. Waiting 600 s would not help.
    def no_locks(*args: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    start = time.monotonic()
    with (
        pytest.raises(OSError, match="No locks available"),
        sqlite_init_lock(f"sqlite:///{tmp_path / 'mlflow.db'}", timeout_s=5),
    ):
        pass
    assert time.monotonic() - start < 2
