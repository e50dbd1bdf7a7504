"""How octopi's MLflow calls reach the store: retries, the SQLite set-up lock, a reachability
probe for servers, and a background thread per run.

:func:`retry` repeats a call on transient SQLite errors ("database is locked");
:func:`sqlite_init_lock` serialises the first contact with a new SQLite store.

:class:`CallQueue` runs one run's tracking calls in order on one background thread, so a
slow or unreachable MLflow server never stalls an epoch. After a call fails because the store
cannot be reached (:func:`unreachable`), later calls are skipped for :data:`PAUSE_S` seconds
instead of each waiting for its own timeouts; then the next call tries again. Nothing skipped
is lost for good: a trial's own files (``epochs.csv``, ``result.json``, the model) hold it, and
:mod:`octopi.search.tracking_sync` copies what MLflow lacks into it later.

No mlflow import here (:mod:`octopi.tracking` is the only module that imports it).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from octopi.locks import HAS_POSIX_LOCKS, posix_lock

log = logging.getLogger(__name__)

T = TypeVar("T")

PAUSE_S = 30.0  # after an unreachable store: skip calls for this long, then try again
_UNREACHABLE = (
    "max retries exceeded",
    "connection refused",
    "connection reset",
    "connection aborted",
    "failed to establish",
    "remote end closed",
    "timed out",
    "name or service not known",
    "temporary failure in name resolution",
    "is not reachable",
)
_TRANSIENT = ("database is locked", "database table is locked", "busy", "already exists")


def retry(call: Callable[[], T], what: str, attempts: int = 8, first_wait_s: float = 0.2) -> T:
    """Run ``call``; on a transient store error wait (0.2 s, doubling, jittered) and try again."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:
            message = str(error).lower()
            if attempt == attempts - 1 or not any(word in message for word in _TRANSIENT):
                raise
            wait_s = min(first_wait_s * 2**attempt, 10.0) * (0.5 + random.random())  # noqa: S311
            log.debug("MLflow %s: %s; retrying in %.1f s", what, error, wait_s)
            time.sleep(wait_s)
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def sqlite_init_lock(uri: str, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold an exclusive POSIX lock on ``<database>.lock`` (SQLite URIs only)."""
    if not uri.startswith("sqlite:///") or not HAS_POSIX_LOCKS:
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    holder = "another process setting up the MLflow store; delete it if no octopi job is running"
    with posix_lock(
        database.with_name(database.name + ".lock"), timeout_s=timeout_s, holder=holder
    ):
        yield


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the tracking server could not be reached (as opposed to a
    refused or invalid request)."""
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    text = f"{type(error).__name__}: {error}".lower()
    return "connectionerror" in text or any(words in text for words in _UNREACHABLE)


def is_http(uri: str | None) -> bool:
    return uri is not None and urlsplit(uri).scheme in ("http", "https")


def probe(uri: str, timeout_s: float = 5.0) -> None:
    """Raise ``ConnectionError`` unless the server of an ``http(s)://`` URI accepts a TCP
    connection within ``timeout_s`` (other URIs: nothing to check).

    A quick answer before MLflow's own client, which retries a dead server for minutes.
    """
    if not is_http(uri):
        return
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"MLflow server {uri} is not reachable: {error}") from None


class CallQueue:
    """Runs submitted calls in order on one daemon thread (started on first use).

    ``failures`` counts the calls that failed or were skipped; :meth:`flush` waits for the
    queue to drain, :meth:`close` ends the thread after the queued calls.
    """

    def __init__(self, name: str):
        self.name = name
        self.failures = 0
        self._queue: queue.Queue[tuple[Callable[[], Any], str] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._paused_until = 0.0
        self._down = False

    def submit(self, call: Callable[[], Any], what: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()
        self._queue.put((call, what))

    def flush(self, timeout_s: float) -> bool:
        """Wait until every submitted call has run (or was skipped); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self) -> None:
        """Let the thread end once the calls queued so far have run."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._run(*item)
            finally:
                self._queue.task_done()

    def _run(self, call: Callable[[], Any], what: str) -> None:
        if time.monotonic() < self._paused_until:
            self.failures += 1
            log.debug("MLflow %s skipped: the store was unreachable", what)
            return
        try:
            call()
        except Exception as error:  # noqa: BLE001 - tracking must not end a training
            self.failures += 1
            if not unreachable(error):
                log.warning("MLflow %s failed: %s", what, error)
                return
            self._paused_until = time.monotonic() + PAUSE_S
            if not self._down:
                self._down = True
                log.warning(
                    "MLflow %s: the tracking server is unreachable (%s); training goes on, "
                    "tracking retries every %g s, and what it misses is copied in from the "
                    "trial's files later (at the latest by `octopi select-best`)",
                    what,
                    error,
                    PAUSE_S,
                )
            return
        if self._down:
            self._down = False
            log.warning("MLflow: the tracking server answers again (%s)", what)
