"""The top-k ensemble of a study: ``STUDY/best_ensemble/``, written by ``select-best``.

The members are the ``search.ensemble_size`` best COMPLETE trials (by the study metric; ties
→ the lower slot) whose networks fit the best trial's window (its crop edge must be a multiple
of each member's downsampling). Their softmax probabilities are averaged; the ensemble is
calibrated on the validation runs of the study's split with those averaged probabilities
(:mod:`octopi.evaluation.calibration`), so ``segment`` + ``localize`` pick with thresholds
chosen for the ensemble itself. See :mod:`octopi.inference.ensemble_folder` for the layout.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from octopi.config import WorkflowConfig
from octopi.data.split import RunSplit
from octopi.inference.ensemble_folder import (
    MODEL_FILES,
    EnsembleMember,
    write_ensemble_folder,
)
from octopi.models.model_card import ModelCard
from octopi.search.slots import trial_dir

log = logging.getLogger(__name__)

ENSEMBLE_DIR = "best_ensemble"


@dataclass(frozen=True)
class EnsembleSummary:
    """What :func:`build_study_ensemble` wrote: the folder, its members' slots and values,
    and the weighted F-beta on the validation runs from labels and calibrated."""

    folder: str
    slots: list[int]
    values: list[float]
    validation_weighted_fbeta: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ranked(complete: list[FrozenTrial]) -> list[FrozenTrial]:
    """COMPLETE trials best first (higher value; ties → the lower slot)."""
    return sorted(complete, key=lambda t: (-float(t.value), int(t.user_attrs["slot"])))


def choose_members(study_dir: Path, complete: list[FrozenTrial], size: int) -> list[FrozenTrial]:
    """The best ``size`` trials with model files whose networks fit the best one's window."""
    members: list[FrozenTrial] = []
    window = None
    for trial in ranked(complete):
        folder = trial_dir(study_dir, int(trial.user_attrs["slot"]))
        if not all((folder / name).is_file() for name in MODEL_FILES):
            continue
        card = ModelCard.load(folder / MODEL_FILES[0])
        window = card.dim_in if window is None else window
        if window % card.architecture.downsampling_factor():
            continue
        members.append(trial)
        if len(members) == size:
            break
    return members


def build_study_ensemble(
    study_dir: Path,
    workflow: WorkflowConfig,
    complete: list[FrozenTrial],
    split: RunSplit | None,
) -> EnsembleSummary | None:
    """Write ``best_ensemble/`` (calibrated when the split has validation runs); None when
    ``search.ensemble_size`` < 2 or fewer than two trials qualify."""
    size = workflow.search.ensemble_size
    members = choose_members(study_dir, complete, size) if size >= 2 else []
    if len(members) < 2:
        if size >= 2:
            log.info("ensemble: %d usable COMPLETE trial(s), none written", len(members))
        return None
    sources = [
        (
            trial_dir(study_dir, int(t.user_attrs["slot"])),
            EnsembleMember(
                folder=f"member_{t.user_attrs['slot']}",
                slot=int(t.user_attrs["slot"]),
                trial_number=t.number,
                value=float(t.value),
            ),
        )
        for t in members
    ]
    folder = study_dir / ENSEMBLE_DIR
    card = write_ensemble_folder(folder, sources, workflow.training.best_metric)
    weighted: dict[str, float] = {}
    if split is not None and split.validate:
        calibration = _calibrate(folder, workflow, split)
        card.model_copy(update={"calibration": calibration}).save(folder / "ensemble.yaml")
        weighted = dict(calibration.weighted_fbeta)
    return EnsembleSummary(
        folder=str(folder),
        slots=[m.slot for m in card.members if m.slot is not None],
        values=[m.value for m in card.members if m.value is not None],
        validation_weighted_fbeta=weighted,
    )


def _calibrate(folder: Path, workflow: WorkflowConfig, split: RunSplit):
    from octopi.evaluation.calibrate_runs import calibrate_model_on_runs

    _, calibration = calibrate_model_on_runs(
        workflow.data.configs,
        split.validate,
        [folder],
        [],
        ground_truth=workflow.data.ground_truth,
        localize_settings=workflow.localize,
        evaluation=workflow.evaluation,
        inference=workflow.inference,
        show_progress=False,
    )
    return calibration
