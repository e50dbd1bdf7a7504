"""Trial slots: trial job ``i`` of a study owns slot ``i`` and runs it to an end exactly once.

:func:`run_trial_slot` is the library function behind ``octopi explore-trial``:

- a slot whose Optuna trial is COMPLETE or PRUNED is never re-run: its ``result.json`` is
  returned at once (rebuilt from the trial if a crash lost it);
- a slot whose earlier attempt died (trial RUNNING or FAIL) gets a new trial with the SAME
  parameters (the old RUNNING one is marked FAIL) and trains into the same folder,
  ``<study_dir>/trials/<slot>/``, where :func:`~octopi.training.trainer.train_model` resumes
  from ``checkpoint.pt``;
- an exclusive lock on ``trials/<slot>/.lock`` keeps two processes off one slot, so the study
  never holds two finished trials for a slot. Slots are 0..num_trials-1: no overshoot.

MLflow: one experiment per study name, one parent run per study (its id kept per tracking URI
in ``mlflow_parent_run.json``), one nested run per slot, resumed with the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from octopi import tracking
from octopi.config import ModelArchitecture, TrainingConfig, WorkflowConfig
from octopi.data.split import RunSplit
from octopi.io_utils import atomic_write_json, atomic_write_yaml
from octopi.models.search_spaces import load_overrides
from octopi.search.storage import (
    LockHeldError,
    file_lock,
    log_trial_run,
    open_study,
    study_parent_run,
)

log = logging.getLogger(__name__)

TRIALS_DIR = "trials"
RESULT_NAME = "result.json"
TRIAL_CONFIG_NAME = "trial_config.yaml"
ERROR_NAME = "error.json"
SEARCH_SPACE_NAME = "search_space.yaml"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class SlotBusyError(RuntimeError):
    """Another process holds the slot's lock (it is running this slot right now)."""


@dataclass(frozen=True)
class SlotResult:
    """What one slot ended with (``trials/<slot>/result.json``, plus ``reused``).

    ``state`` is COMPLETE or PRUNED; ``best_metric`` is the study metric's best validation
    value (the Optuna value of a COMPLETE trial); timings are seconds of this attempt:
    ``seconds_training`` inside ``train_model``, ``seconds_overhead`` the rest (study, sampler,
    MLflow, writes), per phase in ``seconds_phases`` (wall) and ``cpu_seconds_phases``.
    ``reused`` is True when the slot had already finished and nothing ran. ``training``
    holds what ``train_model`` reported (its ``result.json``, which this file replaces).
    ``placement`` says where and when this attempt ran (:func:`_placement`).
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


def trial_dir(study_dir: str | Path, slot: int) -> Path:
    return Path(study_dir) / TRIALS_DIR / str(slot)


def device_memory_bytes(device: str | None = None) -> int | None:
    """Memory of the device a trial trains on: the CUDA device's total, else available RAM."""
    import psutil
    import torch

    from octopi.runtime import select_device

    chosen = select_device(device)
    if chosen.type == "cuda":
        return int(torch.cuda.get_device_properties(chosen).total_memory)
    return int(psutil.virtual_memory().available)


def run_trial_slot(
    study_dir: str | Path,
    slot: int,
    workflow: WorkflowConfig,
    split: RunSplit,
    tracking_uri: str | None = None,
    show_progress: bool = False,
    *,
    search_space_overrides: dict[str, Any] | None = None,
    device: str | None = None,
    memory_bytes: int | None = None,
) -> SlotResult:
    """Run slot ``slot`` of the study in ``study_dir`` (see the module docstring).

    ``tracking_uri`` None → ``sqlite:///<study_dir>/mlflow.db``; ``"none"`` turns MLflow off.
    ``search_space_overrides`` None → ``<study_dir>/search_space.yaml`` (if any).
    ``memory_bytes`` None → :func:`device_memory_bytes`. Training errors mark the trial FAIL,
    write ``error.json`` and propagate (``checkpoint.pt`` stays for the retry). Raises
    :class:`SlotBusyError` when another process is running the slot.
    """
    start = time.perf_counter()
    study_dir = Path(study_dir).resolve()
    num_trials = workflow.search.num_trials
    if not 0 <= slot < num_trials:
        raise ValueError(
            f"slot {slot} is out of range: the study runs num_trials={num_trials} trials, "
            f"slots 0..{num_trials - 1}"
        )
    folder = trial_dir(study_dir, slot)
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(folder / ".lock", blocking=False))
        except LockHeldError as error:
            raise SlotBusyError(
                f"slot {slot} of {study_dir} is being run by another process (lock on "
                f"{folder / '.lock'}); wait for it, or stop that process first"
            ) from error
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        phases = _Phases()
        overrides = (
            load_overrides(study_dir / SEARCH_SPACE_NAME)
            if search_space_overrides is None
            else search_space_overrides
        )
        study = open_study(
            study_dir,
            workflow.search,
            workflow.training.best_metric,
            training=workflow.training,
            slot=slot,
            search_space_overrides=overrides,
        )
        phases.lap("open_study")
        mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("slot") == slot]
        done = [t for t in mine if t.state in FINISHED]
        if done:
            return _finished_result(folder, done[-1], workflow.training.best_metric)
        trial, resumed = _new_trial(study, slot, mine)
        phases.lap("new_trial")
        attempt = _Attempt(
            study_dir, slot, folder, workflow, split, study, trial, start, resumed, phases
        )
        try:
            return _run_trial(
                attempt,
                tracking_uri,
                show_progress,
                overrides,
                device,
                memory_bytes,
            )
        except BaseException as error:
            _fail(study, trial, folder, error)
            raise


