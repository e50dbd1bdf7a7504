"""Best-model selection: :func:`select_best`, the library function behind ``octopi select-best``.

Picks the best COMPLETE trial by the study metric (ties → the lower slot), copies its model
into ``<study_dir>/best/`` (``model_config.yaml``, ``best_model_weights.pth``,
``summary.json``), builds the top-k ensemble ``<study_dir>/best_ensemble/``
(:mod:`octopi.search.ensemble`), writes ``<study_dir>/trials.csv`` (one row per trial) and
the study plots in ``<study_dir>/plots/``, completes every trial's MLflow run from the
trial's files (what a server outage made it miss, :mod:`octopi.search.tracking_sync`) and
closes the study's MLflow parent run with the best result.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from octopi import tracking
from octopi.config import WorkflowConfig
from octopi.data.split import RunSplit, read_split
from octopi.errors import InputError, MissingInputError
from octopi.io_utils import atomic_path, atomic_write_json, atomic_write_text
from octopi.search.ensemble import build_study_ensemble, ranked
from octopi.search.plots import write_study_plots
from octopi.search.slots import trial_dir
from octopi.search.storage import StudyMismatchError, load_study
from octopi.search.tracking_sync import sync_study
from octopi.search.trial_configs import TRIAL_CONFIG_NAME

log = logging.getLogger(__name__)

BEST_DIR = "best"
PLOTS_DIR = "plots"
TRIALS_CSV = "trials.csv"
MODEL_FILES = ("model_config.yaml", "best_model_weights.pth")


@dataclass(frozen=True)
class BestSummary:
    """The selected trial (``best/summary.json``) and where the study outputs went."""

    study_name: str
    model_type: str
    metric_name: str
    best_metric: float
    slot: int
    trial_number: int
    best_epoch: int | None
    params: dict[str, Any]
    architecture: dict[str, Any] | None
    training: dict[str, Any] | None
    trial_counts: dict[str, int]
    best_dir: str
    trials_csv: str
    plots: dict[str, str] = field(default_factory=dict)
    ensemble: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_best(
    study_dir: str | Path, workflow: WorkflowConfig, tracking_uri: str | None = None
) -> BestSummary:
    """Select the study's best trial and write ``best/``, ``trials.csv`` and ``plots/``, and
    the top-k ensemble ``best_ensemble/`` (:mod:`octopi.search.ensemble`).

    Raises ``FileNotFoundError`` without a study or without the best trial's model files,
    :class:`~octopi.search.storage.StudyMismatchError` when the study was made for another
    metric or model type, ``ValueError`` when no trial is COMPLETE.
    """
    study_dir = Path(study_dir).resolve()
    study = load_study(study_dir)
    metric = workflow.training.best_metric
    _check_study(study, study_dir, workflow)
    trials = study.get_trials(deepcopy=False)
    counts = dict(Counter(t.state.name for t in trials))
    complete = _complete_trials(trials, counts, study_dir)
    best = ranked(complete)[0]
    slot = int(best.user_attrs["slot"])
    source = _copy_best_model(study_dir, best)
    csv_path = study_dir / TRIALS_CSV
    atomic_write_text(csv_path, trials_table(trials))
    plots = write_study_plots(
        study, metric, source / "epochs.csv", study_dir / PLOTS_DIR, f"best trial (slot {slot})"
    )
    ensemble = build_study_ensemble(study_dir, workflow, complete, _split(study_dir))
    trial_config = _trial_config(source)
    summary = BestSummary(
        study_name=study.study_name,
        model_type=str(study.user_attrs.get("model_type", workflow.search.model_type)),
        metric_name=metric,
        best_metric=float(best.value),
        slot=slot,
        trial_number=best.number,
        best_epoch=best.user_attrs.get("best_epoch"),
        params=dict(best.params),
        architecture=trial_config.get("architecture"),
        training=trial_config.get("training"),
        trial_counts=counts,
        best_dir=str(study_dir / BEST_DIR),
        trials_csv=str(csv_path),
        plots=plots,
        ensemble=None if ensemble is None else ensemble.to_dict(),
    )
    atomic_write_json(study_dir / BEST_DIR / "summary.json", summary.to_dict())
    uri = tracking_uri or workflow.tracking.uri or tracking.default_tracking_uri(study_dir)
    parent = sync_study(study_dir, uri, study.study_name, metric, trials)
    _close_parent_run(study_dir, uri, parent, summary)
    return summary


def _complete_trials(
    trials: list[FrozenTrial], counts: dict[str, int], study_dir: Path
) -> list[FrozenTrial]:
    """The study's COMPLETE trials with a slot and a value; InputError when there are none."""
    slotted = [t for t in trials if "slot" in t.user_attrs]
    complete = [t for t in slotted if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        shown = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials"
        raise InputError(
            f"no COMPLETE trial in the study of {study_dir} ({shown}); run more slots with "
            "`octopi explore-trial` (a pruned or failed trial has no usable model)"
        )
    return complete


def _copy_best_model(study_dir: Path, best: FrozenTrial) -> Path:
    """Copy the best trial's model files into ``best/``; returns the trial's folder."""
    slot = int(best.user_attrs["slot"])
    source = trial_dir(study_dir, slot)
    missing = [name for name in MODEL_FILES if not (source / name).is_file()]
    if missing:
        raise MissingInputError(
            f"the best trial (slot {slot}, trial {best.number}) has no {', '.join(missing)} in "
            f"{source}; rerun `octopi explore-trial --slot {slot}` to restore it"
        )
    for name in MODEL_FILES:
        with atomic_path(study_dir / BEST_DIR / name) as temp:
            shutil.copyfile(source / name, temp)
    return source


def _split(study_dir: Path) -> RunSplit | None:
    """The study's run split (``split.json``), for calibrating the ensemble; None if absent."""
    path = study_dir / "split.json"
    return read_split(path) if path.is_file() else None


def _check_study(study: optuna.Study, study_dir: Path, workflow: WorkflowConfig) -> None:
    wanted = {"model_type": workflow.search.model_type, "metric": workflow.training.best_metric}
    stored = study.user_attrs
    differences = [
        f"{key}: the study has {stored.get(key)!r}, the config {value!r}"
        for key, value in wanted.items()
        if key in stored and stored[key] != value
    ]
    if differences:
        raise StudyMismatchError(
            f"the study in {study_dir} was made with other settings:\n  "
            + "\n  ".join(differences)
            + "\npass the study's own config (--study-config DIR/config.yaml)"
        )


def _trial_config(folder: Path) -> dict[str, Any]:
    path = folder / TRIAL_CONFIG_NAME
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _seconds(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 3)


def trials_table(trials: list[FrozenTrial]) -> str:
    """CSV text, one row per trial: slot, number, state, value, best_epoch, seconds, params."""
    params = sorted({name for t in trials for name in t.params})
    columns = ["slot", "number", "state", "value", "best_epoch", "seconds", "seconds_training"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns + [f"param_{name}" for name in params])
    ordered = sorted(trials, key=lambda t: (t.user_attrs.get("slot", 1 << 30), t.number))
    for t in ordered:
        writer.writerow(
            [
                t.user_attrs.get("slot", ""),
                t.number,
                t.state.name,
                "" if t.value is None else t.value,
                t.user_attrs.get("best_epoch", ""),
                _seconds(t) or "",
                t.user_attrs.get("seconds_training", ""),
            ]
            + [t.params.get(name, "") for name in params]
        )
    return buffer.getvalue()


def _close_parent_run(study_dir: Path, uri: str, run_id: str | None, summary: BestSummary) -> None:
    """Record the selection on the study's MLflow parent run and mark it FINISHED.

    Best effort: the files are written already; a tracking problem only costs the record.
    """
    if run_id is None:
        return
    try:
        run = tracking.start_run(uri, summary.study_name, run_id=run_id)
        run.log_params({f"best.{k}": v for k, v in summary.params.items()})
        run.log_metrics({f"best_{summary.metric_name}": summary.best_metric})
        run.set_tags({"best.slot": summary.slot, "best.trial_number": summary.trial_number})
        run.log_artifacts([Path(summary.best_dir) / "summary.json", Path(summary.trials_csv)])
        run.log_artifacts([study_dir / PLOTS_DIR], "plots")
        run.end("FINISHED")
    except Exception as error:  # noqa: BLE001
        log.warning("MLflow: could not record the selection on run %s: %s", run_id, error)
