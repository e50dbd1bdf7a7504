"""Copick-level inference stages: segment runs with a trained ensemble, localize particles.

Each stage checks every input (model files, classes, runs, tomograms or segmentations) before
it writes anything, so a bad argument leaves the copick project unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from octopi.class_match import unmatched_classes
from octopi.config import (
    DEFAULT_PREDICTED_PICKS,
    DEFAULT_SEGMENTATION_TARGET,
    CopickSource,
    InferenceConfig,
    LocalizeConfig,
    PickSpec,
    TargetSpec,
)
from octopi.data import targets
from octopi.data.copick_io import CopickDataError, CopickProjects, ParticleObject, RunRef
from octopi.errors import InputError

if TYPE_CHECKING:
    import torch

    from octopi.inference.localize import LocalizeClass
    from octopi.models.model_card import ModelCard


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
    from octopi.runtime import select_device

    torch_device = select_device(device)
    card, models = load_ensemble(model_configs, weights, torch_device)
    voxel_size = card.voxel_size_angstrom if voxel_size_angstrom is None else voxel_size_angstrom
    algorithm = tomo_algorithm or card.tomo_algorithms[0]
    window = settings.window_size or card.dim_in
    factor = card.architecture.downsampling_factor()
    if window % factor:
        raise InputError(
            f"--window-size {window} is not a multiple of {factor}, the total downsampling of "
            f"the {card.architecture.model_type} in {model_configs[0]}; use e.g. "
            f"{max(factor, window - window % factor)}"
        )
    if seg_target == card.target:
        raise InputError(
            f"--seg-info {seg_target} is the segmentation the model was trained on; writing "
            f"predictions there would overwrite the training targets. Choose another, e.g. "
            f"{DEFAULT_SEGMENTATION_TARGET}"
        )

    projects = CopickProjects(sources)
    check_classes_in_project(card, projects.objects())
    refs = resolve_runs(projects, run_ids)
    for ref in refs:
        projects.tomogram_shape(ref, voxel_size, algorithm)  # raises, listing what is there
    segmenter = _Segmenter(card, models, window, settings, torch_device, show_progress)
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


@dataclass(frozen=True)
class _Segmenter:
    """The ensemble and settings :func:`segment_runs` segments every run with."""

    card: ModelCard
    models: Sequence[torch.nn.Module]
    window: int
    settings: InferenceConfig
    device: torch.device
    show_progress: bool


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
            ref, voxel_size, where.seg_target, channels, shape_czyx
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


# --------------------------------------------------------------------------- localize


def select_objects(projects: CopickProjects, names: Sequence[str] | None) -> list[ParticleObject]:
    """Particle objects of the project (all, or those named), each with a radius; at least one."""
    objects = targets.select_objects(projects, names)
    if not objects:
        raise CopickDataError("the copick project defines no particle objects")
    return objects


def find_segmentation_voxel_size(
    projects: CopickProjects, ref: RunRef, seg_target: TargetSpec
) -> float:
    """The one voxel size at which run ``ref`` holds ``seg_target``; raise if none or several."""
    sizes = [v for v in projects.voxel_sizes(ref) if projects.has_segmentation(ref, v, seg_target)]
    if len(sizes) == 1:
        return sizes[0]
    if not sizes:
        found = {f"{v:g}": projects.segmentation_names(ref, v) for v in projects.voxel_sizes(ref)}
        listing = "; ".join(f"{v} Å: {', '.join(n) or 'none'}" for v, n in found.items())
        raise CopickDataError(
            f"segmentation {seg_target} not found in run {ref.key} at any voxel size; "
            f"segmentations there: {listing or 'none'}"
        )
    raise CopickDataError(
        f"segmentation {seg_target} exists at several voxel sizes in run {ref.key} "
        f"({', '.join(f'{v:g}' for v in sizes)} Å); choose one with --voxel-size"
    )


def uses_probabilities(inference: InferenceConfig, settings: LocalizeConfig) -> bool:
    """Whether picks come from the class probabilities (else from the argmax labels) when
    ``segment`` runs with ``inference`` and ``localize`` with ``settings``: validation picks
    the same way, so a trial's score is the score of the picks the tools make."""
    return settings.source == "probabilities" or (
        settings.source == "auto" and inference.save_probabilities
    )


@dataclass(frozen=True)
class LocalizePlan:
    """The checked runs (voxel size of each) and classes :func:`run_localize` localizes, and
    its ``source``: class probabilities (thresholded) or labels."""

    projects: CopickProjects
    seg_target: TargetSpec
    refs: list[RunRef]
    voxel_sizes: dict[str, float]
    classes: list[LocalizeClass]
    settings: LocalizeConfig
    source: Literal["probabilities", "labels"]


