"""The backfill: a trial's MLflow run completed from the trial's own files, idempotently; a
training whose tracking server is down trains on, and its run reaches MLflow later."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from tracking_worker import epoch_row, finished_trial

from octopi import tracking
from octopi.search import storage
from octopi.search.tracking_sync import epoch_points, sync_trial_run
from octopi.training.outputs import write_epochs_csv


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_partly_logged_run_is_completed_from_the_files_once(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = tracking.default_tracking_uri(tmp_path)
    folder = tmp_path / "trials" / "3"
    folder.mkdir(parents=True)
    rows = [epoch_row(3, epoch) for epoch in range(1, 7)]
    write_epochs_csv(folder / "epochs.csv", rows)
    (folder / "train_config.yaml").write_text(
        yaml.safe_dump({"command": "train", "training": {"lr": 0.01, "num_epochs": 6}})
    )
    (folder / "model_config.yaml").write_text("model_type: Unet\n")
    (folder / "best_model_weights.pth").write_bytes(b"weights")
    parent = storage.study_parent_run(tmp_path, uri, "study")
    # The server went down after epoch 2: the run has 2 epochs, no params, and it is RUNNING.
    run = tracking.start_run(uri, "study", "slot-003", parent_run_id=parent)
    for row in rows[:2]:
        run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    run.flush()
    tracking.write_run_record(folder, {"run_id": run.run_id, "tracking_uri": uri})

    trial = finished_trial(3)
    assert sync_trial_run(uri, "study", folder, 3, parent_run_id=parent, trial=trial, metric="f")
    client = MlflowClient(tracking_uri=uri)
    done = client.get_run(run.run_id)
    assert done.info.status == "FINISHED"
    assert done.data.params["training.lr"] == "0.01" and done.data.params["optuna.lr"] == "0.004"
    assert done.data.metrics["best_f"] == pytest.approx(0.53)
    assert done.data.tags["optuna.state"] == "COMPLETE"
    assert history(client, run.run_id, "train_loss") == [
        (r["epoch"], r["train_loss"]) for r in rows
    ]
    assert [s for s, _ in history(client, run.run_id, "val_avg_f1")] == [2, 4, 6]
    model = {a.path for a in client.list_artifacts(run.run_id, "model")}
    assert model == {"model/model_config.yaml", "model/best_model_weights.pth"}
    assert tracking.read_run_record(folder)["synced_uri"] == uri

    # Again, with the "synced" mark gone: nothing is logged twice.
    tracking.write_run_record(folder, {"run_id": run.run_id, "tracking_uri": uri})
    assert sync_trial_run(uri, "study", folder, 3, parent_run_id=parent, trial=trial, metric="f")
    assert len(history(client, run.run_id, "train_loss")) == 6
    assert len(history(client, run.run_id, "best_f")) == 1
    assert len(client.search_runs([done.info.experiment_id])) == 2  # parent + this one


def test_epoch_points_skip_empty_cells(tmp_path: Path) -> None:
    write_epochs_csv(tmp_path / "epochs.csv", [epoch_row(0, 1), epoch_row(0, 2)])
    assert epoch_points(tmp_path / "epochs.csv") == [
        ("train_loss", 1.0, 1),
        ("lr", 0.001, 1),
        ("train_loss", 0.5, 2),
        ("lr", 0.001, 2),
        ("val_avg_f1", 0.02, 2),
    ]
    assert epoch_points(tmp_path / "missing.csv") == []


def test_a_training_whose_server_is_down_trains_on_and_is_filled_in_later(
    tiny_project, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    with socket.socket() as probe:  # a server that is down
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    output = tmp_path / "trials" / "0"
    result = tiny_train(tiny_project, output, down, epochs=2)
    assert result.epochs_completed == 2 and result.tracking_run_id is None
    assert not (output / tracking.RUN_RECORD_NAME).exists()

    uri = tracking.default_tracking_uri(tmp_path)  # the store, reachable again
    parent = storage.study_parent_run(tmp_path, uri, "study")
    assert sync_trial_run(uri, "study", output, 0, parent_run_id=parent, trial=finished_trial(0))
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(tracking.read_run_record(output)["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "slot-000"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["training.num_epochs"] == "2"
    assert [s for s, _ in history(client, run.info.run_id, "train_loss")] == [1, 2]
    assert len(history(client, run.info.run_id, "val_avg_f1")) == 2
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"epochs.csv", "curves.png", "train_config.yaml", "result.json", "model"} <= top


def test_a_training_resumed_through_another_uri_of_its_store_keeps_its_run(
    tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial whose server was restarted on another port (or which reaches the same store
    another way) continues its run: the run is looked up by id, not by URI."""
    from mlflow import MlflowClient

    from octopi.training.loop import TrainingLoop

    def node_dies(self, *args, **kwargs):  # before the first checkpoint
        raise SystemExit("node failure")

    output = tmp_path / "trials" / "0"
    first_uri = tracking.default_tracking_uri(tmp_path)
    real_run = TrainingLoop.run
    monkeypatch.setattr(TrainingLoop, "run", node_dies)
    with pytest.raises(SystemExit):
        tiny_train(tiny_project, output, first_uri)
    monkeypatch.setattr(TrainingLoop, "run", real_run)
    second_uri = f"sqlite:///{tmp_path.resolve()}/./mlflow.db"
    result = tiny_train(tiny_project, output, second_uri)

    client = MlflowClient(tracking_uri=first_uri)
    runs = client.search_runs([client.get_experiment_by_name("octopi-train").experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(result.tracking_run_id, "FINISHED")]


def tiny_train(project, output: Path, uri: str, epochs: int = 1):
    """Train the tiny U-Net on the tiny project into ``output``, tracking to ``uri``."""
    from octopi.config import (
        DataConfig,
        EvaluationConfig,
        InferenceConfig,
        LocalizeConfig,
        TrainingConfig,
        UnetConfig,
    )
    from octopi.training.trainer import train_model

    return train_model(
        DataConfig(configs=[project.source], voxel_size_angstrom=project.voxel_size_angstrom),
        TrainingConfig(num_epochs=epochs, val_interval=1, batch_size=2, dim_in=16),
        UnetConfig(channels=[8, 16, 32], strides=[2, 2]),
        output,
        inference=InferenceConfig(),
        localize=LocalizeConfig(),
        evaluation=EvaluationConfig(),
        tracking_uri=uri,
        show_progress=False,
    )
