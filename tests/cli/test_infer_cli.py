"""`octopi segment`, `octopi localize` and `octopi evaluate` end to end on the tiny project."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from octopi.cli import main
from octopi.config import CopickSource, PickSpec, TargetSpec, UnetConfig
from octopi.data.copick_io import CopickProjects
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import build_model

PREDICT = TargetSpec(name="predict", user_id="octopi", session_id="1")


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def save_model(directory: Path, project, classes=None, architecture=None, seed=0):
    """A randomly initialised tiny Unet for the project's classes: (config, weights) paths."""
    objects = CopickProjects([CopickSource(path=project.config_path)]).objects()
    card = ModelCard(
        architecture=architecture or UnetConfig(channels=[4, 8, 16], strides=[2, 2]),
        dim_in=32,
        classes=classes
        or [
            ClassInfo(name=o.name, label=o.label, radius_angstrom=o.radius_angstrom)
            for o in objects
        ],
        voxel_size_angstrom=project.voxel_size_angstrom,
        tomo_algorithms=["wbp"],
    )
    directory.mkdir(parents=True, exist_ok=True)
    card.save(directory / "model_config.yaml")
    torch.manual_seed(seed)
    torch.save(build_model(card).state_dict(), directory / "best_model_weights.pth")
    return directory / "model_config.yaml", directory / "best_model_weights.pth"


def segmentations(project) -> dict[str, list[str]]:
    projects = CopickProjects([CopickSource(path=project.config_path)])
    return {
        ref.key: projects.segmentation_names(ref, project.voxel_size_angstrom)
        for ref in projects.runs()
    }


# --------------------------------------------------------------------------- segment


