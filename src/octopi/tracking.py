"""MLflow experiment tracking. This is the only module of octopi that imports mlflow.

A thin, generic layer over :class:`mlflow.MlflowClient` (no fluent API, so several runs, nested
ones included, can be open in one process): :func:`start_run` opens or resumes a run and
returns a :class:`TrackingRun` with ``log_params`` / ``log_metrics`` / ``log_artifacts`` /
``end``. A tracking URI of ``"none"`` (or ``"off"``) disables tracking: :func:`start_run`
returns a :class:`NullRun` whose methods do nothing.

Many trial processes may share one SQLite store (locally, on one machine): connecting (which
creates and migrates a new store's tables) is serialised by a POSIX lock on ``<db>.lock`` beside
the database, and every call retries with exponential backoff on "database is locked" and
similar transient errors. On a cluster the trials log over HTTP to one ``mlflow server``
(:mod:`octopi.tracking_server`), the only writer of the study's SQLite file.

Tracking never ends or stalls a training: a run's logging calls run in order on a background
thread (:mod:`octopi.tracking_calls`); a call that still fails is reported as a warning, and
after an unreachable server calls are skipped for a while. :func:`try_start_run` gives a
:class:`NullRun` when the store cannot be reached. What a run misses is in the training's own
files, from which :mod:`octopi.search.tracking_sync` fills it in later. mlflow is imported on
first use (it takes seconds).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from octopi.io_utils import atomic_write_json
from octopi.tracking_calls import CallQueue, is_http, probe, retry, sqlite_init_lock

log = logging.getLogger(__name__)

DISABLED_URIS = frozenset({"none", "off", "false", "disabled"})
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
_PARAMS_PER_BATCH = 100  # MLflow's limit on params in one log_batch
_METRICS_PER_BATCH = 1000  # MLflow's limit on metrics in one log_batch
END_TIMEOUT_S = 60.0  # at the end of a run: longest wait for its queued calls (a stopping
# job has little time left before Slurm kills it; what is left out is filled in later)
# MLflow's client retries a failing HTTP request 7 times with doubling waits (minutes) and
# waits 120 s for an answer; a trial would rather skip a metric (see octopi.tracking_calls).
# Environment variables of the same names set by the user win.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


# The MLflow run a training folder trains into, written as soon as the run exists: a process
# killed before its first checkpoint (which also records it) resumes that run instead of
# leaving it RUNNING forever beside a new one. Backfill marks it synced (tracking_sync).
RUN_RECORD_NAME = "mlflow_run.json"


def read_run_record(folder: str | Path) -> dict[str, Any]:
    """``{"run_id", "tracking_uri", ...}`` of ``folder``'s ``mlflow_run.json`` ({}: none)."""
    try:
        record = json.loads((Path(folder) / RUN_RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_run_record(folder: str | Path, record: Mapping[str, Any]) -> None:
    atomic_write_json(Path(folder) / RUN_RECORD_NAME, dict(record))


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


def import_store(uri: str | None) -> None:
    """Import the MLflow client code for ``uri`` (a SQLite store: SQLAlchemy and Alembic too,
    about 1 s) without connecting, so that a caller timing its start-up counts it among its
    imports; nothing when tracking is off."""
    if uri is None or tracking_disabled(uri):
        return
    import mlflow.tracking  # noqa: F401

    if uri.startswith("sqlite:"):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def _client(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # compute nodes are often offline
    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema set-up chatter
    if is_http(uri):
        for name, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        probe(uri)
    from mlflow import MlflowClient

    # A new SQLite store creates and migrates its tables on first contact. Two processes
    # doing that at once break each other's migrations ("duplicate column name"), possibly
    # for good, so connecting is serialised by a lock file beside the database.
    with sqlite_init_lock(uri):
        return retry(lambda: _touch(MlflowClient(tracking_uri=uri)), "connect")


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
    failures: int = 0  # logging calls that failed or were skipped

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifacts(self, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def end(self, status: str = "FINISHED") -> bool:
        return True

    def flush(self, timeout_s: float = END_TIMEOUT_S) -> bool:
        """Wait for the logging calls made so far; False if they did not finish in time."""
        return True

    def close(self) -> bool:
        return True


class TrackingRun(NullRun):
    """An open MLflow run; see the module docstring for the error policy."""

    def __init__(self, client, uri: str, run_id: str, experiment_id: str):
        self._client = client
        self.uri = uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._calls = CallQueue(f"mlflow-{run_id[:8]}")

    @property
    def failures(self) -> int:  # type: ignore[override]
        return self._calls.failures

    def _log(self, call: Callable[[], Any], what: str) -> None:
        self._calls.submit(lambda: retry(call, what), f"{what} (run {self.run_id})")

    def flush(self, timeout_s: float = END_TIMEOUT_S) -> bool:
        return self._calls.flush(timeout_s)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (values as strings, cut to MLflow's 6000 characters)."""
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            batch = items[start : start + _PARAMS_PER_BATCH]
            self._log(lambda b=batch: self._client.log_batch(self.run_id, params=b), "log params")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (None values are skipped)."""
        self.log_metric_points((k, v, step or 0) for k, v in metrics.items() if v is not None)

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

    def log_metric_points(self, points: Iterable[tuple[str, float, int]]) -> None:
        """Log ``(key, value, step)`` points (a metric's history, e.g. when filling it in)."""
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now_ms, int(step)) for k, v, step in points]
        for start in range(0, len(items), _METRICS_PER_BATCH):
            batch = items[start : start + _METRICS_PER_BATCH]
            self._log(lambda b=batch: self._client.log_batch(self.run_id, metrics=b), "log metrics")

    def end(self, status: str = "FINISHED") -> bool:
        """Mark the run ended with ``status`` (FINISHED, FAILED or KILLED); wait (at most
        :data:`END_TIMEOUT_S`) for the calls queued before. False: some were still pending."""
        self._log(lambda: self._client.set_terminated(self.run_id, status=status), "end run")
        return self.close()

    def close(self) -> bool:
        """Wait (at most :data:`END_TIMEOUT_S`) for the queued calls, then stop the logging
        thread; False when calls were still pending."""
        drained = self._calls.flush(END_TIMEOUT_S)
        if not drained:
            log.warning("MLflow: run %s: logging calls still pending at its end", self.run_id)
        self._calls.close()
        return drained

    # Reading the run back (synchronous; errors raise): what :mod:`octopi.search.tracking_sync`
    # compares with a training's files.
    def info(self) -> dict[str, Any]:
        """``{"status", "params", "tags", "metrics"}`` of the run as the store has it now."""
        run = retry(lambda: self._client.get_run(self.run_id), "get run")
        data = run.data
        return {
            "status": run.info.status,
            "params": dict(data.params),
            "tags": dict(data.tags),
            "metrics": dict(data.metrics),
        }

    def metric_steps(self, keys: Iterable[str]) -> dict[str, set[int]]:
        """The steps each metric in ``keys`` has values at."""
        return {
            key: {
                m.step
                for m in retry(lambda k=key: self._client.get_metric_history(self.run_id, k), key)
            }
            for key in keys
        }

    def artifact_sizes(self, path: str | None = None) -> dict[str, int | None]:
        """Artifact path → size in bytes (None for folders) of the run's artifacts in ``path``."""
        files = retry(lambda: self._client.list_artifacts(self.run_id, path), "list artifacts")
        return {f.path: (None if f.is_dir else f.file_size) for f in files}


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
    mark_running: bool = True,
) -> TrackingRun | NullRun:
    """Open a run in ``experiment`` (created if new) of the store at ``uri``.

    ``uri`` None means ``./mlflow.db``; a disabled URI (see :func:`tracking_disabled`) returns
    a :class:`NullRun`. ``nested`` runs need ``parent_run_id`` and are shown under it.
    ``artifact_location`` applies to a new experiment only (default: :func:`default_artifact_
    location`). ``run_id`` resumes that run (status back to RUNNING unless ``mark_running`` is
    False) instead of starting one; if the store does not have it a new run is started (run ids
    are unique, so a run found is the same run, whatever URI reached the store). Raises when
    the store cannot be reached (see :func:`try_start_run`).
    """
    if tracking_disabled(uri):
        return NullRun()
    if nested and not parent_run_id:
        raise ValueError("a nested MLflow run needs parent_run_id (the run to nest under)")
    uri = uri or default_tracking_uri(".")
    client = _client(uri)
    if run_id is not None:
        existing = retry(lambda: _find_run(client, run_id), "get run")
        if existing is not None:
            if mark_running:
                retry(lambda: client.update_run(run_id, status="RUNNING"), "resume run")
            return TrackingRun(client, uri, run_id, existing.info.experiment_id)
        log.warning("MLflow run %s not found in %s; starting a new run", run_id, uri)
    location = artifact_location or default_artifact_location(uri)
    experiment_id = retry(lambda: _experiment_id(client, experiment, location), "experiment")
    run_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    run = retry(
        lambda: client.create_run(experiment_id, run_name=run_name, tags=run_tags), "create run"
    )
    return TrackingRun(client, uri, run.info.run_id, experiment_id)


def try_start_run(
    uri: str | None, experiment: str, run_name: str | None = None, **options: Any
) -> TrackingRun | NullRun:
    """:func:`start_run`, but a store it cannot reach (or that fails) gives a :class:`NullRun`
    and a warning: a training goes on without tracking rather than fail."""
    try:
        return start_run(uri, experiment, run_name, **options)
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001
        log.warning(
            "MLflow: could not open a run in %s (%s); going on without tracking (the run's files "
            "keep everything; `octopi select-best` copies a study's trials in later)",
            uri,
            error,
        )
        return NullRun()


def find_run(uri: str, run_ids: Iterable[str | None]) -> str | None:
    """The first of ``run_ids`` that the store at ``uri`` holds (None: none of them).

    Raises when the store cannot be reached, so "not there" is never mistaken for "no answer".
    """
    client = _client(uri)
    for run_id in dict.fromkeys(r for r in run_ids if r):
        if retry(lambda r=run_id: _find_run(client, r), "get run") is not None:
            return run_id
    return None


def _find_run(client, run_id: str):
    try:
        return client.get_run(run_id)
    except Exception as error:
        if "not found" in str(error).lower() or "does not exist" in str(error).lower():
            return None
        raise


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
