"""`octopi model-explore` runs the study's MLflow server (a real ``mlflow server`` on
127.0.0.1; Snakemake is faked): started before the workflow, its URI in the workflow's
environment, stopped at the end; ``--resume`` stops one a killed head left and starts a new
one on the study's port. A server start takes 5-15 s here, so this test is slow.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from click.testing import CliRunner

from octopi import gpu_slots, study_tracking, tracking_server, workflow_runner
from octopi.cli import main
from octopi.tracking_server import TrackingServer, answers, read_record

LOCAL = {"host": "127.0.0.1", "bind": "127.0.0.1"}


def group_gone(group: int) -> bool:
    """No live process is left in the process group ``group`` (a server and its worker)."""

    def member(process: psutil.Process) -> bool:
        try:
            return os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE
        except (OSError, psutil.Error):
            return False

    return not any(member(p) for p in psutil.process_iter())


@pytest.fixture
def fake_snakemake(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Snakemake replaced: each call records its environment and whether the URI answered."""
    calls: list[dict] = []

    def fake_run(args, env=None):
        uri = (env or {}).get(study_tracking.TRACKING_URI_ENV)
        calls.append({"args": list(args), "uri": uri, "answers": bool(uri) and answers(uri)})
        return 0

    monkeypatch.setattr(workflow_runner, "run_snakemake", fake_run)
    monkeypatch.setattr(gpu_slots, "list_gpus", lambda environ=None: [])
    return calls


@pytest.mark.slow
def test_model_explore_runs_the_server_for_the_study_and_resume_restarts_it(
    fake_snakemake, tmp_path: Path
) -> None:
    study = tmp_path / "s"
    base = tmp_path / "study.yaml"
    (tmp_path / "copick.json").write_text("{}\n")
    base.write_text(
        yaml.safe_dump(
            {
                "data": {"configs": [{"path": "copick.json"}]},
                "tracking": {
                    "server": True,
                    "server_host": "127.0.0.1",
                    "server_bind": "127.0.0.1",
                },
            }
        )
    )
    result = CliRunner().invoke(
        main, ["model-explore", "--study-config", str(base), "--output", str(study)]
    )
    assert result.exit_code == 0, result.output
    run, report = fake_snakemake
    assert run["uri"] and run["answers"] and run["uri"] == report["uri"]
    assert f"MLflow server  {run['uri']}" in result.output
    assert "ssh -L 5000:127.0.0.1:" in result.output
    first = read_record(study)
    assert first["uri"] == run["uri"] and first["stopped"] and not answers(run["uri"])
    assert group_gone(first["pid"])

    # A head killed with its server still running: the next run stops that one first.
    orphan = TrackingServer(study, **LOCAL)
    orphan.start(watch=False)
    dead_owner = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                capture_output=True, text=True, check=True)  # fmt: skip
    record = read_record(study)
    record.update(owner_pid=int(dead_owner.stdout), owner_started=0.0)
    tracking_server.atomic_write_json(study / tracking_server.SERVER_RECORD, record)
    fake_snakemake.clear()
    result = CliRunner().invoke(main, ["model-explore", "--output", str(study), "--resume"])
    assert result.exit_code == 0, result.output
    assert group_gone(orphan.process.pid)
    unlock, run, report = fake_snakemake
    assert "--unlock" in unlock["args"] and run["answers"]
    assert run["uri"] == first["uri"]  # the study's port again
    assert read_record(study)["pid"] not in (first["pid"], orphan.process.pid)
    assert not answers(run["uri"])
    orphan.process.wait()


def test_the_job_commands_take_the_server_uri_from_the_environment() -> None:
    from octopi.cli.search_cmds import explore_trial, select_best

    for command in (explore_trial, select_best):
        [option] = [p for p in command.params if p.name == "tracking_uri"]
        assert option.envvar == study_tracking.TRACKING_URI_ENV


def test_a_server_that_cannot_start_stops_the_command_before_snakemake(
    fake_snakemake, tmp_path: Path
) -> None:
    (tmp_path / "copick.json").write_text("{}\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        tracking = {"server": True, "server_port": port, "server_bind": "127.0.0.1"}
        base = tmp_path / "study.yaml"
        base.write_text(
            yaml.safe_dump({"data": {"configs": [{"path": "copick.json"}]}, "tracking": tracking})
        )
        result = CliRunner().invoke(
            main, ["model-explore", "--study-config", str(base), "--output", str(tmp_path / "s")]
        )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"MLflow server did not start: port {port} is in use" in result.output
    assert "tracking.server: false" in result.output
    assert fake_snakemake == []
