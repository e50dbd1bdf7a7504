"""Fill a trial's MLflow run in from the trial's own files (the backfill).

A trial's folder (``trials/<slot>/``) is the trial's record: ``epochs.csv`` holds every
epoch's metrics, ``train_config.yaml`` the settings, then the model files and ``result.json``;
MLflow mirrors them. A trial whose tracking server was down for a while (or for the whole
trial) trains on and its run misses data. :func:`sync_trial_run` makes the run whole: it
creates the run if it never existed, sets the parent, logs the params and the metric points
the run lacks (it reads which steps each metric has first: MLflow stores a point logged twice
twice), the artifacts whose size differs, the Optuna view (``optuna.*`` params,
``best_<metric>``, state tags) and the status. Running it again changes nothing.

A trial runs it at its end (:func:`octopi.search.slots.run_trial_slot`); ``octopi select-best``
runs :func:`sync_study`, which does it for every slot not marked synced to this URI in its
``mlflow_run.json``. So at the latest when select-best runs, MLflow holds every trial.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from optuna.trial import FrozenTrial, TrialState

from octopi import tracking
from octopi.search.storage import study_parent_run

log = logging.getLogger(__name__)

# What train_model logs as artifacts (octopi.training.trainer.OUTPUT_FILES), by folder.
ARTIFACTS: dict[str | None, tuple[str, ...]] = {
    "model": ("model_config.yaml", "best_model_weights.pth"),
    None: ("epochs.csv", "curves.png", "train_config.yaml", "result.json"),
}
RUN_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}


def trial_run_tags(study_name: str, slot: int, trial_number: int | None) -> dict[str, str]:
    """Tags of a slot's nested run."""
    tags = {"octopi.slot": str(slot), "optuna.study": study_name}
    if trial_number is not None:
        tags["optuna.trial_number"] = str(trial_number)
    return tags


def sync_trial_run(
    uri: str,
    experiment: str,
    folder: str | Path,
    slot: int,
    *,
    parent_run_id: str | None,
    trial: FrozenTrial | None = None,
    metric: str | None = None,
) -> bool:
    """Make slot ``slot``'s run in the store at ``uri`` hold what ``folder`` holds.

    ``trial`` (the slot's last Optuna trial) adds the Optuna view and sets the run's status
    (COMPLETE → FINISHED, PRUNED → KILLED, FAIL → FAILED; else left as is); ``metric`` names
    its value (``best_<metric>``). Returns True when the run is complete (then
    ``mlflow_run.json`` records ``synced_uri``, and later calls return at once); False when
    the store could not be reached or a call failed (warned; nothing raises).
    """
    if tracking.tracking_disabled(uri):
        return True
    folder = Path(folder)
    record = tracking.read_run_record(folder)
    if record.get("synced_uri") == uri:
        return True
    run = tracking.try_start_run(
        uri,
        experiment,
        f"slot-{slot:03d}",
        parent_run_id=parent_run_id,
        tags=trial_run_tags(experiment, slot, trial.number if trial is not None else None),
        run_id=record.get("run_id"),
        mark_running=False,
    )
    if not isinstance(run, tracking.TrackingRun):
        return False
    status = RUN_STATUS.get(trial.state) if trial is not None else None
    try:
        record = {"run_id": run.run_id, "tracking_uri": uri}
        tracking.write_run_record(folder, record)
        _fill(run, folder, parent_run_id, trial, metric, status)
        drained = run.end(status) if status is not None else run.close()
        if drained and run.failures == 0:
            tracking.write_run_record(folder, {**record, "synced_uri": uri})
            return True
    except Exception as error:  # noqa: BLE001 - best effort: the files stay the record
        log.warning(
            "MLflow: could not complete the run of slot %d from %s: %s", slot, folder, error
        )
    finally:
        run.close()
    return False


def _fill(
    run: tracking.TrackingRun,
    folder: Path,
    parent_run_id: str | None,
    trial: FrozenTrial | None,
    metric: str | None,
    status: str | None,
) -> None:
    have = run.info()
    params = _train_params(folder)
    if trial is not None:
        params.update({f"optuna.{k}": v for k, v in trial.params.items()})
    run.log_params({k: v for k, v in params.items() if k not in have["params"]})
    tags: dict[str, Any] = {}
    if parent_run_id and have["tags"].get("mlflow.parentRunId") != parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    if trial is not None:
        tags.update({"optuna.state": trial.state.name, "optuna.trial_number": trial.number})
    run.set_tags(tags)

    points = epoch_points(folder / "epochs.csv")
    steps = run.metric_steps({key for key, _, _ in points})
    run.log_metric_points(p for p in points if p[2] not in steps[p[0]])
    best = f"best_{metric}"
    if trial is not None and trial.value is not None and metric and best not in have["metrics"]:
        run.log_metric_points([(best, float(trial.value), 0)])
    if status == "FINISHED":
        for path, names in ARTIFACTS.items():
            sizes = run.artifact_sizes(path)
            stale = [
                folder / name
                for name in names
                if (folder / name).is_file()
                and sizes.get(f"{path}/{name}" if path else name) != (folder / name).stat().st_size
            ]
            if stale:
                run.log_artifacts(stale, path)


def _train_params(folder: Path) -> dict[str, Any]:
    """The params train_model logs: the flattened ``train_config.yaml`` ({}: none)."""
    path = folder / "train_config.yaml"
    if not path.is_file():
        return {}
    resolved = yaml.safe_load(path.read_text()) or {}
    resolved.pop("command", None)
    return tracking.flatten_params(resolved)


def epoch_points(path: Path) -> list[tuple[str, float, int]]:
    """``(metric, value, epoch)`` for every filled cell of an ``epochs.csv`` (none if absent),
    as the training loop logs them (every column but ``epoch``, at step = epoch)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        (key, float(value), int(row["epoch"]))
        for row in rows
        for key, value in row.items()
        if key != "epoch" and value not in ("", None)
    ]


def sync_study(
    study_dir: Path, uri: str, experiment: str, metric: str, trials: Iterable[FrozenTrial]
) -> str | None:
    """Sync the run of every slot's last finished trial (see :func:`sync_trial_run`); return
    the study's parent run id (None: tracking off or the store unreachable; nothing synced).
    A slot whose latest attempt still runs is left to it."""
    if tracking.tracking_disabled(uri):
        return None
    parent = study_parent_run(study_dir, uri, experiment)
    if parent is None:
        log.warning(
            "MLflow (%s) cannot be reached: the trials' runs were not completed from their "
            "files; run `octopi select-best --study-dir %s` again when it can",
            uri,
            study_dir,
        )
        return None
    last: dict[int, FrozenTrial] = {}  # slot -> its latest attempt
    for trial in sorted(trials, key=lambda t: t.number):
        if "slot" in trial.user_attrs:
            last[int(trial.user_attrs["slot"])] = trial
    failed = [
        slot
        for slot, trial in sorted(last.items())
        if trial.state in RUN_STATUS
        and not sync_trial_run(
            uri,
            experiment,
            study_dir / "trials" / str(slot),
            slot,
            parent_run_id=parent,
            trial=trial,
            metric=metric,
        )
    ]
    if failed:
        log.warning(
            "MLflow: the runs of slots %s could not be completed from their files; run "
            "`octopi select-best --study-dir %s` again to retry",
            ", ".join(map(str, failed)),
            study_dir,
        )
    return parent