@dataclass
class _Attempt:
    """One attempt at a slot: where, what, and its live trial."""

    study_dir: Path
    slot: int
    folder: Path
    workflow: WorkflowConfig
    split: RunSplit
    study: optuna.Study
    trial: optuna.Trial
    start: float
    resumed: bool
    phases: _Phases


class _Phases(dict):
    """Wall seconds per phase of an attempt (and CPU seconds of the process, all threads, in
    ``cpu``), for the overhead report in ``result.json``."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: dict[str, float] = {}
        self._last, self._last_cpu = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> float:
        now, now_cpu = time.perf_counter(), time.process_time()
        self[name] = round(self.get(name, 0.0) + now - self._last, 3)
        self.cpu[name] = round(self.cpu.get(name, 0.0) + now_cpu - self._last_cpu, 3)
        self._last, self._last_cpu = now, now_cpu
        return self[name]


def _run_trial(
    attempt: _Attempt,
    tracking_uri: str | None,
    show_progress: bool,
    overrides: dict[str, Any],
    device: str | None,
    memory_bytes: int | None,
) -> SlotResult:
    """Train the attempt's trial, tell Optuna how it ended, write ``result.json`` last."""
    from octopi.training.trainer import train_model

    workflow, trial, slot, folder = attempt.workflow, attempt.trial, attempt.slot, attempt.folder
    search, metric = workflow.search, workflow.training.best_metric
    phases = attempt.phases
    phases.lap("imports")  # torch, MONAI and the trainer: paid once per process, by any trial
    architecture, training = _configs(trial, folder, workflow, overrides, device, memory_bytes)
    phases.lap("suggest")
    uri = tracking_uri or tracking.default_tracking_uri(attempt.study_dir)
    parent = study_parent_run(attempt.study_dir, uri, search.study_name)
    phases.lap("mlflow_parent")

    def on_validation(epoch: int, metrics: dict) -> None:
        value = float(metrics[metric])
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"slot {slot} pruned at epoch {epoch}: {metric} {value:.4f}")

    state = TrialState.COMPLETE
    try:
        summary = train_model(
            workflow.data,
            training,
            architecture,
            folder,
            inference=workflow.inference,
            localize=workflow.localize,
            evaluation=workflow.evaluation,
            split=attempt.split,
            tracking_uri=uri,
            experiment_name=search.study_name,
            run_name=f"slot-{slot:03d}",
            parent_run_id=parent,
            tracking_tags={
                "octopi.slot": str(slot),
                "optuna.study": search.study_name,
                "optuna.trial_number": str(trial.number),
            },
            on_validation=on_validation,
            device=device,
            show_progress=show_progress,
        ).to_dict()
    except optuna.TrialPruned:
        state = TrialState.PRUNED
        summary = _checkpoint_summary(folder)
    seconds_training = phases.lap("training")

    value = summary.get("best_metric")
    if state == TrialState.COMPLETE and value is None:
        raise RuntimeError(f"slot {slot}: training finished without a validation {metric}")
    trial.set_user_attr("best_epoch", summary.get("best_epoch"))
    trial.set_user_attr("epochs_completed", summary.get("epochs_completed"))
    trial.set_user_attr("seconds_training", round(seconds_training, 3))
    frozen = attempt.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    phases.lap("tell")
    log_trial_run(uri, search.study_name, summary.get("tracking_run_id"), frozen, metric, value)
    phases.lap("mlflow_trial")

    seconds_total = time.perf_counter() - attempt.start
    result = SlotResult(
        slot=slot,
        state=state.name,
        trial_number=frozen.number,
        params=dict(frozen.params),
        metric_name=metric,
        best_metric=value,
        best_epoch=summary.get("best_epoch"),
        epochs_completed=int(summary.get("epochs_completed") or 0),
        resumed_from_epoch=int(summary.get("resumed_from_epoch") or 0),
        seconds_total=seconds_total,
        seconds_training=seconds_training,
        seconds_overhead=seconds_total - seconds_training,
        trial_dir=str(folder),
        seconds_phases=dict(phases),
        cpu_seconds_phases=dict(phases.cpu),
        user_attrs=dict(frozen.user_attrs),
        training=summary,
        placement=_placement(),
    )
    (folder / ERROR_NAME).unlink(missing_ok=True)
    atomic_write_json(folder / RESULT_NAME, result.to_dict())  # last: marks the slot done
    log.info("slot %d %s (%s)", slot, state.name, "repeat" if attempt.resumed else "new")
    return result


