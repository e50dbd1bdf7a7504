"""MLflow tracking helpers: off switch, nested runs, resume, concurrent processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from octopi import tracking, tracking_calls
from octopi.search import storage


def test_none_turns_tracking_off(tmp_path: Path) -> None:
    run = tracking.start_run("none", "study")
    assert isinstance(run, tracking.NullRun) and run.run_id is None
    run.log_params({"a": 1})
    run.log_metrics({"loss": 1.0}, step=1)
    tracking.end_run(run, "FINISHED")
    assert tracking.tracking_disabled("OFF") and not tracking.tracking_disabled(None)


def test_default_locations_sit_beside_the_database(tmp_path: Path) -> None:
    uri = tracking.default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.default_artifact_location(uri) == str(tmp_path.resolve() / "mlruns")
    assert tracking.default_artifact_location("http://server:5000") is None


def test_flatten_params() -> None:
    nested = {"training": {"lr": 0.1, "loss": {"name": "tversky"}}, "data": {"runs": ["a", "b"]}}
    assert tracking.flatten_params(nested) == {
        "training.lr": 0.1,
        "training.loss.name": "tversky",
        "data.runs": "a,b",
    }
    assert tracking.flatten_params({"configs": [{"path": "x"}]}) == {"configs.0.path": "x"}


def test_parent_and_nested_runs_resume_and_status(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = tracking.default_tracking_uri(tmp_path)
    parent = tracking.start_run(uri, "study", "study-run", tags={"kind": "study"})
    with pytest.raises(ValueError, match="parent_run_id"):
        tracking.start_run(uri, "study", "trial", nested=True)
    child = tracking.start_run(uri, "study", "trial-0", nested=True, parent_run_id=parent.run_id)
    child.log_params({"lr": 0.01, "long": "x" * 7000})
    child.log_metrics({"loss": 0.5, "skipped": None}, step=3)
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    child.log_artifacts([artifact, tmp_path / "missing.txt"], "notes")
    tracking.end_run(child, "KILLED")

    resumed = tracking.start_run(uri, "study", run_id=child.run_id)
    assert resumed.run_id == child.run_id
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(child.run_id).info.status == "RUNNING"
    tracking.end_run(resumed, "FINISHED")
    tracking.end_run(parent)

    run = client.get_run(child.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.params["lr"] == "0.01" and len(run.data.params["long"]) == 6000
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [
        (3, 0.5)
    ]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notes")] == ["notes/note.txt"]
    assert (tmp_path / "mlruns").is_dir()
    with pytest.raises(ValueError, match="unknown run status"):
        tracking.end_run(resumed, "DONE")


@pytest.mark.slow
def test_concurrent_processes_share_a_new_sqlite_store(tmp_path: Path) -> None:
    uri = tracking.default_tracking_uri(tmp_path)
    script = (
        "import sys; from octopi import tracking\n"
        "run = tracking.start_run(sys.argv[1], 'study', 'trial-' + sys.argv[2])\n"
        "run.log_params({'slot': sys.argv[2]})\n"
        "for step in range(10): run.log_metrics({'loss': 1.0 / (step + 1)}, step=step)\n"
        "run.end('FINISHED')\n"
    )
    jobs = [
        subprocess.Popen([sys.executable, "-c", script, uri, str(i)], stderr=subprocess.PIPE)
        for i in range(4)
    ]
    for job in jobs:
        _, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr.decode()[-2000:]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("study")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["slot"] for r in runs) == ["0", "1", "2", "3"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 10


# --------------------------------------------------------------------------- an unreachable store


class DeadServerClient:
    """An MlflowClient whose server is down: every call waits, then is refused."""

    def __init__(self, wait_s: float = 0.3):
        self.wait_s, self.calls, self.up = wait_s, 0, False

    def log_batch(self, run_id, metrics=(), params=()):
        self.calls += 1
        if not self.up:
            time.sleep(self.wait_s)
            raise ConnectionError("Connection refused")

    def set_terminated(self, run_id, status):
        self.log_batch(run_id)


def test_logging_never_waits_for_a_dead_server_and_pauses_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracking_calls, "PAUSE_S", 0.5)
    client = DeadServerClient()
    run = tracking.TrackingRun(client, "http://head:5000", "run0", "1")
    start = time.perf_counter()
    for step in range(50):
        run.log_metrics({"loss": 1.0}, step=step)
    assert time.perf_counter() - start < 0.2  # the training thread never waits
    assert run.flush(timeout_s=5)
    assert client.calls == 1 and run.failures == 50  # one refusal, then skipped: no stall
    time.sleep(0.6)  # the pause is over; the server is back
    client.up = True
    run.log_metrics({"loss": 0.5}, step=50)
    run.end("FINISHED")
    assert client.calls == 3 and run.failures == 50


def test_an_unreachable_server_gives_a_null_run_at_once(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{probe.getsockname()[1]}"
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="not reachable"):
        tracking.start_run(uri, "study")
    run = tracking.try_start_run(uri, "study", "trial")
    assert isinstance(run, tracking.NullRun) and run.run_id is None
    assert storage.study_parent_run(tmp_path, uri, "study") is None  # no record either
    assert not (tmp_path / storage.PARENT_RUN_NAME).exists()
    assert time.perf_counter() - start < 5
    assert tracking_calls.unreachable(
        RuntimeError("API request to http://h:1/api failed with exception Max retries exceeded")
    )
    assert not tracking_calls.unreachable(RuntimeError("INVALID_PARAMETER_VALUE: bad metric"))


def test_the_parent_run_is_found_whatever_uri_reaches_its_store(tmp_path: Path) -> None:
    uri = tracking.default_tracking_uri(tmp_path)
    parent = storage.study_parent_run(tmp_path, uri, "study")
    other_spelling = f"sqlite:///{tmp_path.resolve()}/./mlflow.db"  # e.g. a restarted server
    assert storage.study_parent_run(tmp_path, other_spelling, "study") == parent
    records = json.loads((tmp_path / storage.PARENT_RUN_NAME).read_text())
    assert records == {uri: parent, other_spelling: parent}
    elsewhere = tmp_path / "other"  # another store has not got that run: a new parent there
    other_parent = storage.study_parent_run(
        tmp_path, tracking.default_tracking_uri(elsewhere), "study"
    )
    assert other_parent not in (None, parent)
