"""`train_model`: outputs, MLflow, exact resume, fine-tuning, best checkpoint, early stopping."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from octopi.config import (
    DataConfig,
    EvaluationConfig,
    InferenceConfig,
    LocalizeConfig,
    TrainingConfig,
    UnetConfig,
)
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import load_model
from octopi.training.trainer import OUTPUT_FILES, TrainingInterrupted, TrainResult, train_model

TINY_ARCH = UnetConfig(channels=[8, 16, 32], strides=[2, 2])
SETTINGS = {
    "inference": InferenceConfig(),
    "localize": LocalizeConfig(),
    "evaluation": EvaluationConfig(),
    "show_progress": False,
}


def tiny_training(**overrides) -> TrainingConfig:
    values = {"num_epochs": 3, "val_interval": 1, "batch_size": 2, "dim_in": 16}
    values.update(warmup_epochs=1, seed=7)
    return TrainingConfig(**(values | overrides))


def tiny_data(project, **overrides) -> DataConfig:
    return DataConfig(
        configs=[project.source], voxel_size_angstrom=project.voxel_size_angstrom, **overrides
    )


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny networks: threads only add overhead (and stall badly on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tiny_project, tmp_path_factory) -> TrainResult:
    """3 epochs, validation every epoch, default MLflow store in the output folder."""
    output = tmp_path_factory.mktemp("trained") / "run"
    return train_model(
        tiny_data(tiny_project), tiny_training(), TINY_ARCH, output, tracking_uri=None, **SETTINGS
    )


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- outputs


def test_outputs_are_complete_and_well_formed(trained: TrainResult, tiny_project) -> None:
    folder = trained.output_dir
    for name in OUTPUT_FILES.values():
        assert (folder / name).is_file(), name
    assert not list(folder.glob(".*.tmp")), "a temporary file was left behind"
    assert trained.epochs_completed == 3 and not trained.stopped_early
    assert trained.best_epoch in (1, 2, 3) and 0.0 <= trained.best_metric <= 1.0

    with open(folder / "epochs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    for row in rows:
        assert float(row["train_loss"]) > 0 and float(row["patches_per_s"]) > 0
        assert 0 < float(row["lr"]) <= 1e-3
        assert 0.0 <= float(row["val_avg_f1"]) <= 1.0
        assert "val_f1_ribosome" in row and "val_weighted_fbeta" in row

    result = json.loads((folder / "result.json").read_text())
    assert result["epochs_completed"] == 3 and result["best_metric_name"] == "avg_f1"
    assert result["paths"]["best_weights"] == "best_model_weights.pth"
    assert result["best_validation"]["avg_f1"] == result["best_metric"]

    card = ModelCard.load(folder / "model_config.yaml")
    assert card.dim_in == 16 and card.voxel_size_angstrom == tiny_project.voxel_size_angstrom
    assert card.architecture == TINY_ARCH and card.tomo_algorithms == ["wbp"]
    assert [c.label for c in card.classes] == sorted(c.label for c in card.classes)
    model = load_model(card, folder / "best_model_weights.pth")
    assert model(torch.zeros(1, 1, 16, 16, 16)).shape == (1, card.out_channels, 16, 16, 16)

    checkpoint = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 3 and checkpoint["finished"]
    assert len(checkpoint["history"]) == 3 and checkpoint["ema"] is not None
    assert {"optimizer", "schedule", "scaler", "rng", "config"} <= checkpoint.keys()
    assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    resolved = yaml.safe_load((folder / "train_config.yaml").read_text())
    assert resolved["command"] == "train"
    assert sorted(resolved["split"]["train"] + resolved["split"]["validate"]) == sorted(
        tiny_project.run_names
    )
    assert resolved["training"]["num_epochs"] == 3


def test_mlflow_store_holds_the_run(trained: TrainResult) -> None:
    from mlflow import MlflowClient

    folder = trained.output_dir
    assert (folder / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    run = client.get_run(trained.tracking_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.lr"] == "0.001"
    assert run.data.params["architecture.channels"] == "8,16,32"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert len(client.get_metric_history(run.info.run_id, "val_avg_f1")) == 3
    model_files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert model_files == {"model/model_config.yaml", "model/best_model_weights.pth"}
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"epochs.csv", "curves.png", "result.json", "train_config.yaml"} <= top
    # Artifacts live beside the store, not under the working directory.
    assert (folder / "mlruns").is_dir() and not Path("mlruns").exists()


# --------------------------------------------------------------------------- resume


def test_a_run_killed_before_its_first_checkpoint_keeps_one_mlflow_run(
    tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from octopi.training.loop import TrainingLoop

    output, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    real_run = TrainingLoop.run

    def node_dies(self, *args, **kwargs):  # before any epoch (so before any checkpoint)
        raise SystemExit("node failure")

    monkeypatch.setattr(TrainingLoop, "run", node_dies)
    args = (tiny_data(tiny_project), tiny_training(num_epochs=1), TINY_ARCH, output)
    with pytest.raises(SystemExit):
        train_model(*args, tracking_uri=uri, **SETTINGS)
    assert not (output / "checkpoint.pt").exists()
    monkeypatch.setattr(TrainingLoop, "run", real_run)
    result = train_model(*args, tracking_uri=uri, **SETTINGS)

    client = MlflowClient(tracking_uri=uri)
    [experiment] = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([experiment.experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(result.tracking_run_id, "FINISHED")]


def test_killed_and_resumed_run_ends_with_identical_weights(
    trained: TrainResult, tiny_project, tmp_path: Path
) -> None:
    output = tmp_path / "resumed"
    seen: list[tuple[int, dict]] = []

    def stop_after_epoch_2(epoch: int, metrics: dict) -> None:
        seen.append((epoch, metrics))
        if epoch == 2:
            raise TrainingInterrupted("simulated kill")

    data, training = tiny_data(tiny_project), tiny_training()
    with pytest.raises(TrainingInterrupted):
        train_model(
            data,
            training,
            TINY_ARCH,
            output,
            tracking_uri="none",
            on_validation=stop_after_epoch_2,
            **SETTINGS,
        )
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert {"avg_f1", "weighted_fbeta", "f1_ribosome", "seconds"} <= seen[0][1].keys()
    assert torch.load(output / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert not (output / "result.json").exists()

    result = train_model(data, training, TINY_ARCH, output, tracking_uri="none", **SETTINGS)
    assert result.resumed_from_epoch == 2 and result.epochs_completed == 3

    ours = torch.load(output / "checkpoint.pt", weights_only=True)
    theirs = torch.load(trained.output_dir / "checkpoint.pt", weights_only=True)
    assert states_equal(ours["model"], theirs["model"])
    assert states_equal(ours["ema"]["module"], theirs["ema"]["module"])
    assert [r["train_loss"] for r in ours["history"]] == [
        r["train_loss"] for r in theirs["history"]
    ]
    assert states_equal(
        torch.load(output / "best_model_weights.pth", weights_only=True),
        torch.load(trained.output_dir / "best_model_weights.pth", weights_only=True),
    )
    with open(output / "epochs.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 3


def test_a_finished_run_is_not_trained_again(trained: TrainResult, tiny_project) -> None:
    checkpoint = trained.output_dir / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    again = train_model(
        tiny_data(tiny_project), tiny_training(), TINY_ARCH, trained.output_dir, **SETTINGS
    )
    assert again.resumed_from_epoch == 3 and again.best_epoch == trained.best_epoch
    assert checkpoint.stat().st_mtime_ns == before


def test_the_best_model_is_calibrated_on_the_validation_runs(trained: TrainResult) -> None:
    card = ModelCard.load(trained.output_dir / "model_config.yaml")
    calibration = card.calibration
    assert calibration is not None
    assert set(calibration.classes) == {c.name for c in card.classes}
    assert calibration.run_ids == sorted(
        json.loads((trained.output_dir / "result.json").read_text())["calibration"]["run_ids"]
    )
    grid = LocalizeConfig()
    for chosen in calibration.classes.values():
        assert chosen.threshold in grid.calibration_thresholds
        assert chosen.min_size_fraction in grid.calibration_min_size_fractions
        assert 0.0 <= chosen.fbeta_labels <= 1.0 and 0.0 <= chosen.fbeta <= 1.0
    assert trained.calibration == calibration.model_dump(mode="json")
    assert set(calibration.weighted_fbeta) == {"labels", "calibrated"}


def test_a_run_stopped_before_calibration_is_calibrated_when_rerun(
    trained: TrainResult, tiny_project, tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(trained.output_dir, folder)
    card = ModelCard.load(folder / "model_config.yaml")
    card.model_copy(update={"calibration": None}).save(folder / "model_config.yaml")
    (folder / "result.json").unlink()
    again = train_model(tiny_data(tiny_project), tiny_training(), TINY_ARCH, folder, **SETTINGS)
    assert again.resumed_from_epoch == 3
    assert ModelCard.load(folder / "model_config.yaml").calibration == card.calibration
    assert again.calibration == trained.calibration


def test_calibration_can_be_turned_off(tiny_project, tmp_path: Path) -> None:
    settings = SETTINGS | {"localize": LocalizeConfig(calibrate=False)}
    result = train_model(
        tiny_data(tiny_project), tiny_training(num_epochs=1), TINY_ARCH, tmp_path / "run",
        tracking_uri="none", **settings,
    )  # fmt: skip
    assert result.calibration == {}
    assert ModelCard.load(tmp_path / "run" / "model_config.yaml").calibration is None


def test_the_best_validation_calibration_is_kept_not_recomputed(
    tiny_project, tmp_path: Path, monkeypatch
) -> None:
    """Calibrated validation already calibrated the best weights: after training their
    calibration goes into model_config.yaml as it is, with no second pass over the runs."""
    from octopi.training import trainer as trainer_module

    def no_second_pass(self, model):
        raise AssertionError("the best model was calibrated again after training")

    monkeypatch.setattr(trainer_module.Validator, "calibrate", no_second_pass)
    result = train_model(
        tiny_data(tiny_project), tiny_training(best_metric="fBeta4"), TINY_ARCH,
        tmp_path / "run", tracking_uri="none", **SETTINGS,
    )  # fmt: skip
    stored = json.loads((tmp_path / "run" / "best_calibration.json").read_text())
    assert stored["epoch"] == result.best_epoch
    card = ModelCard.load(tmp_path / "run" / "model_config.yaml")
    assert card.calibration is not None
    assert card.calibration.model_dump() == stored["calibration"]
    assert card.calibration.weighted_fbeta["calibrated"] == pytest.approx(result.best_metric)


def test_a_calibration_of_another_epoch_is_not_taken(tmp_path: Path) -> None:
    from octopi.training.trainer import _validated_calibration

    path = tmp_path / "best_calibration.json"
    assert _validated_calibration(path, 3) is None  # no file
    calibration = {"beta": 4.0, "run_ids": ["TS_1"], "classes": {}, "weighted_fbeta": {}}
    path.write_text(json.dumps({"epoch": 2, "calibration": calibration}))
    assert _validated_calibration(path, 3) is None  # weights of epoch 3, calibration of 2
    assert _validated_calibration(path, 2).run_ids == ["TS_1"]


def test_other_settings_in_the_same_output_are_refused(trained: TrainResult, tiny_project) -> None:
    folder = trained.output_dir
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    with pytest.raises(FileExistsError, match=r"training\.lr: 0\.001 → 0\.002") as error:
        train_model(tiny_data(tiny_project), tiny_training(lr=0.002), TINY_ARCH, folder, **SETTINGS)
    assert "new --output" in str(error.value)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


# --------------------------------------------------------------------------- fine-tuning


def test_fine_tuning_starts_from_the_given_weights(
    trained: TrainResult, tiny_project, tmp_path: Path
) -> None:
    card_path = trained.output_dir / "model_config.yaml"
    weights = trained.output_dir / "best_model_weights.pth"
    output = tmp_path / "tuned"
    result = train_model(
        tiny_data(tiny_project),
        tiny_training(num_epochs=1, lr=1e-4),
        None,
        output,
        init_card=ModelCard.load(card_path),
        init_weights=weights,
        init_card_path=card_path,
        tracking_uri="none",
        **SETTINGS,
    )
    assert result.epochs_completed == 1
    assert ModelCard.load(output / "model_config.yaml").architecture == TINY_ARCH
    resolved = yaml.safe_load((output / "train_config.yaml").read_text())
    assert resolved["init_weights"] == str(weights.resolve())


def _bad_card(trained: TrainResult, **changes) -> ModelCard:
    card = ModelCard.load(trained.output_dir / "model_config.yaml")
    return card.model_copy(update=changes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("voxel", "voxel size 10 Å"),
        ("classes", "classes"),
        ("architecture", "do not match"),
        ("dim_in", "not divisible"),
    ],
)
def test_fine_tuning_mismatches_are_refused_before_writing(
    trained: TrainResult, tiny_project, tmp_path: Path, change: str, message: str
) -> None:
    training = tiny_training(num_epochs=1)
    if change == "voxel":
        card = _bad_card(trained, voxel_size_angstrom=10.0)
    elif change == "classes":
        card = _bad_card(
            trained, classes=[ClassInfo(name="ribosome", label=1, radius_angstrom=150)]
        )
    elif change == "architecture":
        card = _bad_card(trained, architecture=UnetConfig(channels=[8, 16, 64], strides=[2, 2]))
    else:
        card = _bad_card(trained)
        training = tiny_training(num_epochs=1, dim_in=18)
    output = tmp_path / "tuned"
    with pytest.raises(ValueError, match=message):
        train_model(
            tiny_data(tiny_project),
            training,
            None,
            output,
            init_card=card,
            init_weights=trained.output_dir / "best_model_weights.pth",
            tracking_uri="none",
            **SETTINGS,
        )
    assert not output.exists()
