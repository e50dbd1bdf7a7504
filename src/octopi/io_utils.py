"""Atomic file writes, resolved-config records and the POSIX file lock.

Every output is written to a temporary name in its final directory and renamed into place, so
a killed job never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The block creates the temporary file. On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A fresh unique name, not mkstemp: mkstemp creates the file with mode 0600, which the
    # rename would carry onto the output (unreadable to the group on a shared filesystem).
    # The writer creates the file, so it gets the usual umask-based permissions.
    temp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temp:
        temp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_yaml(path: str | Path, data: Any) -> None:
    """Write ``data`` as YAML to ``path`` atomically (keys in insertion order)."""
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def to_plain(value: Any) -> Any:
    """Config models, lists and paths as plain YAML/JSON-compatible data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_resolved_config(
    directory: str | Path, command: str, model: BaseModel | None = None, **parts: Any
) -> Path:
    """Record the fully resolved config a command ran with, as ``<command>_config.yaml``.

    ``model``'s fields go to the top level; each of ``parts`` (models, lists, paths or plain
    values) goes under its own key. Returns the path written.
    """
    record: dict[str, Any] = {"command": command}
    if model is not None:
        record.update(to_plain(model))
    record.update({key: to_plain(value) for key, value in parts.items()})
    path = Path(directory) / f"{command}_config.yaml"
    atomic_write_yaml(path, record)
    return path
