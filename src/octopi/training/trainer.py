"""The training loop: :func:`train_model`, the library function behind ``octopi train``.

One epoch is one pass over the training samples cached that epoch (see
:class:`~octopi.data.patches.CropLoader`). Every epoch ends with a full checkpoint, so a killed
run resumes exactly where it stopped: the crops of epoch ``e`` depend on (seed, e) alone,
torch's RNG is reseeded from (seed, e) at each epoch start, and the learning rate is a function
of progress in epochs; on the CPU a resumed run ends with bit-identical weights.

Outputs in ``output_dir`` (all written atomically): ``model_config.yaml``,
``best_model_weights.pth`` (weights of the validated network, the EMA when on, at the best
validation), ``checkpoint.pt``, ``epochs.csv``, ``curves.png``, ``train_config.yaml``,
``result.json``. After the last epoch the best model is calibrated on the validation runs
(per-class thresholds and minimum sizes for F-beta, :mod:`octopi.evaluation.calibration`)
and the calibration written into ``model_config.yaml``. MLflow (see :mod:`octopi.tracking`)
gets params, per-epoch metrics, the calibration's figures and the best model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from octopi import tracking
from octopi.config import (
    DataConfig,
    EvaluationConfig,
    InferenceConfig,
    LocalizeConfig,
    ModelArchitecture,
    TrainingConfig,
)
from octopi.data.split import RunSplit
from octopi.errors import MissingInputError
from octopi.io_utils import atomic_write_json, write_resolved_config
from octopi.models.model_card import Calibration, ModelCard
from octopi.models.registry import load_model
from octopi.runtime import select_device
from octopi.training.loop import TrainingLoop, ValidationCallback
from octopi.training.outputs import VALIDATION_PREFIX
from octopi.training.plan import CHECKPOINT_NAME, TrainingPlan, plan_training
from octopi.training.stop import TrainingStopped
from octopi.training.validation import Validator

OUTPUT_FILES: dict[str, str] = {
    "model_config": "model_config.yaml",
    "best_weights": "best_model_weights.pth",
    "best_calibration": "best_calibration.json",
    "checkpoint": CHECKPOINT_NAME,
    "epochs": "epochs.csv",
    "curves": "curves.png",
    "config": "train_config.yaml",
    "result": "result.json",
}


class TrainingInterrupted(Exception):  # noqa: N818 - reads as what happened
    """Raise from ``on_validation`` to stop a run on purpose (e.g. an Optuna trial pruned).

    It propagates out of :func:`train_model` after that epoch's checkpoint is written; the
    MLflow run is marked KILLED (so is one stopped by Optuna's ``TrialPruned``).
    """


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_model` (``result.json``).

    ``best_metric`` is the best validation value of ``best_metric_name`` (None before any
    validation), reached at ``best_epoch``; ``best_validation`` holds all validation metrics
    of that epoch. ``resumed_from_epoch`` is the epoch the checkpoint had finished (0: a fresh
    start). ``paths`` maps output kinds (see ``OUTPUT_FILES``) to files. ``attempts``: where
    each run of the loop started and ended (``{"epoch": finished, "step": done in the next}``)
    and the signal that stopped it, if any (:mod:`octopi.training.stop`). ``calibration``:
    the best model's calibrated per-class picking settings (``Calibration`` as a dict; empty
    when off), also in ``model_config.yaml``.
    """

    output_dir: Path
    best_metric_name: str
    best_metric: float | None
    best_epoch: int | None
    epochs_completed: int
    num_epochs: int
    stopped_early: bool
    resumed_from_epoch: int
    tracking_run_id: str | None
    best_validation: dict[str, float] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    attempts: list[dict] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``paths`` become file names relative to ``output_dir``."""
        data = asdict(self)
        data["output_dir"] = str(Path(self.output_dir).resolve())
        data["paths"] = {key: _relative(path, self.output_dir) for key, path in self.paths.items()}
        return data


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return str(path)


def train_model(
    data: DataConfig,
    training: TrainingConfig,
    architecture: ModelArchitecture | None,
    output_dir: Path,
    *,
    inference: InferenceConfig,
    localize: LocalizeConfig,
    evaluation: EvaluationConfig,
    split: RunSplit | None = None,
    init_card: ModelCard | None = None,
    init_weights: Path | None = None,
    init_card_path: Path | None = None,
    tracking_uri: str | None = None,
    experiment_name: str = "octopi-train",
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tracking_tags: dict[str, str] | None = None,
    on_validation: ValidationCallback | None = None,
    device: str | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train (or fine-tune, or resume) one network; see the module docstring for outputs.

    ``split`` fixes the runs (default: discover usable runs and split per ``data``).
    Fine-tuning starts from ``init_card`` + ``init_weights`` (architecture from the card;
    ``architecture`` must then be None or equal). ``tracking_uri`` None stores MLflow data in
    ``output_dir/mlflow.db`` (artifacts in ``output_dir/mlruns``); ``"none"`` turns it off.
    ``on_validation(epoch, metrics)`` runs after each validation epoch's checkpoint is
    written; metrics hold ``avg_f1``, ``weighted_fbeta``, ``training.best_metric``,
    ``f1_<class>`` and ``seconds``; exceptions it raises propagate (see
    :class:`TrainingInterrupted`). Bad input raises before anything is written; an
    ``output_dir`` holding a run of other settings raises ``FileExistsError``.
    """
    output_dir = Path(output_dir)
    settings = {"inference": inference, "localize": localize, "evaluation": evaluation}
    fine_tune = {"init_card": init_card, "init_weights": init_weights}
    plan = plan_training(
        data, training, architecture, output_dir, split=split, init_card_path=init_card_path,
        **settings, **fine_tune,
    )  # fmt: skip
    paths = {key: output_dir / name for key, name in OUTPUT_FILES.items()}
    if plan.checkpoint is not None and plan.checkpoint.get("finished"):
        # Finished before; calibrate if a stop came between the last epoch and calibration.
        calibration = _stored_calibration(paths) or _calibrate_finished(plan, paths, device)
        state, resumed_from = plan.checkpoint, plan.checkpoint["epoch"]
        result = _result(state, training, output_dir, resumed_from, paths, calibration)
        atomic_write_json(paths["result"], result.to_dict())
        return result

    output_dir.mkdir(parents=True, exist_ok=True)
    plan.card.save(paths["model_config"])
    write_resolved_config(output_dir, "train", plan.config)
    if tracking_uri is None:
        tracking_uri = tracking.default_tracking_uri(output_dir)
    loop = TrainingLoop(plan, training, select_device(device), paths)
    where = _Tracking(tracking_uri, experiment_name, run_name, parent_run_id, tracking_tags)
    return _run_loop(loop, where, on_validation, show_progress)


@dataclass(frozen=True)
class _Tracking:
    """Where :func:`train_model` logs: MLflow store, experiment, run name, parent, tags."""

    uri: str
    experiment_name: str
    run_name: str | None
    parent_run_id: str | None
    tags: dict[str, str] | None


def _run_loop(
    loop: TrainingLoop,
    where: _Tracking,
    on_validation: ValidationCallback | None,
    show_progress: bool,
) -> TrainResult:
    """Run the loop under an MLflow run, calibrate the best model, write ``result.json``."""
    plan, paths, output_dir = loop.plan, loop.paths, loop.paths["result"].parent
    run: tracking.NullRun = tracking.NullRun()
    status = "FAILED"
    try:
        # Best effort: a store that cannot be reached leaves the run to be filled in later.
        known_run = loop.tracking_run_id or tracking.read_run_record(output_dir).get("run_id")
        run = tracking.try_start_run(
            where.uri,
            where.experiment_name,
            where.run_name or output_dir.resolve().name,
            parent_run_id=where.parent_run_id,
            tags=where.tags,
            run_id=known_run,
        )
        loop.tracking_run_id = run.run_id or known_run
        if run.run_id is not None:
            tracking.write_run_record(output_dir, {"run_id": run.run_id, "tracking_uri": where.uri})
        run.log_params(tracking.flatten_params(plan.resolved))
        loop.run(run, on_validation, show_progress)
        calibration = _calibrate_best(
            loop.validator, plan.card, paths, loop.device, best_epoch=loop.best_epoch
        )
        if calibration is not None:
            run.log_metrics(calibration_metrics(calibration))
        result = _result(
            loop.summary(), loop.training, output_dir, loop.resumed_from, paths, calibration
        )
        atomic_write_json(paths["result"], result.to_dict())
        run.log_artifacts([paths["model_config"], paths["best_weights"]], "model")
        run.log_artifacts([paths[k] for k in ("epochs", "curves", "config", "result")])
        status = "FINISHED"
        return result
    except BaseException as error:
        if isinstance(error, TrainingInterrupted | TrainingStopped | KeyboardInterrupt) or (
            type(error).__name__ == "TrialPruned"
        ):
            status = "KILLED"
        raise
    finally:
        run.end(status)
        loop.close()


def _stored_calibration(paths: dict[str, Path]) -> Calibration | None:
    """The calibration already in the output folder's ``model_config.yaml``, if any."""
    return ModelCard.load(paths["model_config"]).calibration


def _calibrate_finished(plan: TrainingPlan, paths: dict[str, Path], device: str | None):
    """Calibrate the best model of a training that finished without it (stopped in between)."""
    if not plan.config.localize.calibrate or not plan.split.validate:
        return None
    validator = Validator(
        plan.projects,
        plan.split.validate,
        plan.config.data.tomo_algorithms[0],
        plan.card,
        plan.ground_truth,
        plan.config.inference,
        plan.config.localize,
        plan.config.evaluation,
        plan.config.training.best_metric,
        select_device(device),
    )
    return _calibrate_best(validator, plan.card, paths, validator.device)


def _calibrate_best(
    validator: Validator,
    card: ModelCard,
    paths: dict[str, Path],
    device: Any,
    best_epoch: int | None = None,
) -> Calibration | None:
    """Calibrate the best weights on the validation runs (``localize.calibrate``) and write
    the calibration into ``model_config.yaml``; None when off or nothing was validated. The
    calibration their validation computed (``best_calibration.json`` of ``best_epoch``) is
    taken as it is: calibrating the same weights on the same runs again gives the same."""
    if not validator.settings.calibrate or not paths["best_weights"].is_file():
        return None
    calibration = _validated_calibration(paths["best_calibration"], best_epoch)
    if calibration is None:
        model = load_model(card, paths["best_weights"], device=str(device))
        calibration = validator.calibrate(model)
    card.model_copy(update={"calibration": calibration}).save(paths["model_config"])
    return calibration


def _validated_calibration(path: Path, best_epoch: int | None) -> Calibration | None:
    """The calibration stored with the best weights of ``best_epoch``, if there is one."""
    if best_epoch is None or not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if stored.get("epoch") != best_epoch:
        return None
    return Calibration.model_validate(stored["calibration"])


def calibration_metrics(calibration: Calibration) -> dict[str, float]:
    """MLflow metrics of a calibration: weighted F-beta of labels and calibrated settings,
    and per class its calibrated F-beta and threshold (none for a class picked by argmax)."""
    metrics = {f"{k}_weighted_fbeta": v for k, v in calibration.weighted_fbeta.items()}
    for name, c in calibration.classes.items():
        metrics[f"calibrated_fbeta_{name}"] = c.fbeta
        if c.threshold is not None:
            metrics[f"calibrated_threshold_{name}"] = c.threshold
    return metrics


def _result(
    state: dict,
    training: TrainingConfig,
    output_dir: Path,
    resumed_from: int,
    paths: dict,
    calibration: Calibration | None,
) -> TrainResult:
    best_epoch = state["best_epoch"]
    best_row = next((row for row in state["history"] if row["epoch"] == best_epoch), {})
    return TrainResult(
        output_dir=output_dir,
        best_metric_name=training.best_metric,
        best_metric=state["best_metric"],
        best_epoch=best_epoch,
        epochs_completed=state["epoch"],
        num_epochs=training.num_epochs,
        stopped_early=state["stopped_early"],
        resumed_from_epoch=resumed_from,
        tracking_run_id=state.get("tracking_run_id"),
        best_validation={
            key.removeprefix(VALIDATION_PREFIX): value
            for key, value in best_row.items()
            if key.startswith(VALIDATION_PREFIX)
        },
        paths=dict(paths),
        attempts=list(state.get("attempts") or []),
        calibration={} if calibration is None else calibration.model_dump(mode="json"),
    )


def load_result(output_dir: str | Path) -> dict:
    """The ``result.json`` of a finished training in ``output_dir``."""
    path = Path(output_dir) / OUTPUT_FILES["result"]
    if not path.is_file():
        raise MissingInputError(f"no finished training in {output_dir}: {path.name} is missing")
    return json.loads(path.read_text())
