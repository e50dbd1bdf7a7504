"""Trial slots and study storage: idempotent slots, resume with the same parameters, pruning,
identity checks, locks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from octopi.config import (
    DataConfig,
    SearchConfig,
    TrainingConfig,
    WorkflowConfig,
)
from octopi.data.split import RunSplit
from octopi.models.trial_sampling import suggest
from octopi.search import slots
from octopi.search.slots import SlotBusyError, run_trial_slot
from octopi.search.storage import (
    StudyMismatchError,
    load_study,
    make_pruner,
    make_sampler,
    open_study,
)

# A network and crops small enough for a CPU test: UNet [4, 8] + bottom 8, 32³ crops, batch 1.
TINY_SPACE = {
    "dim_in": 32,
    "batch_size": 1,
    "num_layers": 2,
    "hidden_layers": 1,
    "base_channel": 4,
    "num_res_units": 1,
}


def tiny_workflow(project=None, **search) -> WorkflowConfig:
    source = project.source if project is not None else {"path": "unused/copick.json"}
    voxel = project.voxel_size_angstrom if project is not None else 10.0
    return WorkflowConfig(
        data=DataConfig(configs=[source], voxel_size_angstrom=voxel),
        training=TrainingConfig(
            num_epochs=2,
            val_interval=1,
            batch_size=1,
            dim_in=32,
            ncache_tomos=2,
            warmup_epochs=0,
            ema_decay=None,
            num_workers=1,
        ),
        search=SearchConfig(
            **{"num_trials": 4, "study_name": "tiny", "pruner": "none", "random_seed": 0, **search}
        ),
    )


def tiny_split(project) -> RunSplit:
    return RunSplit(train=project.run_names[:2], validate=[project.run_names[2]])


def slot_trials(study_dir: Path, slot: int) -> list[optuna.trial.FrozenTrial]:
    study = load_study(study_dir)
    return [t for t in study.get_trials() if t.user_attrs.get("slot") == slot]


def crop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("octopi-crops")]


# --------------------------------------------------------------------------- fast checks


@pytest.mark.parametrize("slot", [-1, 4])
def test_slot_out_of_range(tmp_path: Path, slot: int) -> None:
    with pytest.raises(ValueError, match=r"slot .* out of range.*slots 0\.\.3"):
        run_trial_slot(tmp_path / "study", slot, tiny_workflow(), RunSplit(["a"], ["b"]))
    assert not (tmp_path / "study").exists()


def test_study_identity_is_checked(tmp_path: Path) -> None:
    search = SearchConfig(model_type="Unet", study_name="s")
    study = open_study(tmp_path, search, "avg_f1", search_space_overrides={"dim_in": 32})
    assert study.user_attrs["model_type"] == "Unet" and study.user_attrs["metric"] == "avg_f1"
    open_study(tmp_path, search, "avg_f1", slot=3, search_space_overrides={"dim_in": 32})
    with pytest.raises(StudyMismatchError, match="metric: the study has 'avg_f1'.*'fBeta4'"):
        open_study(tmp_path, search, "fBeta4", search_space_overrides={"dim_in": 32})
    other = SearchConfig(model_type="MedNeXt", study_name="s")
    with pytest.raises(StudyMismatchError, match="model_type: the study has 'Unet'"):
        open_study(tmp_path, other, "avg_f1", search_space_overrides={"dim_in": 32})
    with pytest.raises(StudyMismatchError, match="search_space_overrides"):
        open_study(tmp_path, search, "avg_f1")
    with pytest.raises(StudyMismatchError, match="holds the study 's'"):
        open_study(tmp_path, SearchConfig(study_name="t"), "avg_f1")


def test_pruners_and_per_slot_samplers() -> None:
    training = TrainingConfig(num_epochs=90, val_interval=10)
    kinds = {
        name: type(make_pruner(SearchConfig(pruner=name), training)).__name__
        for name in ("median", "halving", "none")
    }
    assert kinds == {
        "median": "MedianPruner",
        "halving": "SuccessiveHalvingPruner",
        "none": "NopPruner",
    }

    def first_lr(slot: int) -> float:
        study = optuna.create_study(sampler=make_sampler(SearchConfig(random_seed=1), slot))
        return study.ask().suggest_float("lr", 1e-4, 1e-2, log=True)

    assert first_lr(0) == first_lr(0)
    assert first_lr(0) != first_lr(1)  # concurrent slots must not all draw the same trial


@pytest.mark.parametrize("state", [TrialState.RUNNING, TrialState.FAIL])
def test_a_dead_attempt_is_repeated_with_the_same_parameters(
    tmp_path: Path, state: TrialState
) -> None:
    workflow = tiny_workflow()
    study = open_study(tmp_path, workflow.search, "avg_f1")
    old = study.ask()
    old.set_user_attr("slot", 2)
    configs = suggest(old, "Unet", workflow, None, overrides=TINY_SPACE)
    old.report(0.25, 1)
    if state == TrialState.FAIL:
        study.tell(old, state=TrialState.FAIL)
    mine = [t for t in study.get_trials() if t.user_attrs.get("slot") == 2]

    trial, repeated = slots._new_trial(study, 2, mine)

    assert repeated and trial.params == old.params
    assert trial.user_attrs["repeats_trial"] == old.number and trial.user_attrs["slot"] == 2
    assert suggest(trial, "Unet", workflow, None, overrides=TINY_SPACE) == configs
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {old.number: TrialState.FAIL, trial.number: TrialState.RUNNING}
    assert study.get_trials()[trial.number].intermediate_values == {1: 0.25}


def test_a_slot_run_by_another_process_is_refused(tmp_path: Path) -> None:
    folder = slots.trial_dir(tmp_path, 1)
    folder.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+b'); "
            "fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(folder / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SlotBusyError, match="slot 1 .* another process"):
            run_trial_slot(tmp_path, 1, tiny_workflow(), RunSplit(["a"], ["b"]))
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- with training


class Killed(BaseException):
    """Stands in for SIGKILL: nothing below the slot runner gets to clean up."""


@pytest.mark.slow
def test_a_killed_slot_resumes_the_same_trial_from_its_checkpoint(
    tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import octopi.training.trainer as trainer

    workflow, split, study_dir = tiny_workflow(tiny_project), tiny_split(tiny_project), tmp_path
    real_train = trainer.train_model

    def killed_after_epoch_1(*args, on_validation, **kwargs):
        def hook(epoch: int, metrics: dict) -> None:
            on_validation(epoch, metrics)
            raise Killed(f"killed after epoch {epoch}")

        return real_train(*args, on_validation=hook, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "train_model", killed_after_epoch_1)
        # a killed process cannot tell FAIL
        patch.setattr(slots, "record_failure", lambda *args: None)
        with pytest.raises(Killed):
            run_trial_slot(study_dir, 0, workflow, split, "none", search_space_overrides=TINY_SPACE)
    folder = slots.trial_dir(study_dir, 0)
    (dead,) = slot_trials(study_dir, 0)
    assert dead.state == TrialState.RUNNING and dead.intermediate_values.keys() == {1}
    assert (folder / "checkpoint.pt").is_file() and not (folder / "result.json").exists()

    result = run_trial_slot(
        study_dir, 0, workflow, split, "none", search_space_overrides=TINY_SPACE
    )

    assert result.state == "COMPLETE" and not result.reused
    assert result.params == dead.params
    assert (result.resumed_from_epoch, result.epochs_completed) == (1, 2)
    old, new = slot_trials(study_dir, 0)
    assert (old.state, new.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert new.user_attrs["repeats_trial"] == old.number and new.number == result.trial_number
    assert set(new.intermediate_values) == {1, 2} and new.value == result.best_metric
    written = json.loads((folder / "result.json").read_text())
    assert written["state"] == "COMPLETE" and written["slot"] == 0
    assert written["training"]["resumed_from_epoch"] == 1
    assert 0 <= written["seconds_training"] <= written["seconds_total"]
    assert written["seconds_overhead"] == pytest.approx(
        written["seconds_total"] - written["seconds_training"]
    )
    assert len((folder / "epochs.csv").read_text().splitlines()) == 3  # header + 2 epochs

    again = run_trial_slot(study_dir, 0, workflow, split, "none", search_space_overrides=TINY_SPACE)
    assert again.reused and again.to_dict() == result.to_dict()
    assert len(slot_trials(study_dir, 0)) == 2  # no new trial, no second COMPLETE
    assert not crop_threads()


@pytest.mark.slow
def test_a_pruned_slot_ends_cleanly_and_is_not_rerun(
    tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow, split = tiny_workflow(tiny_project), tiny_split(tiny_project)
    with monkeypatch.context() as patch:
        patch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
        result = run_trial_slot(
            tmp_path, 3, workflow, split, "none", search_space_overrides=TINY_SPACE
        )
    assert result.state == "PRUNED" and result.epochs_completed == 1
    (trial,) = slot_trials(tmp_path, 3)
    assert trial.state == TrialState.PRUNED and trial.value == trial.intermediate_values[1]
    written = json.loads((slots.trial_dir(tmp_path, 3) / "result.json").read_text())
    assert written["state"] == "PRUNED" and written["best_epoch"] == 1
    again = run_trial_slot(tmp_path, 3, workflow, split, "none", search_space_overrides=TINY_SPACE)
    assert again.reused and again.state == "PRUNED"
    assert not [t for t in load_study(tmp_path).get_trials() if t.state == TrialState.RUNNING]
    assert not crop_threads()
