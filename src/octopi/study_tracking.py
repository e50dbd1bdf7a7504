"""Where a study's trials send their MLflow data, and the server ``octopi model-explore``
runs for them (:class:`StudyTracking`).

- ``tracking.uri`` set: the trials use that URI (``none``: no tracking); no server.
- Else, with a cluster profile (or ``tracking.server: true``): an ``mlflow server`` on this
  (head) node, the only writer of ``STUDY/mlflow.db`` (:mod:`octopi.tracking_server`); the jobs
  get its URI in ``OCTOPI_TRACKING_URI``. One that an earlier run left is stopped first (its
  head was killed) or reused (its head still runs: two servers would be two writers).
- Else (local runs): the trials write ``STUDY/mlflow.db`` directly, as before.
"""

from __future__ import annotations

import getpass
import ipaddress
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from octopi.tracking_server import (
    SERVER_LOG,
    SERVER_RECORD,
    ServerStartError,
    TrackingServer,
    answers,
    read_record,
    same_process,
    stop_process_group,
)

if TYPE_CHECKING:
    from octopi.config import TrackingConfig

log = logging.getLogger(__name__)

TRACKING_URI_ENV = "OCTOPI_TRACKING_URI"


def _loopback_only(host: str) -> bool:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def take_over_previous(study_dir: Path) -> str | None:
    """Deal with a server an earlier run of the study left: return the URI of one that still
    serves another live run of the study (reuse it: a second server would be a second writer),
    after stopping one whose owner is gone (a killed head); None when none runs."""
    record = read_record(study_dir)
    if not record or record.get("stopped"):
        return None
    if record.get("host") == socket.gethostname():
        if not same_process(record.get("pid"), record.get("started")):
            return None
        owner_alive = same_process(record.get("owner_pid"), record.get("owner_started"))
        if owner_alive and record.get("owner_pid") != os.getpid():
            return record["uri"]
        log.warning("stopping the MLflow server (PID %s) left by an earlier run", record["pid"])
        stop_process_group(int(record["pid"]))
        return None
    if record.get("uri") and answers(record["uri"]):
        log.warning(
            "the MLflow server started on %s (PID %s) still answers at %s; the study uses it "
            "(stop it there when the study is over)",
            record.get("host"),
            record.get("pid"),
            record["uri"],
        )
        return record["uri"]
    return None


class StudyTracking:
    """Where a study's trials track, and the server model-explore runs for it (a context
    manager: started on entry, stopped on exit).

    ``settings.uri`` set: that URI, no server (``none``: no tracking). Else a server when
    ``settings.server`` says so (None: with a cluster profile), else the study's SQLite file,
    which local trials write directly.
    """

    def __init__(self, study_dir: str | Path, settings: TrackingConfig, cluster: bool):
        self.study_dir = Path(study_dir).resolve()
        self.settings, self.cluster = settings, cluster
        wanted = cluster if settings.server is None else settings.server
        self.wants_server = settings.uri is None and wanted
        self.server: TrackingServer | None = None
        self.uri: str | None = settings.uri  # None: the study's SQLite file

    def __enter__(self) -> StudyTracking:
        if not self.wants_server:
            return self
        self.uri = take_over_previous(self.study_dir)
        if self.uri is not None:
            return self
        settings = self.settings
        server = TrackingServer(
            self.study_dir, settings.server_host, settings.server_bind, settings.server_port
        )
        try:
            self.uri = server.start()
        except ServerStartError as error:
            raise click.ClickException(
                f"the study's MLflow server did not start: {error}\n(or run without one: "
                "tracking.server: false, or tracking.uri: none or an existing server's URI)"
            ) from error
        self.server = server
        if self.cluster and _loopback_only(server.host):
            log.warning(
                "%s resolves to a loopback address here: jobs on other nodes cannot reach the "
                "MLflow server; set tracking.server_host to this node's name on the cluster "
                "network",
                server.host,
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def environment(self, env: Mapping[str, str] | None) -> dict[str, str] | None:
        """``env`` (None: this process's) with the server's URI for the jobs, and its host
        exempt from HTTP proxies; ``env`` unchanged without a server."""
        if not self.wants_server or self.uri is None:
            return None if env is None else dict(env)
        environment = dict(os.environ if env is None else env)
        environment[TRACKING_URI_ENV] = self.uri
        host = self.uri.split("://", 1)[1].rsplit(":", 1)[0]
        for name in ("no_proxy", "NO_PROXY"):
            environment[name] = ",".join(filter(None, [environment.get(name), host]))
        return environment

    def describe(self) -> str:
        """Where the study's MLflow data is and how to open the UI (for the start banner)."""
        database, mlruns = self.study_dir / "mlflow.db", self.study_dir / "mlruns"
        if self.settings.uri is not None:
            return f"  MLflow         {self.settings.uri} (tracking.uri)"
        if self.wants_server:
            where = self.uri or "starts with the study"
            host, _, port = (self.uri or "http://HOST:PORT").split("://", 1)[1].rpartition(":")
            login = f"{getpass.getuser()}@{socket.gethostname()}"
            return (
                f"  MLflow server  {where}, on the store {database}; the trials log to it\n"
                f"      its log {self.study_dir / SERVER_LOG}\n"
                f"      its PID, host and port {self.study_dir / SERVER_RECORD}\n"
                f"      UI: on your computer ssh -L 5000:{host}:{port} {login},\n"
                "      then open http://127.0.0.1:5000"
            )
        return (
            f"  MLflow store   {database} and {mlruns}\n"
            f"      mlflow ui --backend-store-uri sqlite:///{database}   → http://127.0.0.1:5000\n"
            "      on a remote machine: ssh -L 5000:localhost:5000 user@login-node on your "
            "computer,\n      then start mlflow ui (--port 5000) there and open "
            "http://127.0.0.1:5000"
        )
