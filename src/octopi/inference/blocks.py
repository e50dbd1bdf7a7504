"""Coarse-grid grouping of a class's foreground voxels into boxes, so that particles are found
box by box (no full-volume connected-component pass). Used by
:mod:`octopi.inference.localize`; coordinates are voxel indices (z, y, x).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from scipy import ndimage as ndi

# Coarse block edge in voxels. Small enough that particles more than ~2 blocks apart land in
# separate boxes (so a crowded tomogram does not chain into one huge box), large enough that the
# coarse grid is ~1/64 of the volume.
BLOCK_VOXELS = 4


def _coarse_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-(-dim // BLOCK_VOXELS) for dim in shape)


def block_counts_of_indices(flat_indices: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Foreground voxels per coarse block, from flat indices into a volume of ``shape``."""
    coarse_shape = _coarse_shape(shape)
    blocks = tuple(axis // BLOCK_VOXELS for axis in np.unravel_index(flat_indices, shape))
    block_index = np.ravel_multi_index(blocks, coarse_shape)
    return np.bincount(block_index, minlength=math.prod(coarse_shape)).reshape(coarse_shape)


def block_counts_of_mask(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels per coarse block of a (Z, Y, X) bool mask, as uint8 (<= 64)."""
    b = BLOCK_VOXELS
    padded = np.pad(mask, [(0, -dim % b) for dim in mask.shape]).view(np.uint8)
    z, y, x = padded.shape
    # One axis at a time keeps every reduction over a contiguous pair of axes: ~5x faster than
    # a single sum over axes (1, 3, 5) of a 6-D view.
    counts = padded.reshape(z // b, b, y, x).sum(axis=1, dtype=np.uint8)
    counts = counts.reshape(z // b, y // b, b, x).sum(axis=2, dtype=np.uint8)
    return counts.reshape(z // b, y // b, x // b, b).sum(axis=3, dtype=np.uint8)


def coarse_boxes(
    block_counts: np.ndarray, shape: tuple[int, ...], min_voxels: float
) -> Iterator[tuple[tuple[slice, ...], np.ndarray | None]]:
    """Group foreground into boxes via 26-connected occupied blocks of the coarse grid.

    block_counts: foreground voxels per block; groups with fewer than ``min_voxels`` in all are
    skipped. Yields (box slices into the volume, bool mask of the box voxels owned by the
    group, or None when the box holds no other group). Touching voxels always fall in
    26-adjacent blocks, so no connected component is split across groups, and the owned masks
    of different groups never overlap.
    """
    block = BLOCK_VOXELS
    groups, n_groups = ndi.label(block_counts > 0, structure=np.ones((3, 3, 3), dtype=bool))
    # Noisy predictions give thousands of specks; dropping small groups here skips their
    # per-box Python overhead altogether.
    voxels_per_group = np.bincount(
        groups.ravel(), weights=block_counts.ravel(), minlength=n_groups + 1
    )
    for group_id, coarse_box in enumerate(ndi.find_objects(groups), start=1):
        if coarse_box is None or voxels_per_group[group_id] < max(min_voxels, 1):
            continue
        box = tuple(
            slice(s.start * block, min(s.stop * block, dim))
            for s, dim in zip(coarse_box, shape, strict=True)
        )
        in_group = groups[coarse_box] == group_id
        if np.all(in_group | (groups[coarse_box] == 0)):
            yield box, None  # empty blocks hold no foreground, so nothing needs masking
            continue
        block_of_voxel = [
            np.arange(b.start, b.stop) // block - c.start
            for b, c in zip(box, coarse_box, strict=True)
        ]
        yield box, in_group[np.ix_(*block_of_voxel)]
