"""The records of a study folder: the Optuna study (journal storage, sampler, pruner,
identity checks) and the id of the study's MLflow parent run.

The study lives in ``<study_dir>/optuna.journal`` (Optuna's JournalStorage file backend, which
``optuna-dashboard optuna.journal`` reads). Its appends are serialised with an ``O_EXCL``
lock file (:class:`~optuna.storages.journal.JournalFileOpenLock`), which works on NFS v3+ and
Lustre where ``fcntl`` locks may not. Every trial process opens the study itself; the study's
model type, metric and search-space overrides are stored as study user attrs when it is made,
and a process that brings other ones is refused.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

from octopi import __version__, tracking
from octopi.config import SearchConfig, TrainingConfig
from octopi.errors import InputError, MissingInputError
from octopi.io_utils import atomic_write_json
from octopi.locks import posix_lock

log = logging.getLogger(__name__)

JOURNAL_NAME = "optuna.journal"
PARENT_RUN_NAME = "mlflow_parent_run.json"
STUDY_LOCK_NAME = ".study.lock"
# Study user attrs that must agree between every process of a study.
IDENTITY_ATTRS = ("model_type", "metric", "search_space_overrides")


class StudyMismatchError(InputError):
    """The study folder holds a study made with another model type, metric or search space."""


def journal_storage(study_dir: str | Path) -> optuna.storages.JournalStorage:
    """JournalStorage on ``<study_dir>/optuna.journal`` (created if missing); an
    :class:`~octopi.errors.InputError` naming the file when it cannot be replayed."""
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = str(Path(study_dir) / JOURNAL_NAME)
    Path(study_dir).mkdir(parents=True, exist_ok=True)
    backend = JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
    try:
        return optuna.storages.JournalStorage(backend)  # replays the whole journal
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise InputError(
            f"Optuna journal {path} is corrupt or not an Optuna journal ({type(error).__name__} "
            "while replaying it); restore it from a copy, or run the study in a new folder"
        ) from error


def make_sampler(search: SearchConfig, slot: int | None = None) -> optuna.samplers.BaseSampler:
    """Multivariate TPE with constant liar, seeded ``random_seed + slot``.

    Each trial process makes its own sampler; with one seed for all, concurrent processes
    with the same history would draw identical parameters, hence the per-slot seed.
    ``group=True`` lets the multivariate model handle conditional parameters (the loss's).
    """
    seed = search.random_seed + (slot or 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            multivariate=True, group=True, constant_liar=True, seed=seed
        )


def make_pruner(search: SearchConfig, training: TrainingConfig) -> optuna.pruners.BasePruner:
    """The pruner named by ``search.pruner``; steps are epochs.

    median: prune below the median of earlier trials at the same epoch, once
    ``min(10, num_trials // 4)`` trials finished and after a third of the epochs.
    halving: successive halving (reduction 3) from ``max(val_interval, num_epochs // 27)``
    epochs, so a full-length trial passes about three rungs. none: never prune.
    """
    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    if search.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(training.val_interval, training.num_epochs // 27),
            reduction_factor=3,
        )
    return optuna.pruners.MedianPruner(
        n_startup_trials=max(1, min(10, search.num_trials // 4)),
        n_warmup_steps=training.num_epochs // 3,
        interval_steps=1,
    )


def open_study(
    study_dir: str | Path,
    search: SearchConfig,
    metric_name: str,
    *,
    training: TrainingConfig | None = None,
    slot: int | None = None,
    search_space_overrides: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """Open (or create) the study of ``study_dir``: direction maximize, name
    ``search.study_name``, TPE sampler (seed ``random_seed + slot``), pruner ``search.pruner``
    (pruning schedule from ``training``; default settings when None).

    Raises :class:`StudyMismatchError` when the folder's study was made for another model
    type, metric or search space, or holds a study of another name.
    """
    study_dir = Path(study_dir)
    storage = journal_storage(study_dir)
    identity = {
        "model_type": search.model_type,
        "metric": metric_name,
        "search_space_overrides": json.dumps(dict(search_space_overrides or {}), sort_keys=True),
    }
    # One process at a time creates the study and records its identity, so none sees a
    # study without identity attrs.
    with posix_lock(study_dir / STUDY_LOCK_NAME):
        names = [s.study_name for s in storage.get_all_studies()]
        if names and search.study_name not in names:
            raise StudyMismatchError(
                f"{study_dir} holds the study {', '.join(map(repr, names))}, not "
                f"{search.study_name!r}: set search.study_name back, or use a new study folder"
            )
        study = optuna.create_study(
            storage=storage,
            study_name=search.study_name,
            direction="maximize",
            sampler=make_sampler(search, slot),
            pruner=make_pruner(search, training or TrainingConfig()),
            load_if_exists=True,
        )
        stored = study.user_attrs
        if not stored:
            for key, value in identity.items():
                study.set_user_attr(key, value)
            study.set_user_attr("octopi_version", __version__)
            study.set_user_attr("num_trials", search.num_trials)
            return study
    check_identity(study_dir, stored, identity)
    return study


def check_identity(study_dir: Path, stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    """Raise :class:`StudyMismatchError` listing every identity attr that differs."""
    differences = [
        f"{key}: the study has {stored.get(key)!r}, this config {wanted[key]!r}"
        for key in IDENTITY_ATTRS
        if stored.get(key) != wanted[key]
    ]
    if differences:
        raise StudyMismatchError(
            f"the study in {study_dir} was made with other settings:\n  "
            + "\n  ".join(differences)
            + "\nuse a new study folder for these settings, or restore the study's config"
        )


def load_study(study_dir: str | Path) -> optuna.Study:
    """Open the existing study of ``study_dir`` read-mostly (no sampler settings needed).

    Raises ``FileNotFoundError`` when the folder has no journal or an empty one.
    """
    path = Path(study_dir) / JOURNAL_NAME
    if not path.is_file() or path.stat().st_size == 0:
        raise MissingInputError(
            f"no Optuna study in {study_dir}: {JOURNAL_NAME} is missing or empty; run "
            "`octopi explore-trial` for at least one slot first"
        )
    storage = journal_storage(study_dir)
    names = [s.study_name for s in storage.get_all_studies()]
    if len(names) != 1:
        raise InputError(f"{path} holds {len(names)} studies ({names}); expected exactly one")
    return optuna.load_study(study_name=names[0], storage=storage)


def study_parent_run(study_dir: Path, uri: str, experiment: str) -> str | None:
    """The MLflow run id of the study's parent run in the store at ``uri``, created on first
    use; None when tracking is off or the store cannot be reached (best effort: a trial goes on
    without it, and ``octopi select-best`` makes it later).

    ``mlflow_parent_run.json`` maps URIs to run ids; a recorded run is used when the store at
    ``uri`` holds it, whatever URI recorded it: a study server restarted on another port, or
    the same SQLite file reached directly, keeps one parent run. A file lock makes it race-free
    across processes.
    """
    if tracking.tracking_disabled(uri):
        return None
    path = study_dir / PARENT_RUN_NAME
    with posix_lock(study_dir / f".{PARENT_RUN_NAME}.lock"):
        records = json.loads(path.read_text()) if path.is_file() else {}
        try:
            run_id = tracking.find_run(uri, [records.get(uri), *records.values()])
            if run_id is None:
                run_id = tracking.start_run(
                    uri,
                    experiment,
                    f"study {experiment}",
                    tags={"octopi.role": "study", "octopi.study_dir": str(study_dir.resolve())},
                ).run_id
        except Exception as error:  # noqa: BLE001
            log.warning("MLflow: no study parent run in %s for now: %s", uri, error)
            return None
        if records.get(uri) != run_id:
            records[uri] = run_id
            atomic_write_json(path, records)
        return run_id
