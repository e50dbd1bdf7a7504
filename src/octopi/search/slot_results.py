"""What a trial slot leaves behind: ``result.json`` when it ends, ``error.json`` when it fails.

:class:`SlotResult` is the record of one slot (``trials/<slot>/result.json``), written last by
:func:`octopi.search.slots.run_trial_slot` so that the file marks the slot done.
:func:`finished_result` reads it back for a slot that already finished (rebuilding it from
the Optuna trial if a crash lost it); :func:`record_failure` marks a failed attempt FAIL and
writes ``error.json``; :func:`checkpoint_summary` and :func:`placement` supply the progress
of a pruned run and where an attempt ran.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from octopi.io_utils import atomic_write_json

log = logging.getLogger(__name__)

RESULT_NAME = "result.json"
ERROR_NAME = "error.json"


@dataclass(frozen=True)
class SlotResult:
    """What one slot ended with (``trials/<slot>/result.json``, plus ``reused``).

    ``state`` is COMPLETE or PRUNED; ``best_metric`` is the study metric's best validation
    value (the Optuna value of a COMPLETE trial); timings are seconds of this attempt:
    ``seconds_training`` inside ``train_model``, ``seconds_overhead`` the rest (study, sampler,
    MLflow, writes), per phase in ``seconds_phases`` (wall) and ``cpu_seconds_phases``.
    ``reused`` is True when the slot had already finished and nothing ran. ``training``
    holds what ``train_model`` reported (its ``result.json``, which this file replaces).
    ``placement`` says where and when this attempt ran (:func:`placement`).
    """

    slot: int
    state: str
    trial_number: int
    params: dict[str, Any]
    metric_name: str
    best_metric: float | None
    best_epoch: int | None
    epochs_completed: int
    resumed_from_epoch: int
    seconds_total: float
    seconds_training: float
    seconds_overhead: float
    trial_dir: str
    seconds_phases: dict[str, float] = field(default_factory=dict)
    cpu_seconds_phases: dict[str, float] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    placement: dict[str, Any] = field(default_factory=dict)
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("reused")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], reused: bool = False) -> SlotResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names and k != "reused"}, reused=reused)


def placement() -> dict[str, Any]:
    """Host, Slurm job, GPU (``CUDA_VISIBLE_DEVICES`` as the trial saw it) and the process's
    start and end (Unix seconds): which job ran the attempt, and what ran at the same time."""
    import os
    import socket

    import psutil

    return {
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "process_started": round(psutil.Process().create_time(), 3),
        "finished": round(time.time(), 3),
    }


def checkpoint_summary(folder: Path) -> dict[str, Any]:
    """Progress fields of a pruned run, from its checkpoint (written before the prune)."""
    from octopi.training.checkpoint import load_checkpoint
    from octopi.training.plan import CHECKPOINT_NAME

    state = load_checkpoint(folder / CHECKPOINT_NAME)
    return {
        "best_metric": state.get("best_metric"),
        "best_epoch": state.get("best_epoch"),
        "epochs_completed": state.get("epoch"),
        "num_epochs": (state.get("config") or {}).get("training", {}).get("num_epochs"),
        "tracking_run_id": state.get("tracking_run_id"),
        "output_dir": str(folder),
    }


def record_failure(
    study: optuna.Study, trial: optuna.Trial, folder: Path, error: BaseException
) -> None:
    """Mark the trial FAIL and record why in ``error.json`` (best effort: never masks error)."""
    try:
        trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:1000])
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    except Exception as tell_error:  # noqa: BLE001
        log.warning("could not mark trial %d FAIL: %s", trial.number, tell_error)
    try:
        atomic_write_json(
            folder / ERROR_NAME,
            {
                "trial_number": trial.number,
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exception(error),
                "resume": "rerun the same slot: it repeats these parameters from checkpoint.pt",
            },
        )
    except Exception as write_error:  # noqa: BLE001
        log.warning("could not write %s: %s", folder / ERROR_NAME, write_error)


def finished_result(folder: Path, trial: optuna.trial.FrozenTrial, metric: str) -> SlotResult:
    """The recorded result of a finished slot; rebuilt from the trial if ``result.json`` is
    missing (a crash between telling Optuna and writing it)."""
    path = folder / RESULT_NAME
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("trial_number") == trial.number and "state" in data:
            return SlotResult.from_dict(data, reused=True)
    training = json.loads(path.read_text()) if path.is_file() else {}
    result = SlotResult(
        slot=int(trial.user_attrs["slot"]),
        state=trial.state.name,
        trial_number=trial.number,
        params=dict(trial.params),
        metric_name=metric,
        best_metric=trial.value,
        best_epoch=trial.user_attrs.get("best_epoch"),
        epochs_completed=int(trial.user_attrs.get("epochs_completed") or 0),
        resumed_from_epoch=int(training.get("resumed_from_epoch") or 0),
        seconds_total=0.0,
        seconds_training=0.0,
        seconds_overhead=0.0,
        trial_dir=str(folder),
        user_attrs=dict(trial.user_attrs),
        training=training,
    )
    atomic_write_json(path, result.to_dict())
    return SlotResult.from_dict(result.to_dict(), reused=True)


def objective_value(summary: dict[str, Any], metric: str) -> float | None:
    """The value a finished trial is ranked by: the calibrated validation F-beta of its best
    model (``summary["calibration"]``, see :mod:`octopi.evaluation.calibration`) when the
    study metric is that F-beta (``fBetaN`` with N the calibration's beta), since those are
    the picks ``segment`` + ``localize`` make; else the best validation value of ``metric``."""
    from octopi.evaluation.scoring import parse_metric_name

    calibration = summary.get("calibration") or {}
    calibrated = (calibration.get("weighted_fbeta") or {}).get("calibrated")
    kind, beta = parse_metric_name(metric)
    if calibrated is not None and kind == "fbeta" and beta == calibration.get("beta"):
        return float(calibrated)
    return summary.get("best_metric")
