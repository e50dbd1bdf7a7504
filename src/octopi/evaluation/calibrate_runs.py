"""`octopi calibrate`: calibrate a trained model's picking settings on runs with picks.

The model segments each run with ground-truth picks in memory (class probabilities, float16,
as ``segment`` stores them), and :func:`octopi.evaluation.calibration.calibrate` chooses each
class's threshold and minimum size for F-beta on those runs. Nothing is written here: the
caller stores the result in a model card.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from octopi.config import (
    CopickSource,
    EvaluationConfig,
    InferenceConfig,
    LocalizeConfig,
    PickSpec,
)
from octopi.data.copick_io import CopickProjects
from octopi.evaluation.calibration import calibrate
from octopi.evaluation.stages import runs_to_score
from octopi.inference.localize import LocalizeClass
from octopi.models.model_card import Calibration, ModelCard


def calibrate_model_on_runs(
    sources: Sequence[CopickSource],
    run_ids: Sequence[str] | None,
    model_configs: Sequence[str | Path],
    weights: Sequence[str | Path],
    ground_truth: PickSpec = PickSpec(),
    localize_settings: LocalizeConfig = LocalizeConfig(),
    evaluation: EvaluationConfig = EvaluationConfig(),
    inference: InferenceConfig = InferenceConfig(),
    device: str | None = None,
    show_progress: bool = True,
    voxel_size_angstrom: float | None = None,
    tomo_algorithm: str | None = None,
) -> tuple[ModelCard, Calibration]:
    """Calibrate the model of ``model_configs`` + ``weights`` (several: an ensemble, its
    probabilities averaged; or an ensemble folder as the only config and no weights) on
    ``run_ids`` (default: every run with ``ground_truth`` picks of the model's classes).
    Voxel size and tomogram algorithm default to the card's (its first algorithm). Returns
    the (first) card and the calibration; raises before any segmentation on bad input."""
    from tqdm.auto import tqdm

    from octopi.data.normalise import normalise_tomogram
    from octopi.inference.ensemble import load_ensemble
    from octopi.inference.ensemble_folder import resolve_model_files
    from octopi.inference.segment import ProbabilityVolume, segment_volume
    from octopi.inference.stages import check_classes_in_project
    from octopi.runtime import select_device

    files = resolve_model_files(model_configs, weights)
    torch_device = select_device(device)
    card, models = load_ensemble(files.model_configs, files.weights, torch_device)
    projects = CopickProjects(sources)
    check_classes_in_project(card, projects.objects())
    names = {c.name for c in card.classes}
    objects = [obj for obj in projects.objects() if obj.name in names]
    refs = runs_to_score(projects, run_ids, objects, ground_truth)
    voxel = card.voxel_size_angstrom if voxel_size_angstrom is None else voxel_size_angstrom
    algorithm = tomo_algorithm or card.tomo_algorithms[0]
    for ref in refs:
        projects.tomogram_shape(ref, voxel, algorithm)  # raises, listing what is there
    window = inference.window_size or card.dim_in
    probabilities: dict[str, np.ndarray] = {}
    truth: dict[str, dict[str, np.ndarray]] = {}
    for ref in tqdm(refs, desc="calibrate", unit="run", disable=not show_progress):
        volume = normalise_tomogram(
            projects.load_tomogram(ref, voxel, algorithm), card.normalisation
        )
        sink = ProbabilityVolume(volume.shape)
        segment_volume(models, volume, window, inference, torch_device, probability_sink=sink)
        probabilities[ref.key] = sink.array
        truth[ref.key] = {
            o.name: projects.load_picks_angstrom(ref, o.name, ground_truth) for o in objects
        }
    classes = [LocalizeClass(c.name, c.label, c.radius_angstrom) for c in card.classes]
    calibration = calibrate(
        probabilities, truth, classes, voxel, localize_settings, evaluation,
        show_progress=show_progress,
    )  # fmt: skip
    return card, calibration
