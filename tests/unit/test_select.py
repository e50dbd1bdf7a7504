"""Best-model selection on studies made directly with Optuna (no training)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from optuna.trial import TrialState

from octopi.config import CopickSource, DataConfig, SearchConfig, TrainingConfig, WorkflowConfig
from octopi.models.trial_sampling import suggest
from octopi.search import slots
from octopi.search.select import select_best, trials_table
from octopi.search.storage import StudyMismatchError, open_study
from octopi.search.trial_configs import TRIAL_CONFIG_NAME

WORKFLOW = WorkflowConfig(
    data=DataConfig(configs=[CopickSource(path="unused/copick.json")]),
    training=TrainingConfig(num_epochs=3, val_interval=1),
    search=SearchConfig(num_trials=8, study_name="select", pruner="none", ensemble_size=0),
)
SPACE = {"dim_in": [32, 48], "batch_size": [1, 2], "base_channel": [4, 8]}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def add_trial(study_dir: Path, study, slot: int, state: TrialState, value: float | None) -> None:
    """A trial for ``slot`` as a slot runner leaves it, with fake model files."""
    trial = study.ask()
    trial.set_user_attr("slot", slot)
    architecture, training = suggest(trial, "Unet", WORKFLOW, None, overrides=SPACE)
    folder = slots.trial_dir(study_dir, slot)
    folder.mkdir(parents=True)
    (folder / "model_config.yaml").write_text(f"slot: {slot}\n")
    (folder / "best_model_weights.pth").write_bytes(bytes([slot]) * 16)
    rows = ["epoch,train_loss,val_avg_f1"] + [
        f"{epoch},{1.0 / epoch},{(value or 0.1) * epoch / 3}" for epoch in (1, 2, 3)
    ]
    (folder / "epochs.csv").write_text("\n".join(rows) + "\n")
    (folder / TRIAL_CONFIG_NAME).write_text(
        json.dumps(
            {
                "architecture": architecture.model_dump(mode="json"),
                "training": training.model_dump(mode="json"),
            }
        )
    )
    if value is not None:
        trial.report(value, 3)
    if state == TrialState.COMPLETE:
        trial.set_user_attr("best_epoch", 3)
        study.tell(trial, value)
    elif state != TrialState.RUNNING:
        study.tell(trial, state=state)


def make_mixed_study(tmp_path: Path) -> Path:
    """Slots 0-2 COMPLETE (1 and 2 tie), 3 PRUNED with the highest value, 4 FAIL, 5 RUNNING."""
    study = open_study(tmp_path, WORKFLOW.search, "avg_f1")
    for slot, state, value in [
        (0, TrialState.COMPLETE, 0.5),
        (2, TrialState.COMPLETE, 0.8),
        (1, TrialState.COMPLETE, 0.8),
        (3, TrialState.PRUNED, 0.95),
        (4, TrialState.FAIL, None),
        (5, TrialState.RUNNING, None),
    ]:
        add_trial(tmp_path, study, slot, state, value)
    return tmp_path


@pytest.fixture
def mixed_study(tmp_path: Path) -> Path:
    return make_mixed_study(tmp_path)


@pytest.fixture(scope="module")
def selected(tmp_path_factory: pytest.TempPathFactory):
    """The mixed study after one selection (plots take seconds: select once per module)."""
    study_dir = make_mixed_study(tmp_path_factory.mktemp("selected"))
    return study_dir, select_best(study_dir, WORKFLOW, tracking_uri="none")


def test_best_complete_trial_wins_ties_go_to_the_lower_slot(selected) -> None:
    mixed_study, summary = selected

    assert (summary.slot, summary.best_metric, summary.metric_name) == (1, 0.8, "avg_f1")
    assert summary.trial_counts == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1, "RUNNING": 1}
    best = mixed_study / "best"
    assert (best / "model_config.yaml").read_text() == "slot: 1\n"
    assert (best / "best_model_weights.pth").read_bytes() == bytes([1]) * 16
    written = json.loads((best / "summary.json").read_text())
    assert written["slot"] == 1 and written["trial_number"] == summary.trial_number
    assert written["params"] == summary.params and written["architecture"]["model_type"] == "Unet"
    assert written["best_epoch"] == 3


def test_trials_csv_has_one_row_per_trial(selected) -> None:
    mixed_study, _ = selected
    with open(mixed_study / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["slot"] for row in rows] == ["0", "1", "2", "3", "4", "5"]
    assert [row["state"] for row in rows] == [
        "COMPLETE",
        "COMPLETE",
        "COMPLETE",
        "PRUNED",
        "FAIL",
        "RUNNING",
    ]
    assert rows[1]["value"] == "0.8" and rows[4]["value"] == ""
    assert {"param_lr", "param_dim_in", "param_base_channel", "seconds"} <= set(rows[0])
    assert rows[0]["seconds"] and not rows[5]["seconds"]


def test_plots_are_written(selected) -> None:
    mixed_study, summary = selected
    written = sorted(p.name for p in (mixed_study / "plots").glob("*.png"))
    assert {"optimization_history.png", "parallel_coordinate.png", "best_trial_curves.png"} <= set(
        written
    )
    for name in written:
        assert (mixed_study / "plots" / name).read_bytes()[:8] == PNG_MAGIC
    # Three COMPLETE trials with two distinct values: the importances can and must be drawn.
    assert summary.plots["importances"] == "param_importances.png"
    assert "param_importances.png" in written


def test_importances_are_skipped_when_every_value_is_the_same(tmp_path: Path) -> None:
    study = open_study(tmp_path, WORKFLOW.search, "avg_f1")
    for slot in (0, 1, 2):
        add_trial(tmp_path, study, slot, TrialState.COMPLETE, 0.4)
    summary = select_best(tmp_path, WORKFLOW, tracking_uri="none")
    assert summary.plots["importances"] == "skipped: every complete trial has avg_f1 0.4"
    assert not (tmp_path / "plots" / "param_importances.png").exists()


def test_importances_are_skipped_with_a_note_for_one_complete_trial(tmp_path: Path) -> None:
    study = open_study(tmp_path, WORKFLOW.search, "avg_f1")
    add_trial(tmp_path, study, 0, TrialState.COMPLETE, 0.3)
    summary = select_best(tmp_path, WORKFLOW, tracking_uri="none")
    assert summary.plots["importances"].startswith("skipped: needs 2 complete trials")
    assert (tmp_path / "plots" / "optimization_history.png").is_file()


def test_no_complete_trial_is_an_error(tmp_path: Path) -> None:
    study = open_study(tmp_path, WORKFLOW.search, "avg_f1")
    add_trial(tmp_path, study, 0, TrialState.PRUNED, 0.4)
    add_trial(tmp_path, study, 1, TrialState.FAIL, None)
    with pytest.raises(ValueError, match=r"no COMPLETE trial .*1 FAIL, 1 PRUNED"):
        select_best(tmp_path, WORKFLOW, tracking_uri="none")
    assert not (tmp_path / "best").exists()


def test_no_study_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no Optuna study"):
        select_best(tmp_path, WORKFLOW, tracking_uri="none")


def test_a_study_of_another_metric_is_refused(mixed_study: Path) -> None:
    other = WORKFLOW.model_copy(update={"training": TrainingConfig(best_metric="fBeta4")})
    with pytest.raises(StudyMismatchError, match="metric: the study has 'avg_f1'"):
        select_best(mixed_study, other, tracking_uri="none")


def test_missing_model_files_say_which_slot_to_rerun(mixed_study: Path) -> None:
    (slots.trial_dir(mixed_study, 1) / "best_model_weights.pth").unlink()
    with pytest.raises(FileNotFoundError, match="--slot 1"):
        select_best(mixed_study, WORKFLOW, tracking_uri="none")


def test_trials_table_of_no_trials_is_a_header() -> None:
    assert trials_table([]).splitlines() == [
        "slot,number,state,value,best_epoch,seconds,seconds_training"
    ]
