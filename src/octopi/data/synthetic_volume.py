"""Synthetic cryo-ET tomograms with known particle positions (numpy/scipy only).

Particles of the six CZII classes: their table, random crowded non-overlapping placement
(:func:`place_particles`) and rendering into a noise-free density map (:func:`render_density`:
smooth-edged bodies, a class-specific shape each, randomly oriented). The whole tomogram
(contaminants, tilt series, CTF, noise, reconstruction) is made by
:func:`octopi.data.synthetic_run.simulate_run`.

Coordinates are voxels in ``(z, y, x)`` order; lengths that are not voxels say so in their
name (``radius_angstrom``, ``voxel_size_angstrom``). Density is positive (bright) for protein.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from octopi.data.contaminants import Membrane


@dataclass(frozen=True)
class ParticleClass:
    """One particle species: copick object name (no underscores), radius, shape, 1-based label."""

    name: str
    radius_angstrom: float
    shape: str
    label: int


CZII_PARTICLES: tuple[ParticleClass, ...] = (
    ParticleClass("apo-ferritin", 60.0, "shell", 1),
    ParticleClass("beta-amylase", 65.0, "lobed", 2),
    ParticleClass("beta-galactosidase", 90.0, "elongated", 3),
    ParticleClass("ribosome", 150.0, "globular", 4),
    ParticleClass("thyroglobulin", 130.0, "dimer", 5),
    ParticleClass("virus-like-particle", 135.0, "shell", 6),
)


@dataclass(frozen=True)
class SyntheticRun:
    """A simulated tomogram pair and the ground-truth particle centres.

    ``wbp`` and ``denoised`` are float32 ``(Z, Y, X)``, each normalised to zero mean and unit
    standard deviation. ``centers_voxel`` maps every requested class name to a float64
    ``(N, 3)`` array of ``(z, y, x)`` centres in voxels (``N`` may be 0). ``defocus_um`` is
    the CTF's underfocus in µm (None: no CTF).
    """

    wbp: np.ndarray
    denoised: np.ndarray
    centers_voxel: dict[str, np.ndarray]
    defocus_um: float | None = None


# Bodies as unions of ellipsoids in the particle frame: (centre, semi-axes) in units of the
# class radius. Every body stays inside the unit sphere so that the r_i + r_j spacing used for
# placement really means "no overlap".
_TETRAHEDRON = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3.0)
_SHAPE_BLOBS: dict[str, list[tuple[tuple[float, float, float], tuple[float, float, float]]]] = {
    # Four globular subunits on a tetrahedron (beta-amylase is a tetramer).
    "lobed": [(tuple(0.52 * v), (0.44, 0.44, 0.44)) for v in _TETRAHEDRON]
    + [((0.0, 0.0, 0.0), (0.35, 0.35, 0.35))],
    # Flat 2 x 2 arrangement of elongated subunits, a box-like D2 tetramer.
    "elongated": [
        ((sz * 0.22, sy * 0.45, 0.0), (0.2, 0.42, 0.72)) for sz in (-1, 1) for sy in (-1, 1)
    ],
    # Large subunit plus an offset, flatter small subunit (ribosome-like).
    "globular": [((0.0, 0.0, -0.2), (0.72, 0.72, 0.72)), ((0.0, 0.1, 0.55), (0.55, 0.4, 0.3))],
    # Two parallel elongated halves (thyroglobulin is an elongated dimer).
    "dimer": [((0.0, -0.3, 0.0), (0.34, 0.34, 0.88)), ((0.06, 0.3, 0.08), (0.32, 0.34, 0.85))],
}
_SHELL_INNER_FRACTION = 0.62
_EDGE_VOXELS = 0.6  # soft-edge half width, so bodies stay band-limited at any voxel size
_AMPLITUDE = {"globular": 1.2}  # RNA-rich ribosomes scatter more than plain protein


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniformly distributed 3D rotation matrices, float64 ``(n, 3, 3)`` (acting on zyx)."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, a, b, c = q.T
    return np.stack(
        [
            [1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w)],
            [2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w)],
            [2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b)],
        ]
    ).transpose(2, 0, 1)


def _soft_step(signed_distance_voxels: np.ndarray) -> np.ndarray:
    """~1 inside, ~0 outside, smooth over about two voxels around the surface."""
    return 0.5 * (1.0 + np.tanh(signed_distance_voxels / _EDGE_VOXELS))


def _body_density(
    shape: str,
    radius_voxel: float,
    local_zyx: np.ndarray,
    ellipsoid_axes: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Density (0..1) of one body at particle-frame offsets ``local_zyx`` (..., 3) in voxels.

    ``ellipsoid_axes`` (semi-axes in units of the radius) is used by the "globule" shape only.
    """
    if shape == "shell":
        dist = np.sqrt(np.sum(local_zyx * local_zyx, axis=-1))
        outer = _soft_step(radius_voxel - dist)
        inner = _soft_step(_SHELL_INNER_FRACTION * radius_voxel - dist)
        return outer - inner
    if shape == "globule":
        blobs = [((0.0, 0.0, 0.0), ellipsoid_axes)]
    elif shape in _SHAPE_BLOBS:
        blobs = _SHAPE_BLOBS[shape]
    else:
        raise ValueError(f"unknown particle shape {shape!r}; known: shell, {sorted(_SHAPE_BLOBS)}")
    density = np.zeros(local_zyx.shape[:-1])
    for centre, axes in blobs:
        axes_voxel = np.asarray(axes) * radius_voxel
        rho = np.sqrt(
            np.sum(((local_zyx - np.asarray(centre) * radius_voxel) / axes_voxel) ** 2, -1)
        )
        # (1 - rho) * smallest axis approximates the signed distance to the ellipsoid surface.
        np.maximum(density, _soft_step((1.0 - rho) * axes_voxel.min()), out=density)
    return density


