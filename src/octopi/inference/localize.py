"""Turn a 3-D segmentation (labels or class probabilities) into particle centres per class.

All work happens on bounding boxes: foreground voxels of a class (its label, or its probability
at or above the class's threshold) are first grouped on a coarse grid of blocks
(:mod:`octopi.inference.blocks`; cheap, no full-volume connected-component pass), then each
group's box is labelled and each connected component in it processed on its own tight crop.
Coordinates are voxel indices (z, y, x).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from octopi.config import LocalizeConfig
from octopi.inference.blocks import block_counts_of_indices, block_counts_of_mask, coarse_boxes
from octopi.inference.centers import greedy_separate
from octopi.inference.regions import ClassScale, ComponentCandidates, box_candidates

__all__ = [
    "ClassPicks",
    "LocalizeClass",
    "LocalizeConfig",
    "argmax_labels",
    "class_min_size_fraction",
    "class_threshold",
    "localize",
    "localize_channel",
    "localize_channel_min_sizes",
    "localize_labels_min_sizes",
]

# Label volumes with at most this foreground fraction are indexed sparsely (one pass for all
# classes); denser ones, such as an untrained network's argmax, get one mask per class.
_SPARSE_FOREGROUND_FRACTION = 0.05


@dataclass(frozen=True)
class LocalizeClass:
    """One particle class: its name, label value / channel index (>= 1) and radius in Å."""

    name: str
    label: int
    radius_angstrom: float


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


def localize(
    segmentation: np.ndarray,
    classes: Sequence[LocalizeClass],
    voxel_size_angstrom: float,
    settings: LocalizeConfig = LocalizeConfig(),
) -> dict[str, ClassPicks]:
    """Find particle centres of each class in a segmentation.

    segmentation: (Z, Y, X) integer labels (0 background), or (C, Z, Y, X) float probabilities
        with channel 0 background and channel ``cls.label`` for each class; a class's voxels
        are those with probability >= :func:`class_threshold` (thresholds act on
        probabilities only), or for ``settings.argmax_classes`` those where it is the argmax.
    classes: the classes to localize; labels must be >= 1 (and < C for probabilities).
    voxel_size_angstrom: voxel edge in Å; radius in voxels = radius_angstrom / voxel size.
    Returns class name -> ClassPicks (empty (0, 3) arrays where nothing was found).
    """
    volume = np.asarray(segmentation)
    if not _validate(volume, classes, voxel_size_angstrom, settings):
        return _localize_labels(volume, classes, voxel_size_angstrom, settings)
    argmax = set(settings.argmax_classes or ())
    found = {
        cls.name: _localize_probability(volume[cls.label], cls, voxel_size_angstrom, settings)
        for cls in classes
        if cls.name not in argmax
    }
    by_argmax = [cls for cls in classes if cls.name in argmax]
    if by_argmax:
        labels = argmax_labels(volume)
        found.update(_localize_labels(labels, by_argmax, voxel_size_angstrom, settings))
    return {cls.name: found[cls.name] for cls in classes}


def argmax_labels(probabilities: np.ndarray, slab_voxels: int = 1 << 22) -> np.ndarray:
    """(Z, Y, X) uint8 labels: the argmax over the channels of (C, Z, Y, X) probabilities
    (C <= 256), a few z-slices (about ``slab_voxels`` voxels) at a time. ``np.argmax`` over the
    first axis of the whole array copies it with that axis last and returns int64: 1.6 GB
    more at CZII size (184×630×630, 7 float16 channels) instead of 0.15 GB."""
    labels = np.empty(probabilities.shape[1:], dtype=np.uint8)
    step = max(1, slab_voxels // max(1, math.prod(probabilities.shape[2:])))
    for z in range(0, labels.shape[0], step):
        labels[z : z + step] = np.argmax(probabilities[:, z : z + step], axis=0)
    return labels


def localize_channel(
    probability: np.ndarray,
    cls: LocalizeClass,
    voxel_size_angstrom: float,
    settings: LocalizeConfig = LocalizeConfig(),
) -> ClassPicks:
    """Picks of one class from its (Z, Y, X) float probability channel (e.g. float16 from
    disk, one class at a time), exactly as :func:`localize` picks it from (C, Z, Y, X)."""
    channel = _checked_channel(probability, cls, voxel_size_angstrom)
    return _localize_probability(channel, cls, voxel_size_angstrom, settings)


def localize_channel_min_sizes(
    probability: np.ndarray,
    cls: LocalizeClass,
    voxel_size_angstrom: float,
    settings: LocalizeConfig,
    min_size_fractions: Sequence[float],
) -> list[ClassPicks]:
    """Picks of one class from its (Z, Y, X) float probabilities for each of
    ``min_size_fractions`` (in that order), each exactly as :func:`localize_channel` with
    that class's ``per_class_min_size_fraction``; the connected components and their splits
    are computed once for all (calibration tries many minimum sizes)."""
    if not min_size_fractions:
        raise ValueError("min_size_fractions is empty; give at least one")
    channel = _checked_channel(probability, cls, voxel_size_angstrom)
    mask = channel >= class_threshold(cls.name, settings)
    counts = block_counts_of_mask(mask)
    return _pick_class(
        cls, mask.shape, counts, mask.__getitem__, channel, voxel_size_angstrom, settings,
        min_size_fractions,
    )  # fmt: skip


def localize_labels_min_sizes(
    labels: np.ndarray,
    cls: LocalizeClass,
    voxel_size_angstrom: float,
    settings: LocalizeConfig,
    min_size_fractions: Sequence[float],
) -> list[ClassPicks]:
    """Picks of one class from (Z, Y, X) integer labels for each of ``min_size_fractions``
    (in that order), each exactly as :func:`localize` of the labels with that class's
    ``per_class_min_size_fraction``; the components are computed once for all."""
    if not min_size_fractions:
        raise ValueError("min_size_fractions is empty; give at least one")
    _validate_classes([cls], voxel_size_angstrom)
    mask = np.asarray(labels) == cls.label
    return _pick_class(
        cls, mask.shape, block_counts_of_mask(mask), mask.__getitem__, None,
        voxel_size_angstrom, settings, min_size_fractions,
    )  # fmt: skip


def _checked_channel(
    probability: np.ndarray, cls: LocalizeClass, voxel_size_angstrom: float
) -> np.ndarray:
    channel = np.asarray(probability)
    if channel.ndim != 3 or not np.issubdtype(channel.dtype, np.floating):
        raise ValueError(
            f"a class probability channel is a (Z, Y, X) float array, got shape {channel.shape} "
            f"and dtype {channel.dtype}"
        )
    _validate_classes([cls], voxel_size_angstrom)
    return channel


def class_threshold(name: str, settings: LocalizeConfig) -> float:
    """The probability threshold of class ``name``: its ``per_class_threshold``, else
    ``score_threshold``."""
    return (settings.per_class_threshold or {}).get(name, settings.score_threshold)


def class_min_size_fraction(name: str, settings: LocalizeConfig) -> float:
    """The smallest kept region of class ``name`` (× its sphere volume): its
    ``per_class_min_size_fraction``, else ``min_size_fraction``."""
    return (settings.per_class_min_size_fraction or {}).get(name, settings.min_size_fraction)


def _localize_probability(
    channel: np.ndarray, cls: LocalizeClass, voxel_size_angstrom: float, settings: LocalizeConfig
) -> ClassPicks:
    """Picks of one class from its (Z, Y, X) probabilities: voxels >= its threshold,
    probability-weighted centres, mean-probability scores."""
    mask = channel >= class_threshold(cls.name, settings)
    counts = block_counts_of_mask(mask)
    min_size = [class_min_size_fraction(cls.name, settings)]
    return _pick_class(
        cls, mask.shape, counts, mask.__getitem__, channel, voxel_size_angstrom, settings,
        min_size,
    )[0]  # fmt: skip


def _localize_labels(
    volume: np.ndarray,
    classes: Sequence[LocalizeClass],
    voxel_size_angstrom: float,
    settings: LocalizeConfig,
) -> dict[str, ClassPicks]:
    """Picks of each class from (Z, Y, X) integer labels."""
    flat = volume.reshape(-1)
    sparse = np.count_nonzero(flat) <= _SPARSE_FOREGROUND_FRACTION * flat.size
    if sparse:
        foreground = np.flatnonzero(flat)
        foreground_labels = flat[foreground]
    results: dict[str, ClassPicks] = {}
    for cls in classes:
        if sparse:
            counts = block_counts_of_indices(
                foreground[foreground_labels == cls.label], volume.shape
            )

            def mask_of(box: tuple[slice, ...], label: int = cls.label) -> np.ndarray:
                return volume[box] == label
        else:
            full_mask = volume == cls.label
            counts, mask_of = block_counts_of_mask(full_mask), full_mask.__getitem__
        min_size = [class_min_size_fraction(cls.name, settings)]
        results[cls.name] = _pick_class(
            cls, volume.shape, counts, mask_of, None, voxel_size_angstrom, settings, min_size
        )[0]
    return results


def _pick_class(
    cls: LocalizeClass,
    shape: tuple[int, ...],
    counts: np.ndarray,
    mask_of: Callable[[tuple[slice, ...]], np.ndarray],
    channel: np.ndarray | None,
    voxel_size_angstrom: float,
    settings: LocalizeConfig,
    min_size_fractions: Sequence[float],
) -> list[ClassPicks]:
    """Picks of one class from its foreground in a (Z, Y, X) volume of ``shape``, one
    ClassPicks per minimum size (× sphere volume): ``counts`` per coarse block,
    ``mask_of(box)`` the bool mask of a box, ``channel`` the (Z, Y, X) probabilities (None for
    labels)."""
    radius_voxel = cls.radius_angstrom / voxel_size_angstrom
    scales = [ClassScale.of(radius_voxel, settings, fraction) for fraction in min_size_fractions]
    smallest = min(scales, key=lambda scale: scale.min_voxels)
    cap = settings.max_foreground_fraction
    fraction = float(counts.sum(dtype=np.int64)) / math.prod(shape)
    if cap is not None and fraction > cap:
        warnings.warn(
            f"{cls.name}: {fraction:.0%} of the volume is foreground, more than "
            f"max_foreground_fraction={cap}; treating it as noise and picking nothing",
            RuntimeWarning,
            stacklevel=3,
        )
        return [_separate([], [], scale.separation_voxel) for scale in scales]  # no picks
    largest_min_voxels = max(scale.min_voxels for scale in scales)
    candidates: list[ComponentCandidates] = []
    for box, owned in coarse_boxes(counts, shape, smallest.min_voxels):
        mask = mask_of(box)
        if owned is not None:
            mask = mask & owned
        weights = None if channel is None else channel[box].astype(np.float32, copy=False)
        offset = np.array([s.start for s in box], dtype=np.float64)
        candidates.extend(
            box_candidates(mask, weights, smallest, largest_min_voxels, settings.method, offset)
        )
    results = []
    for scale in scales:
        picks = [pick for c in candidates for pick in c.picks(scale.min_voxels, settings.method)]
        centers = [center for center, _ in picks]
        results.append(_separate(centers, [value for _, value in picks], scale.separation_voxel))
    return results


def _validate(
    volume: np.ndarray,
    classes: Sequence[LocalizeClass],
    voxel_size_angstrom: float,
    settings: LocalizeConfig,
) -> bool:
    """Check inputs; return True for probability input, False for labels."""
    _validate_classes(classes, voxel_size_angstrom)
    names = [c.name for c in classes]
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


def _validate_classes(classes: Sequence[LocalizeClass], voxel_size_angstrom: float) -> None:
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


def _separate(centers: list[np.ndarray], scores: list[float], separation: float) -> ClassPicks:
    """Stack picks of one class, keeping the higher-scoring of any pair closer than separation."""
    if not centers:
        return ClassPicks(np.zeros((0, 3), np.float64), np.zeros(0, np.float32))
    points = np.asarray(centers, dtype=np.float64)
    values = np.asarray(scores, dtype=np.float32)
    order = np.argsort(-values, kind="stable")
    # Separation is "at least", so shave a hair off the radius to keep picks exactly that far apart.
    kept = order[greedy_separate(points[order], separation * (1 - 1e-9))]
    kept.sort()
    return ClassPicks(points[kept], values[kept])
