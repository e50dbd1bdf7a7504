"""The POSIX file lock (``fcntl.lockf``) behind trial-slot locks, the study folder's records
and the MLflow SQLite set-up lock.

GPU claims (:mod:`octopi.gpu_slots`) use filelock's FileLock instead: an flock on a local
temp folder. These locks stay lockf, not filelock, because they live on the study folder,
often on NFS, where POSIX record locks go through the lock manager and flock may not.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

HAS_POSIX_LOCKS = fcntl is not None


class LockHeldError(RuntimeError):
    """A non-blocking :func:`posix_lock` found the lock held by another process."""


@contextlib.contextmanager
def posix_lock(
    path: str | Path,
    blocking: bool = True,
    timeout_s: float | None = None,
    holder: str = "another process",
) -> Iterator[None]:
    """Hold an exclusive POSIX record lock (``fcntl.lockf``) on ``path`` for the block.

    lockf, not filelock (whose FileLock takes an flock): POSIX record locks go through the NFS
    lock manager, flock may not. The kernel drops the lock when the process dies, so a killed
    job never leaves it held. ``blocking=False`` raises :class:`LockHeldError` at once when
    another process holds it; ``timeout_s`` waits that long, then raises ``TimeoutError``
    naming ``holder``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        _lock(handle, path, blocking, timeout_s, holder)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def _lock(handle: Any, path: Path, blocking: bool, timeout_s: float | None, holder: str) -> None:
    wait = blocking and timeout_s is None
    deadline = time.monotonic() + (timeout_s or 0.0)
    while True:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            return
        except OSError as error:
            if wait or error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            if not blocking:
                raise LockHeldError(f"{path} is locked by another process") from error
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s:g} s for {path}, held by {holder}") from None
        time.sleep(0.1)
