"""MLflow experiment tracking. This is the only module of octopi that imports mlflow.

A thin, generic layer over :class:`mlflow.MlflowClient` (no fluent API, so several runs, nested
ones included, can be open in one process): :func:`start_run` opens or resumes a run and
returns a :class:`TrackingRun` with ``log_params`` / ``log_metrics`` / ``log_artifacts`` /
``end``. A tracking URI of ``"none"`` (or ``"off"``) disables tracking: :func:`start_run`
returns a :class:`NullRun` whose methods do nothing.

Many trial processes may share one SQLite store on a shared filesystem: connecting (which
creates and migrates a new store's tables) is serialised by a POSIX lock on ``<db>.lock`` beside
the database, and every call retries with exponential backoff on "database is locked" and
similar transient errors. Once a run is
open, a logging call that still fails is reported as a warning and training goes on: losing a
metric point is better than losing a day of training. mlflow is imported on first use (it
takes seconds).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

T = TypeVar("T")

DISABLED_URIS = frozenset({"none", "off", "false", "disabled"})
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
_PARAMS_PER_BATCH = 100  # MLflow's limit on params in one log_batch
_TRANSIENT = ("database is locked", "database table is locked", "busy", "already exists")


def tracking_disabled(uri: str | None) -> bool:
    """True for the URIs that turn tracking off (``none``, ``off``, ``false``, ``disabled``)."""
    return uri is not None and uri.strip().lower() in DISABLED_URIS


def default_tracking_uri(directory: str | Path) -> str:
    """``sqlite:///<directory>/mlflow.db`` with an absolute path."""
    return f"sqlite:///{(Path(directory).resolve() / 'mlflow.db').as_posix()}"


def default_artifact_location(uri: str) -> str | None:
    """``<folder of the SQLite file>/mlruns`` for a ``sqlite:///`` URI, else None.

    MLflow would otherwise put a new experiment's artifacts under ``./mlruns`` of the
    current working directory, away from the store.
    """
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    return str(
        (database.parent.resolve() if database.parent != Path("") else Path.cwd()) / "mlruns"
    )


def _retry(call: Callable[[], T], what: str, attempts: int = 8, first_wait_s: float = 0.2) -> T:
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


