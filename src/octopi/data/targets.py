"""Particle picks → multi-class label volumes (segmentation targets).

Each particle becomes a ball of radius ``radius_fraction × particle radius`` filled with its
object's label. Where balls overlap, a voxel takes the label of the particle whose centre is
nearest relative to its ball radius (ties: the lower label), so the result does not depend on
the order in which picks are drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from octopi.config import TargetsConfig
from octopi.data.copick_io import CopickDataError, CopickProjects, ParticleObject
from octopi.errors import InputError


@dataclass(frozen=True)
class LabelledCentres:
    """Picks of one object: (N, 3) (z, y, x) voxel centres, drawn as balls of ``radius_voxel``."""

    label: int
    centers_voxel: np.ndarray
    radius_voxel: float


def render_label_volume(shape_zyx: Sequence[int], objects: Sequence[LabelledCentres]) -> np.ndarray:
    """Draw every ball into a (Z, Y, X) uint8 label volume (0 = background).

    A voxel at distance d from a centre of ball radius r belongs to that ball when d ≤ r;
    overlaps go to the smallest d / r, ties to the lower label.
    """
    shape = tuple(int(n) for n in shape_zyx)
    if any(obj.label < 1 or obj.label > 255 for obj in objects):
        raise InputError("labels must lie in 1..255 for a uint8 label volume")
    labels = np.zeros(shape, dtype=np.uint8)
    best = np.full(shape, np.inf, dtype=np.float32)
    for obj in sorted(objects, key=lambda o: o.label):
        radius = float(obj.radius_voxel)
        if radius <= 0:
            continue
        for center in np.asarray(obj.centers_voxel, dtype=np.float64).reshape(-1, 3):
            lo = np.maximum(np.floor(center - radius).astype(int), 0)
            hi = np.minimum(np.ceil(center + radius).astype(int) + 1, shape)
            if np.any(hi <= lo):
                continue
            grids = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            dist2 = sum((g - c) ** 2 for g, c in zip(grids, center, strict=True))
            ratio = (np.sqrt(dist2) / radius).astype(np.float32)
            window = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
            wins = (ratio <= 1.0) & (ratio < best[window])
            best[window][wins] = ratio[wins]
            labels[window][wins] = obj.label
    return labels


def select_objects(projects: CopickProjects, names: Sequence[str] | None) -> list[ParticleObject]:
    """The project's particle objects (all, or those named, in that order), each with a radius;
    the one object selection of create-targets, localize and evaluate."""
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
    without_radius = [obj.name for obj in objects if obj.radius_angstrom <= 0]
    if without_radius:
        raise CopickDataError(
            f"object(s) {', '.join(without_radius)} have no radius in the copick config; "
            "set 'radius' (Å) for them or leave them out with --objects"
        )
    return objects


def create_targets(config: TargetsConfig, show_progress: bool = True) -> dict[str, dict[str, int]]:
    """Render the picks of every selected run into the target segmentation ``config.target``.

    Returns, per run key, the number of picks drawn per object. Every run is read and checked
    before the first segmentation is written, so bad input leaves the projects unchanged.
    """
    from tqdm import tqdm

    projects = CopickProjects(config.configs)
    objects = select_objects(projects, config.objects)
    refs = (
        [projects.resolve(key) for key in config.run_ids]
        if config.run_ids is not None
        else projects.runs()
    )
    if not refs:
        raise CopickDataError("the copick project(s) have no runs")

    voxel = config.voxel_size_angstrom
    planned = []
    for ref in refs:
        algorithms = projects.tomogram_algorithms(ref, voxel)
        if not algorithms:
            raise CopickDataError(
                f"run {ref.key} has no tomogram at voxel size {voxel:g}, so the target shape is "
                f"unknown; available voxel sizes: "
                f"{', '.join(f'{v:g}' for v in projects.voxel_sizes(ref)) or 'none'}"
            )
        centres = [
            LabelledCentres(
                label=obj.label,
                centers_voxel=projects.load_picks_voxel(ref, obj.name, config.picks, voxel),
                radius_voxel=config.radius_fraction * obj.radius_angstrom / voxel,
            )
            for obj in objects
        ]
        planned.append((ref, projects.tomogram_shape(ref, voxel, algorithms[0]), centres))
    if sum(len(c.centers_voxel) for _, _, cs in planned for c in cs) == 0:
        available = sorted({s for ref in refs for s in projects.pick_sets(ref)})
        raise CopickDataError(
            f"no picks by user {config.picks.user_id!r}, session {config.picks.session_id!r} in "
            f"the selected runs; pick sets there (object,user,session): "
            f"{', '.join(available) or 'none'}"
        )

    summary: dict[str, dict[str, int]] = {}
    names = {obj.label: obj.name for obj in objects}
    for ref, shape, centres in tqdm(planned, desc="targets", unit="run", disable=not show_progress):
        labels = render_label_volume(shape, centres)
        projects.write_segmentation(ref, voxel, config.target, labels)
        summary[ref.key] = {names[c.label]: len(c.centers_voxel) for c in centres}
    return summary
