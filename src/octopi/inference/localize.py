"""Turn a 3-D segmentation (labels or class probabilities) into particle centres per class.

All work happens on bounding boxes: foreground voxels of a class are first grouped on a coarse
grid of ``_BLOCK_VOXELS``-sized blocks (cheap, no full-volume connected-component pass), then each
group's box is labelled and processed on its own. Coordinates are voxel indices (z, y, x).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.segmentation import watershed

__all__ = ["ClassPicks", "LocalizeClass", "LocalizeSettings", "localize"]

_METHODS = ("peaks", "components")
# Coarse block edge in voxels. Small enough that particles more than ~2 blocks apart land in
# separate boxes (so a crowded tomogram does not chain into one huge box), large enough that the
# coarse grid is ~1/64 of the volume.
_BLOCK_VOXELS = 4
# Fewer boundary voxels than this make a sphere fit meaningless; fall back to the peak voxel.
_MIN_FIT_POINTS = 20


@dataclass(frozen=True)
class LocalizeClass:
    """One particle class: its name, label value / channel index (>= 1) and radius in Å."""

    name: str
    label: int
    radius_angstrom: float


@dataclass(frozen=True)
class LocalizeSettings:
    """How segmentations become picks.

    method: "peaks" splits touching particles at maxima of the distance transform (watershed);
        "components" gives one pick per connected component, at its centroid.
    score_threshold: probability input only; voxels with p >= threshold are foreground.
    min_size_fraction / max_size_fraction: a region is kept only if its voxel count is within
        [min, max] * sphere volume of the particle radius (max None: no upper bound). The default
        minimum keeps target spheres drawn at >= ~0.4 of the particle radius and drops specks.
    min_separation_fraction: two picks of one class are at least this * radius apart; the lower
        scoring pick is dropped.
    per_class_threshold: class name -> threshold, overriding score_threshold (probability input).
    """

    method: str = "peaks"
    score_threshold: float = 0.5
    min_size_fraction: float = 0.05
    max_size_fraction: float | None = None
    min_separation_fraction: float = 0.5
    per_class_threshold: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        thresholds = [self.score_threshold, *(self.per_class_threshold or {}).values()]
        if not all(0.0 < t <= 1.0 for t in thresholds):
            raise ValueError(f"probability thresholds must lie in (0, 1], got {thresholds}")
        if self.min_size_fraction < 0:
            raise ValueError(f"min_size_fraction must be >= 0, got {self.min_size_fraction}")
        if self.max_size_fraction is not None and self.max_size_fraction < self.min_size_fraction:
            raise ValueError("max_size_fraction must be None or >= min_size_fraction")
        if self.min_separation_fraction < 0:
            raise ValueError("min_separation_fraction must be >= 0")


@dataclass(frozen=True)
class ClassPicks:
    """Picks of one class: centres (N, 3) float64 voxel (z, y, x) and scores (N,) float32.

    Scores are the mean probability over the pick's region for probability input, and the
    region's voxel count over the sphere volume of the particle radius for label input.
    """

    centers_voxel: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def _empty_picks() -> ClassPicks:
    return ClassPicks(np.zeros((0, 3), np.float64), np.zeros(0, np.float32))


def localize(
    segmentation: np.ndarray,
    classes: Sequence[LocalizeClass],
    voxel_size_angstrom: float,
    settings: LocalizeSettings = LocalizeSettings(),
) -> dict[str, ClassPicks]:
    """Find particle centres of each class in a segmentation.

    segmentation: (Z, Y, X) integer labels (0 background), or (C, Z, Y, X) float probabilities
        with channel 0 background and channel ``cls.label`` for each class.
    classes: the classes to localize; labels must be >= 1 (and < C for probabilities).
    voxel_size_angstrom: voxel edge in Å; radius in voxels = radius_angstrom / voxel size.
    Returns class name -> ClassPicks (empty (0, 3) arrays where nothing was found).
    """
    volume = np.asarray(segmentation)
    is_probability = _validate(volume, classes, voxel_size_angstrom, settings)

    if not is_probability:
        # One pass over the volume finds all foreground; each class then takes its share.
        flat = volume.reshape(-1)
        foreground = np.flatnonzero(flat)
        foreground_labels = flat[foreground]
    shape = volume.shape[-3:]
    results: dict[str, ClassPicks] = {}
    for cls in classes:
        radius_voxel = cls.radius_angstrom / voxel_size_angstrom
        if is_probability:
            threshold = (settings.per_class_threshold or {}).get(
                cls.name, settings.score_threshold
            )
            channel = volume[cls.label]
            class_voxels = np.flatnonzero(channel >= threshold)

            def crop_mask(box, channel=channel, threshold=threshold):
                weights = channel[box].astype(np.float32, copy=False)
                return weights >= threshold, weights
        else:
            class_voxels = foreground[foreground_labels == cls.label]

            def crop_mask(box, label=cls.label):
                return volume[box] == label, None

        centers, scores = [], []
        for box, owned in _coarse_boxes(class_voxels, shape):
            mask, weights = crop_mask(box)
            mask &= owned
            offset = np.array([s.start for s in box], dtype=np.float64)
            for center, value in _localize_box(mask, weights, radius_voxel, settings):
                centers.append(center + offset)
                scores.append(value)
        results[cls.name] = _separate(centers, scores, settings.min_separation_fraction * radius_voxel)
    return results


def _validate(
    volume: np.ndarray,
    classes: Sequence[LocalizeClass],
    voxel_size_angstrom: float,
    settings: LocalizeSettings,
) -> bool:
    """Check inputs; return True for probability input, False for labels."""
    if not classes:
        raise ValueError("classes is empty; give at least one LocalizeClass to localize")
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names}")
    if not (math.isfinite(voxel_size_angstrom) and voxel_size_angstrom > 0):
        raise ValueError(f"voxel_size_angstrom must be > 0, got {voxel_size_angstrom}")
    for cls in classes:
        if not (math.isfinite(cls.radius_angstrom) and cls.radius_angstrom > 0):
            raise ValueError(f"radius of {cls.name!r} must be > 0 Å, got {cls.radius_angstrom}")
        if int(cls.label) != cls.label or cls.label < 1:
            raise ValueError(f"label of {cls.name!r} must be an integer >= 1 (0 is background)")
    unknown = sorted(set(settings.per_class_threshold or {}) - set(names))
    if unknown:
        raise ValueError(f"per_class_threshold names unknown classes {unknown}; known: {names}")

    if volume.ndim == 3:
        if not (np.issubdtype(volume.dtype, np.integer) or volume.dtype == np.bool_):
            raise ValueError(
                f"a 3-D segmentation must hold integer labels, got dtype {volume.dtype}; "
                "pass probabilities as (C, Z, Y, X)"
            )
        return False
    if volume.ndim == 4:
        if not np.issubdtype(volume.dtype, np.floating):
            raise ValueError(
                f"a 4-D segmentation must hold float probabilities, got dtype {volume.dtype}"
            )
        n_channels = volume.shape[0]
        too_high = {c.name: c.label for c in classes if c.label >= n_channels}
        if too_high:
            raise ValueError(
                f"labels {too_high} are out of range for {n_channels} channels "
                f"(channel 0 is background, so labels must be 1..{n_channels - 1})"
            )
        return True
    raise ValueError(
        "segmentation must be (Z, Y, X) labels or (C, Z, Y, X) probabilities, "
        f"got shape {volume.shape}"
    )


def _coarse_boxes(
    flat_indices: np.ndarray, shape: tuple[int, ...]
) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    """Group foreground voxels into boxes via 26-connected blocks of a coarse grid.

    Yields (box slices into the volume, bool mask of the box voxels owned by this group). Two
    voxels that touch always fall in 26-adjacent blocks, so no connected component is split
    across groups, and the owned masks of different groups never overlap.
    """
    if flat_indices.size == 0:
        return
    block = _BLOCK_VOXELS
    coarse_shape = tuple(-(-dim // block) for dim in shape)
    coarse = np.zeros(coarse_shape, dtype=bool)
    coarse[tuple(axis // block for axis in np.unravel_index(flat_indices, shape))] = True
    groups, _ = ndi.label(coarse, structure=np.ones((3, 3, 3), dtype=bool))
    for group_id, coarse_box in enumerate(ndi.find_objects(groups), start=1):
        box = tuple(
            slice(s.start * block, min(s.stop * block, dim))
            for s, dim in zip(coarse_box, shape, strict=True)
        )
        block_of_voxel = [
            np.arange(b.start, b.stop) // block - c.start
            for b, c in zip(box, coarse_box, strict=True)
        ]
        owned = (groups[coarse_box] == group_id)[np.ix_(*block_of_voxel)]
        yield box, owned


def _localize_box(
    mask: np.ndarray, weights: np.ndarray | None, radius_voxel: float, settings: LocalizeSettings
) -> Iterator[tuple[np.ndarray, float]]:
    """Yield (centre (3,) in box voxel coordinates, score) for each particle in one box."""
    sphere_voxels = 4.0 / 3.0 * math.pi * radius_voxel**3
    min_voxels = settings.min_size_fraction * sphere_voxels
    max_voxels = (
        math.inf if settings.max_size_fraction is None else settings.max_size_fraction * sphere_voxels
    )
    components, n_components = ndi.label(mask)
    sizes = np.bincount(components.ravel(), minlength=n_components + 1)
    for index, sub in enumerate(ndi.find_objects(components), start=1):
        # A component below the minimum cannot contain a region above it: skip before any work.
        if sub is None or sizes[index] < min_voxels:
            continue
        component = components[sub] == index
        sub_weights = None if weights is None else weights[sub]
        offset = np.array([s.start for s in sub], dtype=np.float64)
        if settings.method == "components":
            found = []
            if sizes[index] <= max_voxels:
                found = [_region_center(component, sub_weights, sphere_voxels)]
        else:
            found = _split_component(
                component, sub_weights, radius_voxel, settings, sphere_voxels, min_voxels, max_voxels
            )
        for center, value in found:
            yield center + offset, value


def _region_center(
    region: np.ndarray, weights: np.ndarray | None, sphere_voxels: float
) -> tuple[np.ndarray, float]:
    """(Probability-weighted) centroid of a whole region and its score."""
    coords = np.argwhere(region).astype(np.float64)
    if weights is None:
        return coords.mean(axis=0), float(len(coords) / sphere_voxels)
    w = weights[region].astype(np.float64)
    return (coords * w[:, None]).sum(axis=0) / w.sum(), float(w.mean())


def _split_component(
    component: np.ndarray,
    weights: np.ndarray | None,
    radius_voxel: float,
    settings: LocalizeSettings,
    sphere_voxels: float,
    min_voxels: float,
    max_voxels: float,
) -> list[tuple[np.ndarray, float]]:
    """Split one connected component at maxima of its distance transform."""
    # Zero padding makes the box edge count as background, so the distance transform is exact.
    distance = ndi.distance_transform_edt(np.pad(component, 1))[1:-1, 1:-1, 1:-1]
    separation = settings.min_separation_fraction * radius_voxel
    # A cube of half-width sep/sqrt(3) lies inside the ball of radius sep, so the filter never
    # suppresses a maximum that the Euclidean separation rule below would keep.
    half_width = max(1, int(separation / math.sqrt(3.0)))
    local_max = ndi.maximum_filter(distance, size=2 * half_width + 1, mode="constant")
    candidates = np.argwhere((distance == local_max) & component)
    heights = distance[tuple(candidates.T)]
    order = np.argsort(-heights, kind="stable")
    candidates, heights = candidates[order], heights[order]
    keep = _greedy_separate(candidates.astype(np.float64), separation)
    peaks, heights = candidates[keep], heights[keep]

    if len(peaks) == 1:
        size = int(component.sum())
        if not min_voxels <= size <= max_voxels:
            return []
        return [_region_center(component, weights, sphere_voxels)]

    markers = np.zeros(component.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    regions = watershed(-distance, markers, mask=component)
    sizes = np.bincount(regions.ravel(), minlength=len(peaks) + 1)
    # Only voxels that touch background carry the particle's true outline; voxels on a cut
    # between two regions do not.
    outline = component & ~ndi.binary_erosion(component, border_value=0)
    found = []
    for region_id, (peak, height) in enumerate(zip(peaks, heights, strict=True), start=1):
        if not min_voxels <= sizes[region_id] <= max_voxels:
            continue
        region = regions == region_id
        center = _fit_sphere_center(np.argwhere(outline & region), peak, height)
        if weights is None:
            value = float(sizes[region_id] / sphere_voxels)
        else:
            value = float(weights[region].mean())
        found.append((center, value))
    return found


def _fit_sphere_center(points: np.ndarray, peak: np.ndarray, height: float) -> np.ndarray:
    """Least-squares sphere centre of a region's outline voxels (K, 3).

    The centroid of a region cut by a watershed boundary is pulled away from the cut (by ~0.09 r
    for two spheres 1.2 r apart), whereas a sphere fit to the uncut outline is not. Falls back
    to the peak voxel when there are too few points or the fit wanders implausibly far.
    """
    peak = peak.astype(np.float64)
    if len(points) < _MIN_FIT_POINTS:
        return peak
    # |p|^2 = 2 p.c + (r^2 - |c|^2) is linear in (c, r^2 - |c|^2); centring on the peak keeps the
    # system well conditioned.
    relative = points - peak
    design = np.column_stack([2.0 * relative, np.ones(len(relative))])
    target = (relative**2).sum(axis=1)
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    shift = solution[:3]
    if not np.all(np.isfinite(shift)) or np.linalg.norm(shift) > max(1.5, 0.5 * height):
        return peak
    return peak + shift


def _greedy_separate(points: np.ndarray, separation: float) -> np.ndarray:
    """Indices of points kept when walking them in order and dropping any within ``separation``
    of an already kept one. Points (K, 3) must be sorted best first."""
    if len(points) <= 1 or separation <= 0:
        return np.arange(len(points))
    tree = cKDTree(points)
    suppressed = np.zeros(len(points), dtype=bool)
    keep = []
    for i in range(len(points)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed[tree.query_ball_point(points[i], r=separation)] = True
    return np.asarray(keep, dtype=np.intp)


def _separate(centers: list[np.ndarray], scores: list[float], separation: float) -> ClassPicks:
    """Stack picks of one class, keeping the higher-scoring of any pair closer than separation."""
    if not centers:
        return _empty_picks()
    points = np.asarray(centers, dtype=np.float64)
    values = np.asarray(scores, dtype=np.float32)
    order = np.argsort(-values, kind="stable")
    # Separation is "at least", so shave a hair off the radius to keep picks exactly that far apart.
    kept = order[_greedy_separate(points[order], separation * (1 - 1e-9))]
    kept.sort()
    return ClassPicks(points[kept], values[kept])
