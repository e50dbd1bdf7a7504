"""`octopi calibrate` on the tiny project: a model's card gets a calibration; bad input
leaves the card as it was."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from octopi.models.model_card import ModelCard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_infer_cli import invoke, save_model  # noqa: E402


def test_calibrate_writes_the_calibration_into_the_card(tiny_project, tmp_path):
    config, weights = save_model(tmp_path / "model", tiny_project)
    before = config.read_text()
    result = invoke(
        "calibrate", "--config", tiny_project.config_path, "--model-config", config,
        "--model-weights", weights, "--run-ids", tiny_project.run_names[0],
        "--thresholds", "0.2,0.6", "--min-size-fractions", "0.1", "--beta", "2",
        "--output", tmp_path / "calibrated.yaml",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert config.read_text() == before  # --output: the original card stays
    card = ModelCard.load(tmp_path / "calibrated.yaml")
    calibration = card.calibration
    assert calibration is not None and calibration.beta == 2.0
    assert calibration.run_ids == [tiny_project.run_names[0]]
    assert set(calibration.classes) == {c.name for c in card.classes}
    assert {c.threshold for c in calibration.classes.values()} <= {0.2, 0.6}
    assert {c.min_size_fraction for c in calibration.classes.values()} == {0.1}
    assert "weighted F2 on 1 run(s): labels" in result.output
    assert card.model_copy(update={"calibration": None}) == ModelCard.load(config)

    in_place = invoke(
        "calibrate", "--config", tiny_project.config_path, "--model-config", config,
        "--model-weights", weights, "--run-ids", tiny_project.run_names[0],
        "--thresholds", "0.5", "--min-size-fractions", "0.1",
    )  # fmt: skip
    assert in_place.exit_code == 0, in_place.output
    assert ModelCard.load(config).calibration is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weights": "missing.pth"}, "missing.pth"),
        ({"run": "TS_nope"}, "TS_nope"),
        ({"thresholds": "0.2,abc"}, "comma-separated list of floats"),
        ({"thresholds": "1.5"}, "calibration_thresholds"),
        ({"voxel": "7.5"}, "7.5"),
        ({"algorithm": "nope-alg"}, "nope-alg"),
    ],
)
def test_calibrate_bad_input_changes_nothing(tiny_project, tmp_path, change, message):
    config, weights = save_model(tmp_path / "model", tiny_project)
    before = config.read_text()
    result = invoke(
        "calibrate", "--config", tiny_project.config_path, "--model-config", config,
        "--model-weights", tmp_path / change.get("weights", weights),
        "--run-ids", change.get("run", tiny_project.run_names[0]),
        "--thresholds", change.get("thresholds", "0.5"),
        *(["--voxel-size", change["voxel"]] if "voxel" in change else []),
        *(["--tomo-alg", change["algorithm"]] if "algorithm" in change else []),
    )  # fmt: skip
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert config.read_text() == before
