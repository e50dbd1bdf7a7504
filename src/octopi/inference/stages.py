"""Copick-level inference stage: segment runs with a trained ensemble.

It checks every input (model files, classes, runs, tomograms) before it writes anything, so a
bad argument leaves the copick project unchanged. Localizing particles in the segmentations is
:mod:`octopi.inference.localize_stages`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from octopi.class_match import unmatched_classes
from octopi.config import (
    DEFAULT_SEGMENTATION_TARGET,
    CopickSource,
    InferenceConfig,
    TargetSpec,
)
from octopi.data.copick_io import CopickDataError, CopickProjects, ParticleObject, RunRef
from octopi.errors import InputError

if TYPE_CHECKING:
    import torch

    from octopi.models.model_card import Calibration, ModelCard


@dataclass(frozen=True)
class SegmentedRun:
    """One segmented run: tomogram shape (Z, Y, X) and wall-clock seconds (load to write)."""

    shape_zyx: tuple[int, int, int]
    seconds: float


@dataclass(frozen=True)
class SegmentSummary:
    """What :func:`segment_runs` did, with the settings it resolved from the model card."""

    runs: dict[str, SegmentedRun]
    voxel_size_angstrom: float
    tomo_algorithm: str
    window_size: int
    seg_target: TargetSpec
    device: str
    probabilities: bool = False

    def to_dict(self) -> dict:
        return {
            "voxel_size_angstrom": self.voxel_size_angstrom,
            "tomo_algorithm": self.tomo_algorithm,
            "window_size": self.window_size,
            "seg_target": str(self.seg_target),
            "device": self.device,
            "probabilities": self.probabilities,
            "runs": {key: asdict(run) for key, run in self.runs.items()},
        }


# --------------------------------------------------------------------------- segment


def check_classes_in_project(card: ModelCard, objects: Sequence[ParticleObject]) -> None:
    """Raise unless every class of the card is a project object with the same label."""
    project = {obj.name: obj.label for obj in objects}
    wrong = [f"{c.name} (label {c.label})" for c in unmatched_classes(card.classes, objects)]
    if wrong:
        raise CopickDataError(
            f"model classes {', '.join(wrong)} are not objects of the copick project with the "
            f"same label; model classes: "
            f"{', '.join(f'{c.name}={c.label}' for c in card.classes)}; project objects: "
            f"{', '.join(f'{name}={label}' for name, label in project.items()) or 'none'}. "
            "Use a copick config whose pickable objects match the model's classes."
        )


def resolve_runs(projects: CopickProjects, run_ids: Sequence[str] | None) -> list[RunRef]:
    """The runs named by ``run_ids`` (every run when None); unknown IDs raise, listing runs."""
    if run_ids is None:
        refs = projects.runs()
        if not refs:
            raise CopickDataError(
                f"the copick project(s) {', '.join(str(s.path) for s in projects.sources)} "
                "have no runs"
            )
        return refs
    if not run_ids:
        raise InputError("--run-ids is empty; name at least one run or leave it out for all")
    return list(dict.fromkeys(projects.resolve(key) for key in run_ids))  # drop repeats


def segment_runs(
    sources: Sequence[CopickSource],
    run_ids: Sequence[str] | None,
    model_configs: Sequence[str | Path],
    weights: Sequence[str | Path],
    seg_target: TargetSpec = DEFAULT_SEGMENTATION_TARGET,
    settings: InferenceConfig = InferenceConfig(),
    voxel_size_angstrom: float | None = None,
    tomo_algorithm: str | None = None,
    device: str | None = None,
    show_progress: bool = True,
) -> SegmentSummary:
    """Segment tomograms with an ensemble and write (Z, Y, X) uint8 labels to ``seg_target``,
    and with ``settings.save_probabilities`` the (C, Z, Y, X) float16 class probabilities
    beside them (:mod:`octopi.data.probability_store`).

    Voxel size and tomogram algorithm default to the first model card's (its first
    algorithm); the window edge to ``settings.window_size`` or the card's ``dim_in``.
    Everything is checked before the first segmentation is written.
    """
    from octopi.inference.ensemble import load_ensemble
    from octopi.inference.ensemble_folder import resolve_model_files
    from octopi.runtime import select_device

    files = resolve_model_files(model_configs, weights)
    model_configs = files.model_configs
    torch_device = select_device(device)
    card, models = load_ensemble(model_configs, files.weights, torch_device)
    voxel_size = card.voxel_size_angstrom if voxel_size_angstrom is None else voxel_size_angstrom
    algorithm = tomo_algorithm or card.tomo_algorithms[0]
    window = settings.window_size or card.dim_in
    _check_window_and_target(card, window, seg_target, model_configs[0])
    projects = CopickProjects(sources)
    check_classes_in_project(card, projects.objects())
    refs = resolve_runs(projects, run_ids)
    for ref in refs:
        projects.tomogram_shape(ref, voxel_size, algorithm)  # raises, listing what is there
    segmenter = _Segmenter(
        card, models, window, settings, torch_device, show_progress, files.calibration
    )
    where = _SegmentTarget(projects, voxel_size, algorithm, seg_target)
    runs = {ref.key: _segment_run(segmenter, where, ref) for ref in refs}
    return SegmentSummary(
        runs=runs,
        voxel_size_angstrom=voxel_size,
        tomo_algorithm=algorithm,
        window_size=window,
        seg_target=seg_target,
        device=str(torch_device),
        probabilities=settings.save_probabilities,
    )


def _check_window_and_target(
    card: ModelCard, window: int, seg_target: TargetSpec, model_config: str | Path
) -> None:
    """Refuse a window the network cannot take and a target that would overwrite the
    training targets."""
    factor = card.architecture.downsampling_factor()
    if window % factor:
        raise InputError(
            f"--window-size {window} is not a multiple of {factor}, the total downsampling of "
            f"the {card.architecture.model_type} in {model_config}; use e.g. "
            f"{max(factor, window - window % factor)}"
        )
    if seg_target == card.target:
        raise InputError(
            f"--seg-info {seg_target} is the segmentation the model was trained on; writing "
            f"predictions there would overwrite the training targets. Choose another, e.g. "
            f"{DEFAULT_SEGMENTATION_TARGET}"
        )


@dataclass(frozen=True)
class _Segmenter:
    """The ensemble and settings :func:`segment_runs` segments every run with."""

    card: ModelCard
    models: Sequence[torch.nn.Module]
    window: int
    settings: InferenceConfig
    device: torch.device
    show_progress: bool
    ensemble_calibration: Calibration | None = None

    @property
    def calibration(self) -> dict[str, dict[str, float | None]] | None:
        """The calibrated picking settings stored with the probabilities for localize: an
        ensemble folder's, else a single model's card's (models given one by one were not
        calibrated together)."""
        calibration = self.ensemble_calibration
        if calibration is None and len(self.models) == 1:
            calibration = self.card.calibration
        if calibration is None:
            return None
        return {
            name: {"threshold": c.threshold, "min_size_fraction": c.min_size_fraction}
            for name, c in calibration.classes.items()
        }


@dataclass(frozen=True)
class _SegmentTarget:
    """Where :func:`segment_runs` reads tomograms and writes segmentations."""

    projects: CopickProjects
    voxel_size_angstrom: float
    algorithm: str
    seg_target: TargetSpec


def _segment_run(segmenter: _Segmenter, where: _SegmentTarget, ref: RunRef) -> SegmentedRun:
    """Segment one run; its labels (and probabilities) replace older ones together."""
    from octopi.data.normalise import normalise_tomogram
    from octopi.inference.segment import segment_volume

    start = time.perf_counter()
    card, settings = segmenter.card, segmenter.settings
    projects, voxel_size = where.projects, where.voxel_size_angstrom
    volume = projects.load_tomogram(ref, voxel_size, where.algorithm)
    normalised = normalise_tomogram(volume, card.normalisation)
    del volume
    writer = None
    if settings.save_probabilities:
        channels = {"background": 0} | {c.name: c.label for c in card.classes}
        shape_czyx = (card.out_channels, *normalised.shape)
        writer = projects.probability_writer(
            ref, voxel_size, where.seg_target, channels, shape_czyx, segmenter.calibration
        )
    with writer or nullcontext():  # a failed run leaves no probabilities behind
        result = segment_volume(
            segmenter.models,
            normalised,
            segmenter.window,
            settings,
            segmenter.device,
            segmenter.show_progress,
            probability_sink=writer,
        )
        projects.write_segmentation(
            ref, voxel_size, where.seg_target, result.labels, probabilities=writer
        )
    return SegmentedRun(
        shape_zyx=tuple(int(n) for n in result.labels.shape),  # type: ignore[arg-type]
        seconds=round(time.perf_counter() - start, 3),
    )