def _splat(
    volume: np.ndarray,
    centre_zyx: np.ndarray,
    radius_voxel: float,
    rotation: np.ndarray,
    shape: str,
    amplitude: float,
    ellipsoid_axes: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> None:
    """Add one rotated body into ``volume`` in place, touching only its bounding box."""
    half = radius_voxel + 2.0 * _EDGE_VOXELS + 1.0
    lo = np.maximum(np.floor(centre_zyx - half).astype(int), 0)
    hi = np.minimum(np.ceil(centre_zyx + half).astype(int) + 1, volume.shape)
    if np.any(hi <= lo):
        return
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
    offsets = np.stack(grids, axis=-1) - centre_zyx
    local = offsets @ rotation  # row vectors: R^T applied to each offset
    density = _body_density(shape, radius_voxel, local, ellipsoid_axes)
    volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += (amplitude * density).astype(np.float32)


def _place(
    rng: np.random.Generator,
    shape_zyx: tuple[int, int, int],
    radii_voxel: np.ndarray,
    placed_zyx: np.ndarray,
    placed_radii: np.ndarray,
    keep_out: Sequence[Membrane] = (),
    max_batches: int = 40,
) -> tuple[np.ndarray, np.ndarray]:
    """Random sequential placement of spheres of ``radii_voxel`` among already placed ones.

    Each centre keeps at least half its radius from every border and at least r_i + r_j from
    every other centre; a sphere that cannot be placed after ``max_batches`` rounds of random
    candidates is dropped (the volume is full). Returns the placed centres, float64 ``(M, 3)``
    with M <= len(radii), and their radii ``(M,)``.
    """
    size = np.asarray(shape_zyx, dtype=np.float64)
    accepted: list[np.ndarray] = []
    accepted_r: list[float] = []
    todo = list(radii_voxel)
    centres, radii = placed_zyx.copy(), placed_radii.copy()
    for _ in range(max_batches):
        if not todo:
            break
        r_cand = np.asarray(todo)
        n_cand = max(64, 4 * len(todo))
        r_cand = np.resize(r_cand, n_cand)  # cycle through the radii still to place
        margin = 0.5 * r_cand[:, None]
        cand = margin + rng.random((n_cand, 3)) * (size - 1.0 - 2.0 * margin)
        ok = np.ones(n_cand, dtype=bool)
        if len(centres):
            dist = np.linalg.norm(cand[:, None, :] - centres[None, :, :], axis=-1)
            ok &= np.all(dist >= r_cand[:, None] + radii[None, :], axis=1)
        for centre_m, radius_m, half_thickness_m in keep_out:
            gap = np.abs(np.linalg.norm(cand - centre_m, axis=1) - radius_m)
            ok &= gap >= r_cand + half_thickness_m
        cand, r_cand = cand[ok], r_cand[ok]
        pair = np.linalg.norm(cand[:, None, :] - cand[None, :, :], axis=-1)
        clash = pair < r_cand[:, None] + r_cand[None, :]
        taken = np.zeros(len(cand), dtype=bool)
        for i in range(len(cand)):
            if not todo:
                break
            if r_cand[i] in todo and not np.any(clash[i] & taken):
                taken[i] = True
                todo.remove(r_cand[i])
                accepted.append(cand[i])
                accepted_r.append(r_cand[i])
        centres = np.concatenate([centres, cand[taken]])
        radii = np.concatenate([radii, r_cand[taken]])
    return np.asarray(accepted, dtype=np.float64).reshape(-1, 3), np.asarray(accepted_r)


def _class_counts(
    rng: np.random.Generator,
    shape_zyx: tuple[int, int, int],
    radii_voxel: np.ndarray,
    crowding: float,
) -> np.ndarray:
    """Particles per class: the body volumes sum to ``crowding`` of the volume on average.

    Counts scale as r^-1.5 so that small particles are more numerous than large ones, but
    less extremely than equal-volume shares would make them. Every class asks for at least one.
    """
    weights = radii_voxel**-1.5
    sphere_volumes = 4.0 / 3.0 * np.pi * radii_voxel**3
    scale = crowding * float(np.prod(shape_zyx)) / float(np.sum(weights * sphere_volumes))
    return np.maximum(rng.poisson(scale * weights), 1)


def place_particles(
    rng: np.random.Generator,
    shape_zyx: tuple[int, int, int],
    voxel_size_angstrom: float,
    particles: Sequence[ParticleClass] = CZII_PARTICLES,
    crowding: float = 0.2,
    keep_out: Sequence[Membrane] = (),
) -> dict[str, np.ndarray]:
    """Crowded, non-overlapping particle centres, float64 ``(N, 3)`` voxels per class name.

    Largest classes are placed first (small ones fill the gaps). Classes whose diameter does
    not fit in the smallest dimension get an empty ``(0, 3)`` array. ``keep_out`` lists membrane
    spheres ``(centre_zyx, radius_voxel, half_thickness_voxel)`` to avoid.
    """
    radii = np.array([p.radius_angstrom / voxel_size_angstrom for p in particles])
    counts = _class_counts(rng, shape_zyx, radii, crowding)
    centres: dict[str, np.ndarray] = {p.name: np.zeros((0, 3)) for p in particles}
    placed, placed_r = np.zeros((0, 3)), np.zeros(0)
    for i in np.argsort(-radii, kind="stable"):
        if 2.0 * radii[i] > min(shape_zyx) - 1:
            continue
        new, _ = _place(rng, shape_zyx, np.full(counts[i], radii[i]), placed, placed_r, keep_out)
        centres[particles[i].name] = new
        placed = np.concatenate([placed, new])
        placed_r = np.concatenate([placed_r, np.full(len(new), radii[i])])
    return centres


def render_density(
    shape_zyx: tuple[int, int, int],
    voxel_size_angstrom: float,
    centers_voxel: dict[str, np.ndarray],
    particles: Sequence[ParticleClass] = CZII_PARTICLES,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Noise-free density of the given particles, float32 ``(Z, Y, X)``, 0 = solvent.

    Each particle gets its class body at ``radius_angstrom / voxel_size_angstrom`` voxels,
    randomly oriented (orientations drawn from ``seed``), protein density ~1 per voxel.
    """
    rng = np.random.default_rng(seed) if isinstance(seed, int | np.integer) else seed
    volume = np.zeros(shape_zyx, dtype=np.float32)
    for particle in particles:
        centres = np.asarray(centers_voxel.get(particle.name, np.zeros((0, 3))))
        rotations = random_rotations(rng, len(centres))
        radius_voxel = particle.radius_angstrom / voxel_size_angstrom
        amplitude = _AMPLITUDE.get(particle.shape, 1.0)
        for centre, rotation in zip(centres, rotations, strict=True):
            _splat(volume, centre, radius_voxel, rotation, particle.shape, amplitude)
    return volume


def _normalise(volume: np.ndarray) -> np.ndarray:
    mean = volume.mean(dtype=np.float64)
    std = volume.std(dtype=np.float64)
    volume -= np.float32(mean)
    volume /= np.float32(std if std > 0 else 1.0)
    return volume
