"""One connected component of a class's foreground → candidate particle regions: the whole
component, or its split at maxima of the distance transform (watershed). Coordinates are voxel
indices (z, y, x) of the component's crop; used by :mod:`octopi.inference.localize`, which
filters the regions by size. :func:`box_candidates` does it for every component of one box,
for every minimum size at once (:class:`ClassScale`: a class's sizes in voxels).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from octopi.config import LocalizeConfig
from octopi.inference.centers import fit_sphere_center, greedy_separate


def region_center(
    region: np.ndarray, weights: np.ndarray | None, sphere_voxels: float
) -> tuple[np.ndarray, float]:
    """(Probability-weighted) centroid (3,) of a whole bool (z, y, x) region, and its score:
    the mean probability, or (no weights) its voxel count over ``sphere_voxels``."""
    coords = np.argwhere(region).astype(np.float64)
    if weights is None:
        return coords.mean(axis=0), float(len(coords) / sphere_voxels)
    w = weights[region].astype(np.float64)
    return (coords * w[:, None]).sum(axis=0) / w.sum(), float(w.mean())


def _peaks(
    component: np.ndarray, separation_voxel: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The component with its cavities filled, its distance transform (same shape) and the
    maxima of that transform at least ``separation_voxel`` apart: (P, 3) int positions and
    their (P,) heights, highest first."""
    padded = np.pad(component, 1)
    # Cavities (e.g. a few voxels argmax'd to another class inside a particle) would dent the
    # distance transform and split one particle into several; only the outer surface counts.
    outside, _ = ndi.label(~padded)
    solid = outside != outside[0, 0, 0]
    component = solid[1:-1, 1:-1, 1:-1]
    # Zero padding makes the box edge count as background, so the distance transform is exact.
    distance = ndi.distance_transform_edt(solid)[1:-1, 1:-1, 1:-1]
    # A cube of half-width sep/sqrt(3) lies inside the ball of radius sep, so the filter never
    # suppresses a maximum that the Euclidean separation rule below would keep.
    half_width = max(1, int(separation_voxel / math.sqrt(3.0)))
    local_max = ndi.maximum_filter(distance, size=2 * half_width + 1, mode="constant")
    candidates = np.argwhere((distance == local_max) & component)
    heights = distance[tuple(candidates.T)]
    order = np.argsort(-heights, kind="stable")
    keep = order[greedy_separate(candidates[order].astype(np.float64), separation_voxel)]
    return component, distance, candidates[keep], heights[keep]


