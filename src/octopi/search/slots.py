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

MLflow: one experiment per study name, one parent run per study (its id kept in
``mlflow_parent_run.json``), one nested run per slot, resumed with the checkpoint. Tracking is
best effort: at its end a slot fills in what its run missed (a server that was down) from its
files (:mod:`octopi.search.tracking_sync`).

The slot's records (``result.json``, ``error.json``) are in :mod:`octopi.search.slot_results`;
the configs it trains with (``trial_config.yaml``) in :mod:`octopi.search.trial_configs`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from octopi import tracking
from octopi.config import WorkflowConfig
from octopi.data.split import RunSplit
from octopi.errors import InputError
from octopi.io_utils import atomic_write_json
from octopi.locks import LockHeldError, posix_lock
from octopi.models.search_spaces import load_overrides
from octopi.search.slot_results import (
    ERROR_NAME,
    RESULT_NAME,
    SlotResult,
    checkpoint_summary,
    finished_result,
    objective_value,
    placement,
    record_failure,
)
from octopi.search.storage import open_study, study_parent_run
from octopi.search.tracking_sync import sync_trial_run, trial_run_tags
from octopi.search.trial_configs import configs_for_trial

log = logging.getLogger(__name__)

TRIALS_DIR = "trials"
SEARCH_SPACE_NAME = "search_space.yaml"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class SlotBusyError(RuntimeError):
    """Another process holds the slot's lock (it is running this slot right now)."""


def trial_dir(study_dir: str | Path, slot: int) -> Path:
    return Path(study_dir) / TRIALS_DIR / str(slot)


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

    ``tracking_uri`` None → ``workflow.tracking.uri``, else ``sqlite:///<study_dir>/mlflow.db``;
    ``"none"`` turns MLflow off.
    ``search_space_overrides`` None → ``<study_dir>/search_space.yaml`` (if any).
    ``memory_bytes`` None → :func:`~octopi.search.trial_configs.device_memory_bytes`.
    Training errors mark the trial FAIL, write ``error.json`` and propagate (``checkpoint.pt``
    stays for the retry). Raises :class:`SlotBusyError` when another process is running the
    slot.
    """
    start = time.perf_counter()
    study_dir = Path(study_dir).resolve()
    num_trials = workflow.search.num_trials
    if not 0 <= slot < num_trials:
        raise InputError(
            f"slot {slot} is out of range: the study runs num_trials={num_trials} trials, "
            f"slots 0..{num_trials - 1}"
        )
    folder = trial_dir(study_dir, slot)
    folder.mkdir(parents=True, exist_ok=True)
    with _slot_lock(study_dir, slot, folder):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        phases = _Phases()
        overrides = search_space_overrides
        if overrides is None:
            overrides = load_overrides(study_dir / SEARCH_SPACE_NAME)
        search, metric = workflow.search, workflow.training.best_metric
        study = open_study(
            study_dir, search, metric, training=workflow.training, slot=slot,
            search_space_overrides=overrides,
        )  # fmt: skip
        phases.lap("open_study")
        mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("slot") == slot]
        done = [t for t in mine if t.state in FINISHED]
        if done:
            return finished_result(folder, done[-1], metric)
        trial, resumed = _new_trial(study, slot, mine)
        phases.lap("new_trial")
        attempt = _Attempt(
            study_dir, slot, folder, workflow, split, study, trial, start, resumed, phases
        )
        try:
            return _run_trial(attempt, tracking_uri, show_progress, overrides, device, memory_bytes)
        except BaseException as error:
            record_failure(study, trial, folder, error)
            raise


@contextlib.contextmanager
def _slot_lock(study_dir: Path, slot: int, folder: Path):
    """Hold the slot's lock (``trials/<slot>/.lock``); SlotBusyError when another has it."""
    try:
        with posix_lock(folder / ".lock", blocking=False):
            yield
    except LockHeldError as error:
        raise SlotBusyError(
            f"slot {slot} of {study_dir} is being run by another process (lock on "
            f"{folder / '.lock'}); wait for it, or stop that process first"
        ) from error


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


def _load_trainer() -> Any:
    """The trainer, with torch and the ``torch._dynamo`` that a torch optimizer imports when
    created; torch's threads set to the cores this process may use (a CPU share of
    :mod:`octopi.cpu_slots` where trials share the CPU)."""
    import torch._dynamo  # noqa: F401

    from octopi.runtime import configure_threads
    from octopi.training.trainer import train_model

    configure_threads()
    return train_model


def _run_trial(
    attempt: _Attempt,
    tracking_uri: str | None,
    show_progress: bool,
    overrides: dict[str, Any],
    device: str | None,
    memory_bytes: int | None,
) -> SlotResult:
    """Train the attempt's trial, tell Optuna how it ended, write ``result.json`` last."""
    train_model = _load_trainer()
    workflow, trial, slot, folder = attempt.workflow, attempt.trial, attempt.slot, attempt.folder
    search, metric = workflow.search, workflow.training.best_metric
    phases = attempt.phases
    uri = tracking_uri or workflow.tracking.uri or tracking.default_tracking_uri(attempt.study_dir)
    tracking.import_store(uri)
    # torch (with the torch._dynamo that every optimizer needs), MONAI, the MLflow store and
    # the trainer: paid once per process by any trial, so counted here rather than in the
    # first step that happens to need them (the memory trace of suggest, the parent run).
    phases.lap("imports")
    architecture, training = configs_for_trial(
        trial, folder, workflow, overrides, device, memory_bytes
    )
    phases.lap("suggest")
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
            tracking_tags=trial_run_tags(search.study_name, slot, trial.number),
            on_validation=on_validation,
            device=device,
            show_progress=show_progress,
        ).to_dict()
    except optuna.TrialPruned:
        state = TrialState.PRUNED
        summary = checkpoint_summary(folder)
    phases.lap("training")
    return _finish_trial(attempt, state, summary, uri, parent)


def _finish_trial(
    attempt: _Attempt, state: TrialState, summary: dict, uri: str, parent: str | None
) -> SlotResult:
    """Tell Optuna the trial's value (:func:`objective_value`), complete its MLflow run and
    write ``result.json``, last, which marks the slot done."""
    slot, folder, trial, phases = attempt.slot, attempt.folder, attempt.trial, attempt.phases
    search, metric = attempt.workflow.search, attempt.workflow.training.best_metric
    seconds_training = phases["training"]
    complete = state == TrialState.COMPLETE
    value = objective_value(summary, metric) if complete else summary.get("best_metric")
    if complete and value is None:
        raise RuntimeError(f"slot {slot}: training finished without a validation {metric}")
    trial.set_user_attr("best_epoch", summary.get("best_epoch"))
    trial.set_user_attr("best_metric_uncalibrated", summary.get("best_metric"))
    trial.set_user_attr("epochs_completed", summary.get("epochs_completed"))
    trial.set_user_attr("seconds_training", round(seconds_training, 3))
    frozen = attempt.study.tell(trial, value if complete else None, state=state)
    phases.lap("tell")
    parent = parent or study_parent_run(attempt.study_dir, uri, search.study_name)
    sync_trial_run(
        uri, search.study_name, folder, slot, parent_run_id=parent, trial=frozen, metric=metric
    )
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
        placement=placement(),
    )
    (folder / ERROR_NAME).unlink(missing_ok=True)
    atomic_write_json(folder / RESULT_NAME, result.to_dict())  # last: marks the slot done
    log.info("slot %d %s (%s)", slot, state.name, "repeat" if attempt.resumed else "new")
    return result


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