def plan_localize(
    sources: Sequence[CopickSource],
    run_ids: Sequence[str] | None,
    seg_target: TargetSpec = DEFAULT_SEGMENTATION_TARGET,
    settings: LocalizeConfig = LocalizeConfig(),
    voxel_size_angstrom: float | None = None,
    objects: Sequence[str] | None = None,
) -> LocalizePlan:
    """Check everything :func:`run_localize` needs; see :func:`localize_runs`."""
    from octopi.inference.localize import LocalizeClass

    projects = CopickProjects(sources)
    chosen = select_objects(projects, objects)
    classes = [LocalizeClass(obj.name, obj.label, obj.radius_angstrom) for obj in chosen]
    unknown = sorted(set(settings.per_class_threshold or {}) - {c.name for c in classes})
    if unknown:
        raise InputError(
            f"per-class thresholds name {', '.join(unknown)}, which are not localized; "
            f"objects: {', '.join(c.name for c in classes)}"
        )
    refs = resolve_runs(projects, run_ids)
    voxel_sizes: dict[str, float] = {}
    for ref in refs:
        if voxel_size_angstrom is None:
            voxel_sizes[ref.key] = find_segmentation_voxel_size(projects, ref, seg_target)
        elif not projects.has_segmentation(ref, voxel_size_angstrom, seg_target):
            projects.load_segmentation(ref, voxel_size_angstrom, seg_target)  # raises, listing
        else:
            voxel_sizes[ref.key] = voxel_size_angstrom
    has = projects.probability_channels
    stored = [r.key for r in refs if has(r, voxel_sizes[r.key], seg_target)]
    source = _source(settings, seg_target, [ref.key for ref in refs], stored)
    return LocalizePlan(projects, seg_target, refs, voxel_sizes, classes, settings, source)


def _source(
    settings: LocalizeConfig, seg_target: TargetSpec, runs: list[str], with_probabilities: list
) -> Literal["probabilities", "labels"]:
    """Probabilities if every run has them (unless source is labels); raise where settings
    need probabilities that are missing."""
    if settings.source != "labels" and len(with_probabilities) == len(runs):
        return "probabilities"
    if settings.source == "probabilities" or (settings.source == "auto" and with_probabilities):
        missing = [run for run in runs if run not in with_probabilities]
        raise CopickDataError(
            f"segmentation {seg_target} holds no class probabilities in run(s) "
            f"{', '.join(missing)}; segment them again (`octopi segment` writes probabilities "
            "unless --no-probabilities), or localize the argmax labels with --source labels "
            "(thresholds do not apply to labels)"
        )
    if settings.per_class_threshold:
        raise InputError(
            f"per-class thresholds act on probabilities; localize reads the labels of "
            f"{seg_target} (source {settings.source}): drop them or segment with probabilities"
        )
    return "labels"


def run_localize(plan: LocalizePlan, picks_out: PickSpec) -> dict[str, dict[str, int]]:
    """Localize every run of ``plan`` and write the picks; run key → object → picks."""
    from octopi.inference.localize import ClassPicks, localize, localize_channel

    counts: dict[str, dict[str, int]] = {}
    projects, target = plan.projects, plan.seg_target
    for ref in plan.refs:
        voxel_size = plan.voxel_sizes[ref.key]
        if plan.source == "labels":
            segmentation = projects.load_segmentation(ref, voxel_size, target)
            found = localize(segmentation, plan.classes, voxel_size, plan.settings)
        else:
            stored = projects.probability_channels(ref, voxel_size, target)
            found = {  # one channel in memory at a time; a class the model lacks gets no picks
                cls.name: localize_channel(
                    projects.load_probability(ref, voxel_size, target, cls.name),
                    cls,
                    voxel_size,
                    plan.settings,
                )
                if cls.name in stored
                else ClassPicks(np.zeros((0, 3)), np.zeros(0, np.float32))
                for cls in plan.classes
            }
        for name, picks in found.items():
            positions_angstrom_xyz = picks.centers_voxel[:, ::-1] * voxel_size
            projects.write_picks(ref, name, picks_out, positions_angstrom_xyz, picks.scores)
        counts[ref.key] = {name: len(picks) for name, picks in found.items()}
    return counts


def localize_runs(
    sources: Sequence[CopickSource],
    run_ids: Sequence[str] | None,
    seg_target: TargetSpec = DEFAULT_SEGMENTATION_TARGET,
    picks_out: PickSpec = DEFAULT_PREDICTED_PICKS,
    settings: LocalizeConfig = LocalizeConfig(),
    voxel_size_angstrom: float | None = None,
    objects: Sequence[str] | None = None,
) -> dict[str, dict[str, int]]:
    """Localize particles in the ``seg_target`` segmentation of each run and write picks.

    Every selected object (default: every particle object of the project) is localized with
    its radius from the copick config, from the class probabilities stored with the
    segmentation (voxels at or above the class's threshold; ``settings.source``) or from its
    labels. Picks are written as (x, y, z) Å positions with scores under ``picks_out`` (an
    empty pick set where nothing was found). The voxel size defaults to the one at which the
    segmentation exists. Returns run key → object → number of picks.
    """
    plan = plan_localize(sources, run_ids, seg_target, settings, voxel_size_angstrom, objects)
    return run_localize(plan, picks_out)