def test_segment_writes_label_volumes_copick_reads_back(tiny_project_copy, tmp_path):
    project = tiny_project_copy
    config, weights = save_model(tmp_path / "model", project)
    output = tmp_path / "segment-out"
    result = invoke(
        "segment",
        "--config", project.config_path,
        "--model-config", config,
        "--model-weights", weights,
        "--run-ids", ",".join(project.run_names[:2]),
        "--window-batch-size", "2",
        "--output", output,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    projects = CopickProjects([project.source])
    for key in project.run_names[:2]:
        labels = projects.load_segmentation(
            projects.resolve(key), project.voxel_size_angstrom, PREDICT
        )
        assert labels.shape == project.shape_zyx
        assert labels.dtype == np.uint8
        assert labels.max() <= 6
    for key in project.run_names[2:]:
        assert "predict,octopi,1" not in segmentations(project)[key]
    resolved = yaml.safe_load((output / "segment_config.yaml").read_text())
    assert resolved["voxel_size_angstrom"] == project.voxel_size_angstrom
    assert resolved["tomo_algorithm"] == "wbp"
    assert resolved["inference"]["window_size"] == 32
    timings = json.loads((output / "segment.json").read_text())
    assert set(timings["runs"]) == set(project.run_names[:2])


def test_segment_ensemble_with_tta(tiny_project_copy, tmp_path):
    project = tiny_project_copy
    a = save_model(tmp_path / "a", project, seed=0)
    b = save_model(tmp_path / "b", project, seed=1)
    result = invoke(
        "segment",
        "--config", project.config_path,
        "--model-config", f"{a[0]},{b[0]}",
        "--model-weights", f"{a[1]},{b[1]}",
        "--run-ids", project.run_names[0],
        "--seg-info", "ensemble,octopi,2",
        "--tta", "flips",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ensemble,octopi,2" in segmentations(project)[project.run_names[0]]


def _bad_model(kind: str, directory: Path, project) -> tuple[Path, Path]:
    if kind == "weights":
        config, _ = save_model(directory / "good", project)
        _, other = save_model(
            directory / "other",
            project,
            architecture=UnetConfig(channels=[4, 8, 32], strides=[2, 2]),
        )
        return config, other
    if kind == "classes":
        classes = [ClassInfo(name="not-a-protein", label=9, radius_angstrom=50.0)]
        return save_model(directory / "alien", project, classes=classes)
    return save_model(directory / "good", project)


@pytest.mark.parametrize(
    ("kind", "extra", "message"),
    [
        ("weights", [], "do not match the model config"),
        ("classes", [], "not-a-protein"),
        ("tomogram", ["--tomo-alg", "imod"], "tomogram 'imod' not found"),
        ("run", ["--run-ids", "TS_0,TS_99"], "unknown run ID 'TS_99'"),
        ("target", ["--seg-info", "targets,octopi,1"], "overwrite the training targets"),
        ("window", ["--window-size", "30"], "--window-size 30 is not a multiple of 4"),
    ],
)
def test_segment_bad_input_is_a_clear_error_and_writes_nothing(
    tiny_project_copy, tmp_path, kind, extra, message
):
    project = tiny_project_copy
    config, weights = _bad_model(kind, tmp_path, project)
    before = segmentations(project)
    result = invoke(
        "segment",
        "--config", project.config_path,
        "--model-config", config,
        "--model-weights", weights,
        *extra,
    )  # fmt: skip
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert segmentations(project) == before
    if kind == "classes":  # the error names both sides
        assert "apo-ferritin" in result.output
    if kind == "tomogram":  # and what is there
        assert "wbp" in result.output
    if kind == "run":
        assert "TS_3" in result.output


# --------------------------------------------------------------------------- localize + evaluate


def test_oracle_targets_localize_and_evaluate_above_095(tiny_project_copy, tmp_path):
    """The issue's acceptance test: ground-truth targets as the segmentation score > 0.95."""
    project = tiny_project_copy
    located = invoke(
        "localize",
        "--config", project.config_path,
        "--seg-info", "targets,octopi,1",
        "--output", tmp_path / "localize",
    )  # fmt: skip
    assert located.exit_code == 0, located.output
    assert (tmp_path / "localize" / "localize_config.yaml").is_file()
    metrics = tmp_path / "test" / "metrics.json"
    scored = invoke("evaluate", "--config", project.config_path, "--output", metrics)
    assert scored.exit_code == 0, scored.output
    assert "weighted F4" in scored.output
    report = json.loads(metrics.read_text())
    assert report["weighted_fbeta"] > 0.95, scored.output
    assert set(report["per_run"]) == set(project.run_names)
    resolved = yaml.safe_load((metrics.parent / "evaluate_config.yaml").read_text())
    assert resolved["evaluation"]["beta"] == 4.0
    # Picks were written in Å as (x, y, z) with scores, under octopi/1.
    projects = CopickProjects([project.source])
    ref = projects.resolve(project.run_names[0])
    picked = projects.load_picks_angstrom(
        ref, "ribosome", PickSpec(user_id="octopi", session_id="1")
    )
    truth = projects.load_picks_angstrom(ref, "ribosome", PickSpec())
    assert len(picked) == len(truth)
    assert np.abs(picked.max(axis=0) - truth.max(axis=0)).max() < 20.0


def test_evaluate_options_reach_the_scorer(tiny_project_copy, tmp_path):
    project = tiny_project_copy
    invoke(
        "localize",
        "--config", project.config_path,
        "--seg-info", "targets,octopi,1",
        "--objects", "ribosome,apo-ferritin",
        "--pick-info", "mine,7",
    )  # fmt: skip
    output = tmp_path / "m.json"
    result = invoke(
        "evaluate",
        "--config", project.config_path,
        "--pred-info", "mine,7",
        "--objects", "ribosome,apo-ferritin",
        "--run-ids", project.run_names[0],
        "--beta", "1",
        "--class-weights", "ribosome=3,apo-ferritin=0.5",
        "--output", output,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(output.read_text())
    assert report["beta"] == 1.0
    assert list(report["per_run"]) == [project.run_names[0]]
    assert {n: c["weight"] for n, c in report["per_class"].items()} == {
        "ribosome": 3.0,
        "apo-ferritin": 0.5,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["localize", "--seg-info", "nothing,octopi,1"], "segmentation nothing,octopi,1 not found"),
        (["localize", "--objects", "unicorn"], "unknown object(s) unicorn"),
        (["evaluate", "--pred-info", "nobody,0"], "no predicted picks nobody,0"),
        (["evaluate", "--gt-info", "nobody,0"], "no run has ground-truth picks nobody,0"),
        (["evaluate", "--class-weights", "ribosome:2"], "name=weight"),
    ],
)
def test_localize_and_evaluate_errors(tiny_project, args, message):
    result = invoke(args[0], "--config", tiny_project.config_path, *args[1:])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
