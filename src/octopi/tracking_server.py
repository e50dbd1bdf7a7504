"""The study's MLflow tracking server, which ``octopi model-explore`` runs on the head node.

Why: on a cluster, trial jobs on many nodes would all write the study's SQLite store
(``STUDY/mlflow.db``) over the shared filesystem, where NFS and Lustre locking is not reliable
enough for SQLite (a corrupted store, not only "database is locked"). Instead the head node
runs one ``mlflow server``, the only process that opens that file, and the jobs log over HTTP.

- Store: ``--backend-store-uri sqlite:///STUDY/mlflow.db``, one uvicorn worker, MLflow's job
  runner off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``): one process holds the database.
- Artifacts: ``--default-artifact-root STUDY/mlruns --no-serve-artifacts``. The jobs write
  artifacts into the study folder themselves (it is on the shared filesystem), so no model
  file travels through the server, and artifacts land even while it is down.
- Address: listens on ``tracking.server_bind`` (all interfaces by default) at a free port
  (the study's previous port when free); the jobs reach it at
  ``http://<tracking.server_host, default: this host's name>:<port>``, a name MLflow's Host
  header check (DNS-rebinding protection) is told to accept.
- The jobs learn the URI from the environment Snakemake passes on (``OCTOPI_TRACKING_URI``,
  read by ``octopi explore-trial`` and ``select-best``), not from ``config.yaml``: a port in
  the config or in rule params would make Snakemake rerun finished trials.
- ``STUDY/mlflow_server.json`` records PID, host, port, URI and the process that owns it;
  the server's log is ``STUDY/logs/mlflow_server.log``. A watchdog restarts a server that dies
  while the study runs, on the same port (the jobs keep their URI).
- Stopped (SIGTERM to its process group, then SIGKILL) when model-explore ends; if the head is
  killed, the kernel stops it too (Linux: parent-death signal). A server left behind anyway
  is stopped by the next run of the study (``--resume``) before it starts its own.

When a study gets a server, and what model-explore tells the user: :mod:`octopi.study_tracking`.
A trial never depends on the server: see :mod:`octopi.tracking_calls` and
:mod:`octopi.search.tracking_sync`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from octopi.io_utils import atomic_write_json

log = logging.getLogger(__name__)

SERVER_RECORD = "mlflow_server.json"
SERVER_LOG = "logs/mlflow_server.log"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
WATCH_INTERVAL_S = 5.0
# MLflow 3's default Host-header allow list (localhost and private networks), which
# MLFLOW_SERVER_ALLOWED_HOSTS replaces; the advertised name is added to it.
_DEFAULT_ALLOWED = ("localhost", "127.0.0.1", "0.0.0.0", "10.*", "192.168.*") + tuple(
    f"172.{i}.*" for i in range(16, 32)
)


# Runs the rest of its arguments as `python ...`, asking the kernel first to SIGTERM it when
# the process that started it dies (Linux PR_SET_PDEATHSIG, which survives exec): a head that
# is killed (kill -9, a lost SSH session) leaves no server behind on the login node. The
# mlflow CLI passes SIGTERM on to its uvicorn worker.
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass  # not Linux: --resume stops a server left behind
if os.getppid() != int(sys.argv[1]):
    sys.exit("the process that started the MLflow server is gone")
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


class ServerStartError(RuntimeError):
    """The MLflow server did not come up (the message holds the end of its log)."""


def advertised_host(configured: str | None = None) -> str:
    """The name jobs reach this machine at: ``configured``, else its fully qualified name,
    else its host name (``getfqdn`` says ``localhost`` where the name maps to 127.0.0.1)."""
    if configured:
        return configured
    fqdn = socket.getfqdn()
    return fqdn if "." in fqdn and not fqdn.startswith("localhost") else socket.gethostname()


def _port_free(bind: str, port: int) -> int | None:
    """``port`` (0: any) if it can be bound on ``bind`` now, else None."""
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((bind, port))
        except OSError:
            return None
        return probe.getsockname()[1]


def same_process(pid: Any, started: Any) -> bool:
    """Whether process ``pid`` runs and is the one started at ``started`` (epoch seconds)."""
    import psutil

    try:
        process = psutil.Process(int(pid))
        return (
            abs(process.create_time() - float(started)) < 1
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, TypeError, ValueError):
        return False


def _started_at(pid: int) -> float | None:
    import psutil

    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).create_time()
    return None


def _get(url: str, timeout_s: float = 3.0) -> int:
    """HTTP status of GET ``url`` (no proxy: the server is on the cluster's own network)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def answers(uri: str, timeout_s: float = 3.0) -> bool:
    """Whether an MLflow server answers its health check at ``uri``."""
    try:
        return _get(f"{uri}/health", timeout_s) == 200
    except OSError:
        return False


def read_record(study_dir: str | Path) -> dict[str, Any]:
    try:
        record = json.loads((Path(study_dir) / SERVER_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def stop_process_group(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the process group led by ``pid`` (the server and its uvicorn worker), then
    SIGKILL for what is left after ``timeout_s``."""
    import psutil

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        members = [p for p in psutil.process_iter() if _in_group(p, pid)]
        if not members:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _in_group(process: Any, group: int) -> bool:
    import psutil

    try:
        return os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE
    except (OSError, psutil.Error):
        return False


class TrackingServer:
    """One ``mlflow server`` for the study in ``study_dir`` (see the module docstring)."""

    def __init__(self, study_dir: str | Path, host: str | None, bind: str, port: int = 0):
        self.study_dir = Path(study_dir).resolve()
        self.host = advertised_host(host)
        self.bind = bind
        self.port = port
        self.process: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, watch: bool = True) -> str:
        """Start the server (on the study's previous port when free), wait until it answers,
        write ``mlflow_server.json``; with ``watch`` restart it whenever it dies until
        :meth:`stop`. Returns its URI; raises :class:`ServerStartError`."""
        configured, previous = self.port, read_record(self.study_dir).get("port")
        for attempt in range(3):  # a free port can be taken before the server binds it
            candidates = [configured] if configured else [previous if attempt == 0 else None, 0]
            ports = (_port_free(self.bind, int(c)) for c in candidates if c is not None)
            port = next((p for p in ports if p is not None), None)
            if port is None:
                raise ServerStartError(
                    f"port {configured} is in use on {self.bind}: set tracking.server_port to a "
                    "free port, or 0 for any"
                )
            self.port = port
            try:
                self._launch()
                break
            except ServerStartError as error:
                if configured or attempt == 2 or "address already in use" not in str(error).lower():
                    raise
        if watch:
            self._watchdog = threading.Thread(target=self._watch, name="mlflow-server", daemon=True)
            self._watchdog.start()
        return self.uri

    def _launch(self) -> None:
        from octopi.tracking import default_artifact_location, default_tracking_uri

        backend = default_tracking_uri(self.study_dir)
        command = [
            sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), "-m", "mlflow", "server",
            "--backend-store-uri", backend,
            "--default-artifact-root", str(default_artifact_location(backend)),
            "--no-serve-artifacts",
            "--host", self.bind,
            "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        allowed = (self.host, f"{self.host}:*", *_DEFAULT_ALLOWED, "localhost:*", "127.0.0.1:*")
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_SERVER_ALLOWED_HOSTS": ",".join(dict.fromkeys(allowed)),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        log_path = self.study_dir / SERVER_LOG
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            # Its own session: Ctrl-C in the head's terminal does not stop it while Snakemake
            # still cancels jobs that log to it; stop() ends the whole group.
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.study_dir,
                env=env,
                start_new_session=True,
            )
        try:
            self._wait_ready(log_path)
        except BaseException:
            stop_process_group(self.process.pid)
            raise
        atomic_write_json(
            self.study_dir / SERVER_RECORD,
            {
                "uri": self.uri,
                "host": socket.gethostname(),
                "bind": self.bind,
                "port": self.port,
                "pid": self.process.pid,
                "started": _started_at(self.process.pid),
                "owner_pid": os.getpid(),
                "owner_started": _started_at(os.getpid()),
                "backend_store_uri": backend,
                "log": str(log_path),
            },
        )

    def _wait_ready(self, log_path: Path) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"mlflow server stopped with status {self.process.returncode} at start "
                    f"(port {self.port}):\n{_tail(log_path)}"
                )
            if answers(self.uri, timeout_s=2.0):
                break
            time.sleep(0.25)
        else:
            raise ServerStartError(
                f"mlflow server did not answer at {self.uri} within {START_TIMEOUT_S:g} s; if "
                f"this machine is not reachable as {self.host!r}, set tracking.server_host. "
                f"Its log:\n{_tail(log_path)}"
            )
        # /health skips MLflow's Host header check; an API call does not.
        status = _get(f"{self.uri}/api/2.0/mlflow/experiments/search?max_results=1", 30.0)
        if status != 200:
            raise ServerStartError(
                f"mlflow server at {self.uri} answers its API with HTTP {status}:\n"
                + _tail(log_path)
            )

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            process = self.process
            if process is None or process.poll() is None:
                continue
            log.warning(
                "MLflow server (PID %d) stopped with status %s; restarting it at %s",
                process.pid,
                process.returncode,
                self.uri,
            )
            try:
                stop_process_group(process.pid, timeout_s=5.0)  # its worker, if left
                self._launch()
            except (OSError, ServerStartError) as error:
                log.warning("MLflow server restart failed (trying again): %s", error)

    def stop(self) -> None:
        """Stop the watchdog and the server (its whole process group); note it in the record."""
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join()
        if self.process is None:
            return
        stop_process_group(self.process.pid)
        self.process.wait()
        record = read_record(self.study_dir)
        if record.get("pid") == self.process.pid:
            atomic_write_json(self.study_dir / SERVER_RECORD, {**record, "stopped": time.time()})


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} could not be read)"
