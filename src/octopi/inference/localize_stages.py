"""Copick-level localize stage: particle picks from the segmentations ``segment`` wrote.

It checks every input (objects, runs, segmentations, probabilities) before it writes anything,
so a bad argument leaves the copick project unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

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
from octopi.inference.stages import resolve_runs
from octopi.models.model_card import calibrated_settings

if TYPE_CHECKING:
    from octopi.inference.localize import LocalizeClass


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
    """Whether validation during training picks from the class probabilities (else from the
    argmax labels), as ``localize`` with ``settings`` would before the model is calibrated:
    source ``probabilities``, or ``auto`` with per-class thresholds set and probabilities
    written by ``segment``."""
    return settings.source == "probabilities" or (
        settings.source == "auto"
        and bool(settings.per_class_threshold)
        and inference.save_probabilities
    )


def validates_calibrated(inference: InferenceConfig, settings: LocalizeConfig) -> bool:
    """Whether validation during training scores calibrated picking: the model is calibrated
    after training (``calibrate``) and ``localize`` will pick with that calibration (source
    ``auto`` without explicit per-class thresholds, probabilities written by ``segment``)."""
    return (
        settings.calibrate
        and settings.source == "auto"
        and not settings.per_class_threshold
        and inference.save_probabilities
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

    def describe(self) -> str:
        """What the picks come from: ``labels (argmax; ...)``, ``class probabilities
        (threshold 0.5; ribosome 0.3)`` or, for source auto, the stored calibration."""
        settings = self.settings
        if self.source == "labels":
            return "labels (argmax; thresholds do not apply)"
        if settings.source == "auto" and not settings.per_class_threshold:
            return "class probabilities (the model's calibrated per-class thresholds and sizes)"
        per_class = "".join(f"; {n} {t:g}" for n, t in (settings.per_class_threshold or {}).items())
        return f"class probabilities (threshold {settings.score_threshold:g}{per_class})"


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
    unknown = settings.unknown_class_names(c.name for c in classes)
    if unknown:
        raise InputError(
            f"per-class settings name classes that are not localized ({'; '.join(unknown)}); "
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
    calibrated = [
        r.key
        for r in refs
        if r.key in stored and projects.probability_calibration(r, voxel_sizes[r.key], seg_target)
    ]
    source = _source(settings, seg_target, [ref.key for ref in refs], stored, calibrated)
    return LocalizePlan(projects, seg_target, refs, voxel_sizes, classes, settings, source)


def _source(
    settings: LocalizeConfig,
    seg_target: TargetSpec,
    runs: list[str],
    with_probabilities: list[str],
    calibrated: list[str],
) -> Literal["probabilities", "labels"]:
    """Probabilities for source ``probabilities``, and for ``auto`` where every run has them
    with a calibration (or thresholds are given); else labels. Raise where settings need
    probabilities that are missing."""
    thresholds = bool(settings.per_class_threshold)
    every = len(with_probabilities) == len(runs)
    if settings.source == "probabilities" and every:
        return "probabilities"
    if settings.source == "auto" and every and (thresholds or len(calibrated) == len(runs)):
        return "probabilities"
    if settings.source == "probabilities" or (settings.source == "auto" and thresholds):
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


def run_localize(
    plan: LocalizePlan,
    picks_out: PickSpec,
    workers: int | None = None,
    show_progress: bool = False,
) -> dict[str, dict[str, int]]:
    """Localize every run of ``plan`` and write the picks; run key → object → picks.

    The runs are localized by up to ``workers`` forked processes (None: one per CPU core this
    process may use; :func:`octopi.parallel.map_forked`), each reading its run's
    segmentation; this process writes each run's picks as it arrives, in run order."""
    from tqdm.auto import tqdm

    from octopi.parallel import map_forked, usable_cpus

    counts: dict[str, dict[str, int]] = {}

    def write(result: tuple[RunRef, dict]) -> None:
        ref, found = result
        voxel_size = plan.voxel_sizes[ref.key]
        for name, picks in found.items():
            positions_angstrom_xyz = picks.centers_voxel[:, ::-1] * voxel_size
            plan.projects.write_picks(ref, name, picks_out, positions_angstrom_xyz, picks.scores)
        counts[ref.key] = {name: len(picks) for name, picks in found.items()}
        bar.update()

    n_workers = usable_cpus() if workers is None else workers
    with tqdm(total=len(plan.refs), desc="localize", unit="run", disable=not show_progress) as bar:
        map_forked(_localize_run, plan, plan.refs, n_workers, on_result=write)
    return counts


def _localize_run(plan: LocalizePlan, ref: RunRef) -> tuple[RunRef, dict]:
    """``ref`` and its object name → ClassPicks (nothing written)."""
    from octopi.inference.localize import ClassPicks, localize, localize_channel

    projects, target = plan.projects, plan.seg_target
    voxel_size = plan.voxel_sizes[ref.key]
    if plan.source == "labels":
        segmentation = projects.load_segmentation(ref, voxel_size, target)
        return ref, localize(segmentation, plan.classes, voxel_size, plan.settings)
    stored = projects.probability_channels(ref, voxel_size, target)
    settings = _run_settings(plan, projects.probability_calibration(ref, voxel_size, target))
    argmax = [c for c in plan.classes if c.name in (settings.argmax_classes or ())]
    found = {  # one channel in memory at a time; a class the model lacks gets no picks
        cls.name: localize_channel(
            projects.load_probability(ref, voxel_size, target, cls.name),
            cls,
            voxel_size,
            settings,
        )
        if cls.name in stored
        else ClassPicks(np.zeros((0, 3)), np.zeros(0, np.float32))
        for cls in plan.classes
        if cls not in argmax
    }
    if argmax:  # the labels segment wrote are the argmax of these probabilities
        labels = projects.load_segmentation(ref, voxel_size, target)
        of_labels = settings.model_copy(update={"per_class_threshold": None})
        found.update(localize(labels, argmax, voxel_size, of_labels))
    return ref, found


def _run_settings(plan: LocalizePlan, calibration: dict[str, dict[str, float]]) -> LocalizeConfig:
    """The plan's settings with a run's stored calibration applied (source ``auto`` without
    explicit per-class thresholds only; classes the calibration lacks keep the settings)."""
    settings = plan.settings
    if settings.source != "auto" or settings.per_class_threshold or not calibration:
        return settings
    return calibrated_settings(settings, calibration)


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
