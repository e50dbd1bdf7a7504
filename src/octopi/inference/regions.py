"""One connected component of a class's foreground → candidate particle regions: the whole
component, or its split at maxima of the distance transform (watershed). Coordinates are voxel
indices (z, y, x) of the component's crop; used by :mod:`octopi.inference.localize`, which
filters the regions by size.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

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
