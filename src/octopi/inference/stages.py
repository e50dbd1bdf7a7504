"""Copick-level inference stages: segment runs with a trained ensemble, localize particles.

Each stage checks every input (model files, classes, runs, tomograms or segmentations) before
it writes anything, so a bad argument leaves the copick project unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from octopi.config import (
    DEFAULT_PREDICTED_PICKS,
    DEFAULT_SEGMENTATION_TARGET,
    CopickSource,
    InferenceConfig,
    LocalizeConfig,
    PickSpec,
    TargetSpec,
)
from octopi.data.copick_io import CopickDataError, CopickProjects, ParticleObject, RunRef
from octopi.errors import InputError

if TYPE_CHECKING:
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

    def to_dict(self) -> dict:
        return {
            "voxel_size_angstrom": self.voxel_size_angstrom,
            "tomo_algorithm": self.tomo_algorithm,
            "window_size": self.window_size,
            "seg_target": str(self.seg_target),
            "device": self.device,
            "runs": {key: asdict(run) for key, run in self.runs.items()},
        }


# --------------------------------------------------------------------------- segment


def check_classes_in_project(card: ModelCard, objects: Sequence[ParticleObject]) -> None:
    """Raise unless every class of the card is a project object with the same label."""
    project = {obj.name: obj.label for obj in objects}
    wrong = [f"{c.name} (label {c.label})" for c in card.classes if project.get(c.name) != c.label]
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
    """Segment tomograms with an ensemble and write (Z, Y, X) uint8 labels to ``seg_target``.

    Voxel size and tomogram algorithm default to the first model card's (its first
    algorithm); the window edge to ``settings.window_size`` or the card's ``dim_in``.
    Everything is checked before the first segmentation is written.
    """
    from octopi.data.normalise import normalise_tomogram
    from octopi.inference.ensemble import load_ensemble
    from octopi.inference.segment import segment_volume
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

    runs: dict[str, SegmentedRun] = {}
    for ref in refs:
        start = time.perf_counter()
        volume = projects.load_tomogram(ref, voxel_size, algorithm)
        normalised = normalise_tomogram(volume, card.normalisation)
        del volume
        result = segment_volume(
            models, normalised, window, settings, torch_device, show_progress=show_progress
        )
        projects.write_segmentation(ref, voxel_size, seg_target, result.labels)
        runs[ref.key] = SegmentedRun(
            shape_zyx=tuple(int(n) for n in result.labels.shape),  # type: ignore[arg-type]
            seconds=round(time.perf_counter() - start, 3),
        )
    return SegmentSummary(
        runs=runs,
        voxel_size_angstrom=voxel_size,
        tomo_algorithm=algorithm,
        window_size=window,
        seg_target=seg_target,
        device=str(torch_device),
    )


# --------------------------------------------------------------------------- localize


def select_objects(projects: CopickProjects, names: Sequence[str] | None) -> list[ParticleObject]:
    """Particle objects of the project (all, or those named), each with a radius."""
    objects = projects.objects()
    if names is not None:
        known = {obj.name: obj for obj in objects}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise CopickDataError(
                f"unknown object(s) {', '.join(unknown)}; the project defines: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        objects = [known[name] for name in names]
    if not objects:
        raise CopickDataError("the copick project defines no particle objects")
    without_radius = [obj.name for obj in objects if obj.radius_angstrom <= 0]
    if without_radius:
        raise CopickDataError(
            f"object(s) {', '.join(without_radius)} have no radius in the copick config; "
            "set 'radius' (Å) for them or leave them out with --objects"
        )
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
    its radius from the copick config; picks are written as (x, y, z) Å positions with scores
    under ``picks_out`` (an empty pick set where nothing was found). The voxel size defaults to
    the one at which the segmentation exists. Returns run key → object → number of picks.
    """
    from octopi.inference.localize import LocalizeClass, localize

    projects = CopickProjects(sources)
    chosen = select_objects(projects, objects)
    classes = [LocalizeClass(obj.name, obj.label, obj.radius_angstrom) for obj in chosen]
    refs = resolve_runs(projects, run_ids)

    voxel_sizes: dict[str, float] = {}
    for ref in refs:
        if voxel_size_angstrom is None:
            voxel_sizes[ref.key] = find_segmentation_voxel_size(projects, ref, seg_target)
        elif not projects.has_segmentation(ref, voxel_size_angstrom, seg_target):
            projects.load_segmentation(ref, voxel_size_angstrom, seg_target)  # raises, listing
        else:
            voxel_sizes[ref.key] = voxel_size_angstrom

    counts: dict[str, dict[str, int]] = {}
    for ref in refs:
        voxel_size = voxel_sizes[ref.key]
        segmentation = projects.load_segmentation(ref, voxel_size, seg_target)
        found = localize(segmentation, classes, voxel_size, settings)
        for name, picks in found.items():
            positions_angstrom_xyz = picks.centers_voxel[:, ::-1] * voxel_size
            projects.write_picks(ref, name, picks_out, positions_angstrom_xyz, picks.scores)
        counts[ref.key] = {name: len(picks) for name, picks in found.items()}
    return counts
