"""select-best's top-k ensemble (best_ensemble/) on a study made directly with Optuna."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from optuna.trial import TrialState

from octopi.config import SearchConfig, UnetConfig
from octopi.inference.ensemble_folder import ENSEMBLE_FILE, EnsembleCard
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import build_model
from octopi.search import slots
from octopi.search.select import select_best
from octopi.search.storage import open_study

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_select import WORKFLOW, add_trial  # noqa: E402

ENSEMBLE = WORKFLOW.model_copy(
    update={"search": WORKFLOW.search.model_copy(update={"ensemble_size": 3})}
)


def real_model(folder: Path, dim_in: int, strides: list[int], seed: int) -> None:
    """A tiny network's card and weights in a trial folder."""
    card = ModelCard(
        architecture=UnetConfig(channels=[4, 8, 8, 8][: len(strides) + 1], strides=strides),
        dim_in=dim_in,
        classes=[ClassInfo(name="ribosome", label=1, radius_angstrom=100.0)],
        voxel_size_angstrom=10.0,
        tomo_algorithms=["wbp"],
    )
    card.save(folder / "model_config.yaml")
    torch.manual_seed(seed)
    torch.save(build_model(card).state_dict(), folder / "best_model_weights.pth")


def make_study(tmp_path: Path, trials: list[tuple[int, TrialState, float | None, int]]) -> Path:
    """``(slot, state, value, dim_in)`` per trial; slot 5 has strides 2,2,2 (factor 8)."""
    study = open_study(tmp_path, SearchConfig(study_name="select", pruner="none"), "avg_f1")
    for slot, state, value, dim_in in trials:
        add_trial(tmp_path, study, slot, state, value)
        strides = [2, 2, 2] if slot == 5 else [2, 2]
        real_model(slots.trial_dir(tmp_path, slot), dim_in, strides, seed=slot)
    return tmp_path


def test_the_top_3_complete_trials_form_the_ensemble(tmp_path: Path) -> None:
    study = make_study(
        tmp_path,
        [
            (0, TrialState.COMPLETE, 0.5, 32),
            (1, TrialState.COMPLETE, 0.8, 32),
            (2, TrialState.COMPLETE, 0.7, 48),  # another crop: still averaged
            (3, TrialState.PRUNED, 0.95, 32),  # pruned: never a member
            (4, TrialState.COMPLETE, 0.6, 32),
            (6, TrialState.COMPLETE, 0.4, 32),
        ],
    )
    summary = select_best(study, ENSEMBLE, tracking_uri="none")
    card = EnsembleCard.load(study / "best_ensemble" / ENSEMBLE_FILE)
    assert [m.slot for m in card.members] == [1, 2, 4]
    assert [m.value for m in card.members] == [0.8, 0.7, 0.6]
    assert card.metric_name == "avg_f1" and card.calibration is None  # no split.json
    for member in card.members:
        folder = study / "best_ensemble" / member.folder
        source = slots.trial_dir(study, member.slot)
        for name in ("model_config.yaml", "best_model_weights.pth"):
            assert (folder / name).read_bytes() == (source / name).read_bytes()
    assert summary.ensemble is not None and summary.ensemble["slots"] == [1, 2, 4]
    assert not list(study.glob(".best_ensemble*"))  # no temporary folder left


def test_a_member_that_does_not_fit_the_window_is_skipped(tmp_path: Path) -> None:
    """The best trial's crop 36 is no multiple of slot 5's downsampling (8): slot 5 is left
    out and the next trial takes its place."""
    study = make_study(
        tmp_path,
        [
            (0, TrialState.COMPLETE, 0.9, 36),
            (5, TrialState.COMPLETE, 0.8, 32),
            (1, TrialState.COMPLETE, 0.7, 32),
            (2, TrialState.COMPLETE, 0.6, 32),
        ],
    )
    select_best(study, ENSEMBLE, tracking_uri="none")
    card = EnsembleCard.load(study / "best_ensemble" / ENSEMBLE_FILE)
    assert [m.slot for m in card.members] == [0, 1, 2]


def test_no_ensemble_below_two_members_or_when_off(tmp_path: Path) -> None:
    study = make_study(tmp_path / "one", [(0, TrialState.COMPLETE, 0.5, 32)])
    assert select_best(study, ENSEMBLE, tracking_uri="none").ensemble is None
    assert not (study / "best_ensemble").exists()
    two = make_study(
        tmp_path / "off", [(0, TrialState.COMPLETE, 0.5, 32), (1, TrialState.COMPLETE, 0.6, 32)]
    )
    assert select_best(two, WORKFLOW, tracking_uri="none").ensemble is None  # ensemble_size 0
