"""Validation picks the way `octopi segment` + `octopi localize` pick (class probabilities,
thresholded per class), so a trial's score is the score of the tools' picks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from octopi.config import (
    EvaluationConfig,
    InferenceConfig,
    LocalizeConfig,
    PickSpec,
    TargetSpec,
    UnetConfig,
)
from octopi.data.copick_io import CopickProjects
from octopi.inference.localize_stages import localize_runs
from octopi.inference.stages import segment_runs
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import build_model
from octopi.training import validation as validation_module
from octopi.training.validation import Validator

INFERENCE = InferenceConfig(amp="off")
# A random network: no class covers a tenth of the volume only by luck, so no cap.
LOCALIZE = LocalizeConfig(source="auto", score_threshold=0.3, max_foreground_fraction=None)
THRESHOLDS = LOCALIZE.model_copy(update={"per_class_threshold": {"ribosome": 0.3}})
UNCALIBRATED = LOCALIZE.model_copy(update={"calibrate": False})


def peaky_model(project, seed: int = 0) -> tuple[ModelCard, torch.nn.Module]:
    """A tiny Unet whose weights are scaled up, so its softmax is far from uniform."""
    objects = CopickProjects([project.source]).objects()
    card = ModelCard(
        architecture=UnetConfig(channels=[4, 8, 16], strides=[2, 2]),
        dim_in=32,
        classes=[
            ClassInfo(name=o.name, label=o.label, radius_angstrom=o.radius_angstrom)
            for o in objects
        ],  # fmt: skip
        voxel_size_angstrom=project.voxel_size_angstrom,
        tomo_algorithms=["wbp"],
    )
    torch.manual_seed(seed)
    model = build_model(card).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3.0)
    return card, model


def validator(
    project, card, model, localize=LOCALIZE, inference=INFERENCE, ground_truth=None
) -> Validator:
    return Validator(
        CopickProjects([project.source]),
        project.run_names[:1],
        "wbp",
        card,
        ground_truth or {project.run_names[0]: {}},
        inference,
        localize,
        EvaluationConfig(),
        "fBeta4",
        torch.device("cpu"),
    )


def test_validation_picks_equal_the_tools_picks(tiny_project_copy, tmp_path):
    project = tiny_project_copy
    card, model = peaky_model(project)
    from_validation = validator(project, card, model).picks(model)[project.run_names[0]]

    card.save(tmp_path / "model_config.yaml")
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    target = TargetSpec(name="predict", user_id="octopi", session_id="1")
    segment_runs(
        [project.source], project.run_names[:1], [tmp_path / "model_config.yaml"],
        [tmp_path / "weights.pth"], target, INFERENCE, device="cpu", show_progress=False,
    )  # fmt: skip
    picks = PickSpec(user_id="octopi", session_id="1")
    localize_runs([project.source], project.run_names[:1], target, picks, LOCALIZE)
    projects = CopickProjects([project.source])
    ref = projects.resolve(project.run_names[0])
    total = 0
    for name, positions in from_validation.items():
        from_tools = projects.load_picks_angstrom(ref, name, picks)
        order = np.lexsort(from_tools.T)
        np.testing.assert_allclose(positions[np.lexsort(positions.T)], from_tools[order])
        total += len(positions)
    assert total > 0  # the comparison compared picks


@pytest.mark.parametrize(
    ("localize", "inference", "expected"),
    [
        (LOCALIZE.model_copy(update={"source": "probabilities"}), INFERENCE, (4, np.float16)),
        (THRESHOLDS, INFERENCE, (4, np.float16)),
        (LOCALIZE.model_copy(update={"source": "labels"}), INFERENCE, (3, np.uint8)),
        (LOCALIZE, INFERENCE.model_copy(update={"save_probabilities": False}), (3, np.uint8)),
        # auto without calibration: the argmax labels (a fixed 0.5 lost the demo's weak models
        # most of their recall: test F4 0.39 from labels, 0.24 at 0.5); with calibration (the
        # default) score() calibrates instead, see test_calibrated_validation_*
        (UNCALIBRATED, INFERENCE, (3, np.uint8)),
        (LocalizeConfig(calibrate=False, max_foreground_fraction=None), INFERENCE, (3, np.uint8)),
    ],
    ids=[
        "probabilities",
        "auto-with-class-thresholds",
        "source-labels",
        "segment-without-probabilities",
        "auto-uncalibrated",
        "default-labels",
    ],
)
def test_validation_localizes_what_the_tools_would(
    tiny_project, monkeypatch, localize, inference, expected
):
    seen = []

    def spy(segmentation, *args, **kwargs):
        seen.append((segmentation.ndim, segmentation.dtype))
        return {}

    monkeypatch.setattr(validation_module, "localize", spy)
    card, model = peaky_model(tiny_project)
    validator(tiny_project, card, model, localize, inference).picks(model)
    assert seen == [expected]


@pytest.mark.parametrize(
    "named",
    [
        {"per_class_threshold": {"unicorn": 0.2}},
        {"per_class_min_size_fraction": {"unicorn": 0.2}},
        {"argmax_classes": ["ribosome", "unicorn"]},
    ],
)
def test_settings_naming_a_class_the_model_lacks_are_refused(tiny_project, named):
    card, model = peaky_model(tiny_project)
    field = next(iter(named))
    with pytest.raises(ValueError, match=f"{field}: unicorn"):
        validator(tiny_project, card, model, LocalizeConfig(**named))


def test_thresholds_that_cannot_act_in_validation_are_refused(tiny_project):
    card, model = peaky_model(tiny_project)
    labels = LocalizeConfig(source="labels", per_class_threshold={"ribosome": 0.2})
    with pytest.raises(ValueError, match="acts on class probabilities"):
        validator(tiny_project, card, model, labels)


def _ground_truth(project) -> dict[str, dict[str, np.ndarray]]:
    projects = CopickProjects([project.source])
    ref = projects.resolve(project.run_names[0])
    truth = PickSpec(user_id="curation", session_id="0")
    return {
        project.run_names[0]: {
            o.name: projects.load_picks_angstrom(ref, o.name, truth) for o in projects.objects()
        }
    }


def test_calibrated_validation_scores_the_picks_of_the_calibrated_settings(tiny_project):
    """By default (calibration after training, source auto) validation ranks checkpoints by
    the picking the model will be used with: its calibrated thresholds and sizes. Checked
    against picking with those settings given explicitly, scored by the uncalibrated path."""
    card, model = peaky_model(tiny_project)
    truth = _ground_truth(tiny_project)
    calibrated = validator(tiny_project, card, model, LOCALIZE, ground_truth=truth)
    assert calibrated.calibrated
    metrics, report = calibrated.score(model)
    calibration = calibrated.calibrate(model)
    explicit = LOCALIZE.model_copy(
        update={
            "calibrate": False,
            "per_class_threshold": {n: c.threshold for n, c in calibration.classes.items()},
            "per_class_min_size_fraction": {
                n: c.min_size_fraction for n, c in calibration.classes.items()
            },
        }
    )
    by_hand, _ = validator(tiny_project, card, model, explicit, ground_truth=truth).score(model)
    assert metrics["fBeta4"] == pytest.approx(by_hand["fBeta4"])
    assert metrics["fBeta4"] == pytest.approx(calibration.weighted_fbeta["calibrated"])
    assert metrics["labels_weighted_fbeta"] == pytest.approx(calibration.weighted_fbeta["labels"])
    assert sum(c.true_positives for c in report.per_class.values()) > 0  # it found something


def test_validation_without_calibration_after_training_scores_labels(tiny_project):
    card, model = peaky_model(tiny_project)
    plain = validator(
        tiny_project, card, model, UNCALIBRATED, ground_truth=_ground_truth(tiny_project)
    )
    assert not plain.calibrated
    metrics, _ = plain.score(model)
    assert "labels_weighted_fbeta" not in metrics
