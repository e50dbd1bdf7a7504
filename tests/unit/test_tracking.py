"""MLflow tracking helpers: off switch, nested runs, resume, concurrent processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from octopi import tracking


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
    tracking.log_params(child, {"lr": 0.01, "long": "x" * 7000})
    tracking.log_metrics(child, {"loss": 0.5, "skipped": None}, step=3)
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    tracking.log_artifacts(child, [artifact, tmp_path / "missing.txt"], "notes")
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
