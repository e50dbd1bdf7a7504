"""Geometry of particle centres: a sphere fit to a region's outline, and greedy separation
of candidate centres. Coordinates are voxel indices (z, y, x); used by
:mod:`octopi.inference.localize`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

# Fewer boundary voxels than this make a sphere fit meaningless; fall back to the peak voxel.
_MIN_FIT_POINTS = 20


def fit_sphere_center(points: np.ndarray, peak: np.ndarray, height: float) -> np.ndarray:
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


def greedy_separate(points: np.ndarray, separation: float) -> np.ndarray:
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