def _placement() -> dict[str, Any]:
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


def _new_trial(
    study: optuna.Study, slot: int, mine: list[optuna.trial.FrozenTrial]
) -> tuple[optuna.Trial, bool]:
    """A RUNNING trial for ``slot``: the parameters of its last attempt, if any, else new ones.

    The repeat is made in one storage call from a template trial (not enqueue + ask, where a
    concurrent ``ask`` of another slot could take the queued trial).
    """
    for old in mine:
        if old.state == TrialState.RUNNING:  # its process died: we hold the slot's lock
            study.tell(old.number, state=TrialState.FAIL, skip_if_finished=True)
    previous = max((t for t in mine if t.params), key=lambda t: t.number, default=None)
    if previous is None:
        trial = study.ask()
        trial.set_user_attr("slot", slot)
        trial.set_user_attr("attempt", len(mine) + 1)
        return trial, False
    template = optuna.trial.FrozenTrial(
        number=-1,  # the storage assigns the number
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params=dict(previous.params),
        distributions=dict(previous.distributions),
        user_attrs={
            **{k: v for k, v in previous.user_attrs.items() if k.endswith("_adjusted")},
            "slot": slot,
            "attempt": len(mine) + 1,
            "repeats_trial": previous.number,
        },
        system_attrs={},
        intermediate_values=dict(previous.intermediate_values),
        trial_id=-1,
    )
    storage = study._storage
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.create_new_trial(study_id, template_trial=template)
    return optuna.Trial(study, trial_id), True


def _configs(
    trial: optuna.Trial,
    folder: Path,
    workflow: WorkflowConfig,
    overrides: dict[str, Any],
    device: str | None,
    memory_bytes: int | None,
) -> tuple[ModelArchitecture, TrainingConfig]:
    """The trial's architecture and training settings.

    A repeated slot reuses ``trial_config.yaml`` so the checkpoint's config matches even if
    the device (hence the memory bound) changed; otherwise draw from the search space.
    """
    from pydantic import TypeAdapter

    from octopi.models.search_spaces import suggest

    path = folder / TRIAL_CONFIG_NAME
    if path.is_file():
        stored = yaml.safe_load(path.read_text()) or {}
        if stored.get("params") == dict(trial.params) and trial.params:
            architecture = TypeAdapter(ModelArchitecture).validate_python(stored["architecture"])
            return architecture, TrainingConfig.model_validate(stored["training"])
    if memory_bytes is None:
        memory_bytes = device_memory_bytes(device)
    architecture, training = suggest(
        trial, workflow.search.model_type, workflow, memory_bytes, overrides=overrides
    )
    atomic_write_yaml(
        path,
        {
            "trial_number": trial.number,
            "params": dict(trial.params),
            "user_attrs": dict(trial.user_attrs),
            "architecture": architecture.model_dump(mode="json"),
            "training": training.model_dump(mode="json"),
        },
    )
    return architecture, training


def _checkpoint_summary(folder: Path) -> dict[str, Any]:
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


def _fail(study: optuna.Study, trial: optuna.Trial, folder: Path, error: BaseException) -> None:
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


def _finished_result(folder: Path, trial: optuna.trial.FrozenTrial, metric: str) -> SlotResult:
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