def _client(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # compute nodes are often offline
    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema set-up chatter
    from mlflow import MlflowClient

    # A new SQLite store creates and migrates its tables on first contact. Two processes
    # doing that at once break each other's migrations ("duplicate column name"), possibly
    # for good, so connecting is serialised by a lock file beside the database.
    with _sqlite_init_lock(uri):
        return _retry(lambda: _touch(MlflowClient(tracking_uri=uri)), "connect")


@contextlib.contextmanager
def _sqlite_init_lock(uri: str, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold an exclusive POSIX lock on ``<database>.lock`` (SQLite URIs only)."""
    if not uri.startswith("sqlite:///") or fcntl is None:
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    lock_path = database.with_name(database.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with open(lock_path, "a") as handle:
        while True:
            try:
                # lockf (POSIX record locks) also works on NFS, unlike flock on some systems.
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"waited {timeout_s:g} s for {lock_path}, held by another process "
                        "setting up the MLflow store; delete it if no octopi job is running"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def _touch(client):
    client.search_experiments(max_results=1)
    return client


def _experiment_id(client, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except Exception as error:  # another process created it first
            if "already exists" not in str(error).lower():
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


class NullRun:
    """Tracking switched off: every method is a no-op; ``run_id`` is None."""

    run_id: str | None = None
    experiment_id: str | None = None
    uri: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifacts(self, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass


class TrackingRun(NullRun):
    """An open MLflow run; see the module docstring for the error policy."""

    def __init__(self, client, uri: str, run_id: str, experiment_id: str):
        self._client = client
        self.uri = uri
        self.run_id = run_id
        self.experiment_id = experiment_id

    def _log(self, call: Callable[[], Any], what: str) -> None:
        try:
            _retry(call, what)
        except Exception as error:  # noqa: BLE001 - tracking must not end a training
            log.warning("MLflow %s failed for run %s: %s", what, self.run_id, error)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (values as strings, cut to MLflow's 6000 characters)."""
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            batch = items[start : start + _PARAMS_PER_BATCH]
            self._log(lambda b=batch: self._client.log_batch(self.run_id, params=b), "log params")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (None values are skipped)."""
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        items = [
            Metric(str(k), float(v), now_ms, int(step or 0))
            for k, v in metrics.items()
            if v is not None
        ]
        if items:
            self._log(lambda: self._client.log_batch(self.run_id, metrics=items), "log metrics")

    def log_artifacts(self, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        """Copy files (or folders) into the run's artifacts, under ``artifact_path``."""
        for path in paths:
            path = Path(path)
            if path.is_dir():
                call = lambda p=path: self._client.log_artifacts(  # noqa: E731
                    self.run_id, str(p), artifact_path
                )
            elif path.is_file():
                call = lambda p=path: self._client.log_artifact(  # noqa: E731
                    self.run_id, str(p), artifact_path
                )
            else:
                log.warning("MLflow: artifact %s does not exist; not logged", path)
                continue
            self._log(call, f"log artifact {path.name}")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self._log(
                lambda k=key, v=value: self._client.set_tag(self.run_id, k, str(v)), "set tag"
            )

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run ended with ``status`` (FINISHED, FAILED or KILLED)."""
        self._log(lambda: self._client.set_terminated(self.run_id, status=status), "end run")


def start_run(
    uri: str | None,
    experiment: str,
    run_name: str | None = None,
    *,
    nested: bool = False,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    artifact_location: str | None = None,
    run_id: str | None = None,
) -> TrackingRun | NullRun:
    """Open a run in ``experiment`` (created if new) of the store at ``uri``.

    ``uri`` None means ``./mlflow.db``; a disabled URI (see :func:`tracking_disabled`) returns
    a :class:`NullRun`. ``nested`` runs need ``parent_run_id`` and are shown under it.
    ``artifact_location`` applies to a new experiment only (default: :func:`default_artifact_
    location`). ``run_id`` resumes that run (status back to RUNNING) instead of starting one;
    if the store no longer has it a new run is started.
    """
    if tracking_disabled(uri):
        return NullRun()
    if nested and not parent_run_id:
        raise ValueError("a nested MLflow run needs parent_run_id (the run to nest under)")
    uri = uri or default_tracking_uri(".")
    client = _client(uri)
    if run_id is not None:
        existing = _retry(lambda: _find_run(client, run_id), "get run")
        if existing is not None:
            _retry(lambda: client.update_run(run_id, status="RUNNING"), "resume run")
            return TrackingRun(client, uri, run_id, existing.info.experiment_id)
        log.warning("MLflow run %s not found in %s; starting a new run", run_id, uri)
    location = artifact_location or default_artifact_location(uri)
    experiment_id = _retry(lambda: _experiment_id(client, experiment, location), "experiment")
    run_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    run = _retry(
        lambda: client.create_run(experiment_id, run_name=run_name, tags=run_tags), "create run"
    )
    return TrackingRun(client, uri, run.info.run_id, experiment_id)


def _find_run(client, run_id: str):
    try:
        return client.get_run(run_id)
    except Exception as error:
        if "not found" in str(error).lower() or "does not exist" in str(error).lower():
            return None
        raise


# Functional spellings, for callers that prefer them (the study runner).
def log_params(run: NullRun, params: Mapping[str, Any]) -> None:
    run.log_params(params)


def log_metrics(run: NullRun, metrics: Mapping[str, float], step: int | None = None) -> None:
    run.log_metrics(metrics, step)


def log_artifacts(
    run: NullRun, paths: Iterable[str | Path], artifact_path: str | None = None
) -> None:
    run.log_artifacts(paths, artifact_path)


def end_run(run: NullRun, status: str = "FINISHED") -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}; use one of {', '.join(RUN_STATUSES)}")
    run.end(status)


def flatten_params(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested plain data → ``{"a.b.0": value}``; lists of scalars stay one comma-joined value."""
    if isinstance(data, Mapping):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten_params(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(data, list | tuple):
        if all(not isinstance(v, Mapping | list | tuple) for v in data):
            return {prefix: ",".join(str(v) for v in data)}
        flat = {}
        for index, value in enumerate(data):
            flat.update(flatten_params(value, f"{prefix}.{index}"))
        return flat
    return {prefix: data}