def split_component(
    component: np.ndarray,
    weights: np.ndarray | None,
    sphere_voxels: float,
    min_voxels: float,
    max_voxels: float,
    separation_voxel: float,
) -> list[tuple[np.ndarray, float, int]]:
    """Split one connected component (bool (z, y, x) crop) at maxima of its distance
    transform. Returns (centre (3,), score, voxel count) of each region of at least
    ``min_voxels`` and at most ``max_voxels`` voxels (the caller may filter more strictly)."""
    component, distance, peaks, heights = _peaks(component, separation_voxel)
    if len(peaks) == 1:
        size = int(np.count_nonzero(component))
        if not min_voxels <= size <= max_voxels:
            return []
        return [(*region_center(component, weights, sphere_voxels), size)]

    markers = np.zeros(component.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    regions = watershed(-distance, markers, mask=component).ravel()
    sizes = np.bincount(regions, minlength=len(peaks) + 1)
    kept = np.flatnonzero((sizes >= min_voxels) & (sizes <= max_voxels))
    kept = kept[kept > 0]
    if weights is not None:
        weight_sums = np.bincount(regions, weights=weights.ravel(), minlength=len(peaks) + 1)
    # Only voxels that touch background carry the particle's true outline; voxels on a cut
    # between two regions do not. Sorting them by region gives every region its slice at once.
    outline = np.flatnonzero(component & ~ndi.binary_erosion(component, border_value=0))
    outline = outline[np.argsort(regions[outline], kind="stable")]
    outline_regions = regions[outline]
    outline_coords = np.column_stack(np.unravel_index(outline, component.shape))
    starts = np.searchsorted(outline_regions, kept, side="left")
    stops = np.searchsorted(outline_regions, kept, side="right")
    found = []
    for region_id, start, stop in zip(kept, starts, stops, strict=True):
        peak, height = peaks[region_id - 1], heights[region_id - 1]
        center = fit_sphere_center(outline_coords[start:stop], peak, height)
        if weights is None:
            value = float(sizes[region_id] / sphere_voxels)
        else:
            value = float(weight_sums[region_id] / sizes[region_id])
        found.append((center, value, int(sizes[region_id])))
    return found


@dataclass(frozen=True)
class ClassScale:
    """One class's sizes in voxels, derived from its radius and the settings."""

    sphere_voxels: float
    min_voxels: float
    max_voxels: float
    max_component_voxels: float
    separation_voxel: float

    @classmethod
    def of(
        cls, radius_voxel: float, settings: LocalizeConfig, min_size_fraction: float
    ) -> ClassScale:
        sphere = 4.0 / 3.0 * math.pi * radius_voxel**3
        max_size, max_component = settings.max_size_fraction, settings.max_component_fraction
        return cls(
            sphere_voxels=sphere,
            min_voxels=min_size_fraction * sphere,
            max_voxels=math.inf if max_size is None else max_size * sphere,
            max_component_voxels=math.inf if max_component is None else max_component * sphere,
            separation_voxel=settings.min_separation_fraction * radius_voxel,
        )


@dataclass(frozen=True)
class ComponentCandidates:
    """What one connected component of ``size`` voxels gives at any minimum size: ``whole``,
    its (centre (3,), score) as one pick (None when above the maximum size or not needed);
    ``parts``, the (centre, score, voxel count) of the regions it splits into (None: not
    split). Centres are voxel (z, y, x) of the volume."""

    size: int
    whole: tuple[np.ndarray, float] | None
    parts: list[tuple[np.ndarray, float, int]] | None

    def picks(self, min_voxels: float, method: str) -> list[tuple[np.ndarray, float]]:
        """The (centre, score) picks of this component when regions below ``min_voxels``
        are dropped: none, the whole component, or the parts of its split."""
        if self.size < min_voxels:
            return []
        if method == "components" or self.size < 2 * min_voxels:
            return [] if self.whole is None else [self.whole]
        return [(center, value) for center, value, n in self.parts or [] if n >= min_voxels]


def box_candidates(
    mask: np.ndarray,
    weights: np.ndarray | None,
    scale: ClassScale,
    largest_min_voxels: float,
    method: str,
    box_offset: np.ndarray,
) -> Iterator[ComponentCandidates]:
    """What each connected component of one box can give, for every minimum size from
    ``scale.min_voxels`` (the smallest) to ``largest_min_voxels``.

    mask: (z, y, x) bool foreground of the box; weights: same-shape probabilities or None;
    box_offset: (3,) the box's corner in the volume (voxels).
    """
    components, n_components = ndi.label(mask)
    sizes = np.bincount(components.ravel(), minlength=n_components + 1)
    upper = scale.max_voxels if method == "components" else scale.max_component_voxels
    # A component below the minimum cannot contain a region above it: skip before any work.
    wanted = np.flatnonzero((sizes >= scale.min_voxels) & (sizes <= upper))
    wanted = wanted[wanted > 0]
    if wanted.size == 0:
        return
    boxes = ndi.find_objects(components, max_label=int(wanted[-1]))
    for index in wanted:
        sub = boxes[index - 1]
        size = int(sizes[index])
        component = components[sub] == index
        sub_weights = None if weights is None else weights[sub]
        offset = np.array([s.start for s in sub], dtype=np.float64)
        whole = parts = None
        # Below twice the minimum, at most one part of a split could be kept: not split.
        if (method == "components" or size < 2 * largest_min_voxels) and size <= scale.max_voxels:
            center, value = region_center(component, sub_weights, scale.sphere_voxels)
            whole = (center + offset + box_offset, value)
        if method != "components" and size >= 2 * scale.min_voxels:
            found = split_component(
                component, sub_weights, scale.sphere_voxels, scale.min_voxels,
                scale.max_voxels, scale.separation_voxel,
            )  # fmt: skip
            parts = [(center + offset + box_offset, value, n) for center, value, n in found]
        yield ComponentCandidates(size, whole, parts)
