"""Non-particle content of synthetic tomograms: vesicle membranes, gold beads, ice gradient.

All functions add density in place to a float32 ``(Z, Y, X)`` volume (protein density ~1) and
take lengths in voxels unless a name says otherwise.
"""

from __future__ import annotations

import numpy as np

# A membrane sphere: (centre_zyx voxels, radius voxels, half bilayer thickness voxels).
Membrane = tuple[np.ndarray, float, float]


def random_membranes(
    rng: np.random.Generator, shape_zyx: tuple[int, int, int], voxel_size_angstrom: float, n: int
) -> list[Membrane]:
    """``n`` vesicles: radius 0.3-0.55 of the larger in-plane edge, centre anywhere."""
    size = np.asarray(shape_zyx, dtype=np.float64)
    membranes = []
    for _ in range(n):
        radius_m = rng.uniform(0.3, 0.55) * float(np.max(size[1:]))
        centre_m = size * rng.uniform(0.0, 1.0, 3)
        membranes.append((centre_m, radius_m, 20.0 / voxel_size_angstrom))  # bilayer ~40 Å
    return membranes


def add_membrane(volume: np.ndarray, membrane: Membrane, amplitude: float = 0.7) -> None:
    """Add a lipid bilayer (two dense leaflets) on a sphere, in place, one Z slice at a time."""
    centre, radius_voxel, half_thickness_voxel = membrane
    leaflet_sigma = max(0.35 * half_thickness_voxel, 0.6)
    _, ny, nx = volume.shape
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    dyx2 = (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
    for z in range(volume.shape[0]):
        depth = np.sqrt(dyx2 + (z - centre[0]) ** 2) - radius_voxel
        if np.min(np.abs(depth)) > 4 * half_thickness_voxel:
            continue
        leaflets = sum(
            np.exp(-0.5 * ((depth - s * 0.6 * half_thickness_voxel) / leaflet_sigma) ** 2)
            for s in (-1, 1)
        )
        volume[z] += (amplitude * leaflets).astype(np.float32)


def add_spheres(
    volume: np.ndarray, centres_zyx: np.ndarray, radius_voxel: float, amplitude: float
) -> None:
    """Add solid, soft-edged spheres (e.g. gold beads) of one radius at ``(N, 3)`` centres."""
    half = int(np.ceil(radius_voxel + 2.0))
    for centre in np.asarray(centres_zyx).reshape(-1, 3):
        lo = np.maximum(np.floor(centre).astype(int) - half, 0)
        hi = np.minimum(np.floor(centre).astype(int) + half + 1, volume.shape)
        if np.any(hi <= lo):
            continue
        grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
        dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)))
        body = 0.5 * (1.0 + np.tanh((radius_voxel - dist) / 0.6))
        volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += (amplitude * body).astype(np.float32)


def add_ice_gradient(volume: np.ndarray, rng: np.random.Generator, peak_to_peak: float) -> None:
    """Add a smooth background ramp in a random in-plane direction (uneven ice thickness).

    The ramp varies along Y and X only, by ``peak_to_peak`` across the volume, with a gentle
    curvature so that it is not a pure plane.
    """
    _, ny, nx = volume.shape
    angle = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, ny), np.linspace(-0.5, 0.5, nx), indexing="ij")
    along = np.cos(angle) * yy + np.sin(angle) * xx
    ramp = along + rng.uniform(-0.8, 0.8) * along**2
    ramp -= ramp.min()
    ramp *= peak_to_peak / max(float(ramp.max()), 1e-12)
    volume += ramp.astype(np.float32)[None]
