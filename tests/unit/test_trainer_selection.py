"""`train_model`: the best checkpoint and early stopping follow the metric; bad input is
refused before anything is written (split from test_trainer.py, whose helpers it uses)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from octopi.config import PickSpec
from octopi.data.copick_io import CopickDataError
from octopi.training.checkpoint import cpu_state_dict
from octopi.training.trainer import train_model
from octopi.training.validation import Validator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_trainer import (  # noqa: E402
    SETTINGS,
    TINY_ARCH,
    one_torch_thread,  # noqa: F401 - the module's autouse fixture: one torch thread
    states_equal,
    tiny_data,
    tiny_training,
)

# --------------------------------------------------------------------------- selection


def test_best_checkpoint_and_early_stopping_follow_the_metric(
    tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = [0.2, 0.5, 0.4, 0.3, 0.9, 0.9]
    validated: list[dict] = []

    def fake_score(self, model):
        # The EMA copy (frozen parameters) is what gets validated and saved.
        assert not any(parameter.requires_grad for parameter in model.parameters())
        value = scripted[len(validated)]
        validated.append(cpu_state_dict(model))
        return {"avg_f1": value, "weighted_fbeta": value / 2, "seconds": 0.0}, None

    monkeypatch.setattr(Validator, "score", fake_score)
    output = tmp_path / "early"
    training = tiny_training(num_epochs=6, early_stopping_patience=2)
    data = tiny_data(tiny_project)
    result = train_model(data, training, TINY_ARCH, output, tracking_uri="none", **SETTINGS)
    assert result.stopped_early and result.epochs_completed == 4
    assert result.best_epoch == 2 and result.best_metric == 0.5
    assert result.best_validation["weighted_fbeta"] == 0.25
    best = torch.load(output / "best_model_weights.pth", weights_only=True)
    assert states_equal(best, validated[1])
    assert not states_equal(best, validated[3])
    # The run is over: rerunning returns the result without training more.
    again = train_model(data, training, TINY_ARCH, output, tracking_uri="none", **SETTINGS)
    assert again.epochs_completed == 4 and len(validated) == 4


def test_fbeta_metric_selects_by_its_own_value(
    tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def fake_score(self, model):
        calls.append(self.best_metric)
        value = [0.1, 0.3][len(calls) - 1]
        return {"avg_f1": 1.0 - value, "weighted_fbeta": 0.0, "fBeta2": value, "seconds": 0}, None

    monkeypatch.setattr(Validator, "score", fake_score)
    training = tiny_training(num_epochs=2, best_metric="fBeta2")
    result = train_model(
        tiny_data(tiny_project),
        training,
        TINY_ARCH,
        tmp_path / "f",
        tracking_uri="none",
        **SETTINGS,
    )
    assert calls == ["fBeta2", "fBeta2"]
    assert result.best_epoch == 2 and result.best_metric == pytest.approx(0.3)


# --------------------------------------------------------------------------- bad input


def test_validation_runs_without_ground_truth_are_refused(tiny_project, tmp_path: Path) -> None:
    data = tiny_data(tiny_project, ground_truth=PickSpec(user_id="nobody", session_id="9"))
    with pytest.raises(CopickDataError, match="no ground-truth picks"):
        train_model(data, tiny_training(), TINY_ARCH, tmp_path / "out", **SETTINGS)
    assert not (tmp_path / "out").exists()


def test_a_given_split_with_unusable_runs_is_refused(tiny_project, tmp_path: Path) -> None:
    from octopi.data.split import RunSplit

    split = RunSplit(train=tiny_project.run_names[:2], validate=["TS_99"])
    with pytest.raises(CopickDataError, match="TS_99"):
        train_model(
            tiny_data(tiny_project),
            tiny_training(),
            TINY_ARCH,
            tmp_path / "o",
            split=split,
            **SETTINGS,
        )
    assert not (tmp_path / "o").exists()


def test_an_output_path_that_is_a_file_is_refused(tiny_project, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        train_model(tiny_data(tiny_project), tiny_training(), TINY_ARCH, target, **SETTINGS)
