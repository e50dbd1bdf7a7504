"""An ensemble folder (best_ensemble/ as select-best writes it) is one model for segment."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from octopi.config import CopickSource
from octopi.data.copick_io import CopickProjects
from octopi.inference.ensemble_folder import (
    ENSEMBLE_FILE,
    EnsembleCard,
    EnsembleMember,
    write_ensemble_folder,
)
from octopi.models.model_card import Calibration, ClassCalibration

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_infer_cli import PREDICT, invoke, save_model  # noqa: E402


def make_ensemble(project, tmp_path: Path) -> Path:
    sources = []
    for seed in (0, 1):
        config, _ = save_model(tmp_path / f"model{seed}", project, seed=seed)
        sources.append((config.parent, EnsembleMember(folder=f"member_{seed}", slot=seed)))
    write_ensemble_folder(tmp_path / "ensemble", sources, "fBeta4")
    return tmp_path / "ensemble"


def probabilities(project, tmp_path: Path, name: str, *model: str) -> np.ndarray:
    session = f"p{name}"
    result = invoke(
        "segment", "--config", project.config_path, *model,
        "--run-ids", project.run_names[0], "--seg-info", f"predict,octopi,{session}",
        "--tta", "none", "--amp", "off",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    projects = CopickProjects([CopickSource(path=project.config_path)])
    ref = projects.resolve(project.run_names[0])
    target = PREDICT.model_copy(update={"session_id": session})
    voxel = project.voxel_size_angstrom
    channels = projects.probability_channels(ref, voxel, target)
    return np.stack(
        [projects.load_probability(ref, voxel, target, name) for name in sorted(channels)]
    ).astype(np.float32)


@pytest.mark.filterwarnings("ignore:.*max_foreground_fraction:RuntimeWarning")
def test_segment_takes_an_ensemble_folder_and_averages_its_members(tiny_project_copy, tmp_path):
    project = tiny_project_copy
    folder = make_ensemble(project, tmp_path)
    members = [
        probabilities(
            project,
            tmp_path,
            str(seed),
            "--model-config",
            folder / f"member_{seed}" / "model_config.yaml",
            "--model-weights",
            folder / f"member_{seed}" / "best_model_weights.pth",
        )  # fmt: skip
        for seed in (0, 1)
    ]
    assert np.abs(members[0] - members[1]).max() > 0.01  # two different networks
    averaged = probabilities(project, tmp_path, "e", "--model-config", folder)
    # float16 noise, plus half a stored step of 1/255 on each side (members and ensemble)
    np.testing.assert_allclose(averaged, (members[0] + members[1]) / 2, atol=2e-3 + 1 / 255)
    also = probabilities(project, tmp_path, "f", "--model-config", folder / ENSEMBLE_FILE)
    np.testing.assert_array_equal(also, averaged)


def test_the_ensemble_calibration_is_stored_with_its_probabilities(tiny_project_copy, tmp_path):
    project = tiny_project_copy
    folder = make_ensemble(project, tmp_path)
    card = EnsembleCard.load(folder / ENSEMBLE_FILE)
    chosen = ClassCalibration(
        threshold=0.2, min_size_fraction=0.1, fbeta=0.5, precision=0.5, recall=0.5,
        fbeta_labels=0.1,
    )  # fmt: skip
    calibration = Calibration(beta=4.0, run_ids=["TS_1"], classes={"ribosome": chosen})
    card.model_copy(update={"calibration": calibration}).save(folder / ENSEMBLE_FILE)
    result = invoke(
        "segment", "--config", project.config_path, "--model-config", folder,
        "--run-ids", project.run_names[0],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    projects = CopickProjects([CopickSource(path=project.config_path)])
    ref = projects.resolve(project.run_names[0])
    stored = projects.probability_calibration(ref, project.voxel_size_angstrom, PREDICT)
    assert stored == {"ribosome": {"threshold": 0.2, "min_size_fraction": 0.1}}


@pytest.mark.parametrize(
    ("damage", "extra", "message"),
    [
        ("weights", [], "is incomplete"),
        (None, ["--model-weights", "x.pth"], "drop --model-weights"),
        ("yaml", [], "ensemble"),
    ],
)
def test_a_broken_ensemble_folder_is_one_line(tiny_project, tmp_path, damage, extra, message):
    folder = make_ensemble(tiny_project, tmp_path)
    if damage == "weights":
        (folder / "member_1" / "best_model_weights.pth").unlink()
    elif damage == "yaml":
        (folder / ENSEMBLE_FILE).write_text("members: [{folder: member_0}]\n")  # one member
    result = invoke(
        "segment", "--config", tiny_project.config_path, "--model-config", folder, *extra
    )
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_segment_without_weights_or_folder_is_refused(tiny_project, tmp_path):
    config, _ = save_model(tmp_path / "model", tiny_project)
    result = invoke("segment", "--config", tiny_project.config_path, "--model-config", config)
    assert result.exit_code != 0
    assert "give --model-weights" in result.output
