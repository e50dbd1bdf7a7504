"""One simulated tomogram: :func:`simulate_run` (numpy/scipy only).

Pipeline:

1. place vesicle membranes, then particles of every class (crowded, non-overlapping), then
   unlabeled distractors (soft ellipsoids, or look-alikes of the class shapes at other sizes)
   and, if the settings ask, gold beads;
2. render a noise-free density map (:mod:`octopi.data.synthetic_volume`), plus membranes and
   an ice-thickness gradient (:mod:`octopi.data.contaminants`);
3. project it along the beam over a single-axis tilt series about Y, apply the CTF
   (:mod:`octopi.data.ctf`) if the settings ask, add Gaussian noise to the projections, and
   reconstruct with weighted (ramp-filtered) back-projection, which gives the real missing
   wedge: elongation along Z and streaks;
4. reconstruct a cleaner "denoised" tomogram of the same particles from low-noise projections.

The settings come from a preset (:mod:`octopi.data.synthetic_presets`); ``default`` gives the
same arrays as before presets existed, for the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy import ndimage

from octopi.data.contaminants import (
    Membrane,
    add_ice_gradient,
    add_membrane,
    add_spheres,
    random_membranes,
)
from octopi.data.ctf import CtfParameters, apply_ctf
from octopi.data.synthetic_presets import SimulationSettings, preset_settings
from octopi.data.synthetic_volume import (
    CZII_PARTICLES,
    ParticleClass,
    SyntheticRun,
    _normalise,
    _place,
    _splat,
    place_particles,
    random_rotations,
    render_density,
)
from octopi.data.tilt_series import TiltGeometry, tilt_angles_degrees


def _placed_spheres(
    centers: dict[str, np.ndarray], particles: Sequence[ParticleClass], voxel_size_angstrom: float
) -> tuple[np.ndarray, np.ndarray]:
    """All particle centres ``(N, 3)`` and their radii in voxels ``(N,)``, in class order."""
    all_centres = np.concatenate([np.zeros((0, 3)), *centers.values()])
    all_radii = np.concatenate(
        [np.zeros(0)]
        + [
            np.full(len(centers[p.name]), p.radius_angstrom / voxel_size_angstrom)
            for p in particles
        ]
    )
    return all_centres, all_radii


def _add_distractors(
    rng: np.random.Generator,
    density: np.ndarray,
    voxel_size_angstrom: float,
    placed: tuple[np.ndarray, np.ndarray],
    membranes: Sequence[Membrane],
    settings: SimulationSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """Place and render unlabeled distractors in place; return all placed centres and radii."""
    size = np.asarray(density.shape, dtype=np.float64)
    n_distractors = int(
        rng.poisson(settings.distractors_per_megavoxel * float(np.prod(size)) / 1e6)
    )
    radii = rng.uniform(*settings.distractor_radius_angstrom, n_distractors) / voxel_size_angstrom
    radii = radii[2.0 * radii <= np.min(size) - 1]
    centres, radii = _place(
        rng, density.shape, radii, placed[0], placed[1], membranes, max_batches=10
    )
    rotations = random_rotations(rng, len(centres))
    axes = rng.uniform(0.45, 1.0, (len(centres), 3))  # never outside its sphere
    amplitudes = rng.uniform(*settings.distractor_amplitude, len(centres))
    shapes = settings.distractor_shapes
    if len(shapes) > 1:
        shapes = tuple(shapes[i] for i in rng.integers(0, len(shapes), len(centres)))
    else:
        shapes = shapes * len(centres)
    for i, centre in enumerate(centres):
        _splat(density, centre, radii[i], rotations[i], shapes[i], amplitudes[i], tuple(axes[i]))
    return np.concatenate([placed[0], centres]), np.concatenate([placed[1], radii])


def _gold_beads(
    rng: np.random.Generator,
    shape_zyx: tuple[int, int, int],
    voxel_size_angstrom: float,
    placed: tuple[np.ndarray, np.ndarray],
    membranes: Sequence[Membrane],
    settings: SimulationSettings,
) -> np.ndarray:
    """Density of the gold beads alone, float32 ``(Z, Y, X)`` (they avoid everything else)."""
    n_beads = int(rng.poisson(settings.gold_beads_per_megavoxel * float(np.prod(shape_zyx)) / 1e6))
    radius_voxel = settings.gold_radius_angstrom / voxel_size_angstrom
    centres, _ = _place(
        rng, shape_zyx, np.full(n_beads, radius_voxel), placed[0], placed[1], membranes, 10
    )
    gold = np.zeros(shape_zyx, dtype=np.float32)
    add_spheres(gold, centres, radius_voxel, settings.gold_amplitude)
    return gold


def _tilt_series(
    rng: np.random.Generator,
    geometry: TiltGeometry,
    density: np.ndarray,
    extra: np.ndarray | None,
    voxel_size_angstrom: float,
    settings: SimulationSettings,
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Noise-free projections (with the CTF if asked) and the noise to add, both float32
    ``(n_angles, n_detector, Y)``, and the defocus in µm (None: no CTF).

    The noise std is ``noise_sigma`` times the std of the projections of ``density`` before
    the CTF: the dose sets the noise and the CTF only takes contrast away; ``extra`` (gold
    beads, ice gradient) is imaged but does not change the noise level, so that a few very
    dense beads or a thick ice ramp do not drown the proteins.
    """
    ctf = None
    if settings.defocus_range_um is not None:
        ctf = CtfParameters(
            defocus_angstrom=rng.uniform(*settings.defocus_range_um) * 1e4,
            voltage_kv=settings.voltage_kv,
            spherical_aberration_mm=settings.spherical_aberration_mm,
            amplitude_contrast=settings.amplitude_contrast,
            b_factor_angstrom2=settings.b_factor_angstrom2,
            phase_flip=settings.phase_flip,
        )

    clean = geometry.project(density)
    noise_scale = clean.std(dtype=np.float64)
    if extra is not None:
        clean += geometry.project(extra)
    if ctf is not None:
        clean = apply_ctf(clean, voxel_size_angstrom, ctf)
    noise = rng.standard_normal(clean.shape, dtype=np.float32)
    noise *= np.float32(settings.noise_sigma * noise_scale)
    return clean, noise, None if ctf is None else ctf.defocus_angstrom / 1e4


def _reconstruct(
    geometry: TiltGeometry, clean: np.ndarray, noise: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """WBP of ``clean + noise`` and a "denoised" tomogram, both normalised ``(Z, Y, X)``."""
    wbp = _normalise(geometry.weighted_back_projection(clean + noise))
    # Denoisers keep structure but remove most of the high-frequency noise: reconstruct from
    # the same projections at a quarter of the noise, apodised, then blur lightly.
    noise *= np.float32(0.25)
    noise += clean
    denoised = geometry.weighted_back_projection(noise, hann=True)
    denoised = _normalise(ndimage.gaussian_filter(denoised, 0.8, output=np.float32))
    return wbp, denoised


def simulate_run(
    shape_zyx: tuple[int, int, int],
    voxel_size_angstrom: float,
    seed: int,
    particles: Sequence[ParticleClass] = CZII_PARTICLES,
    preset: str | SimulationSettings = "default",
    **overrides,
) -> SyntheticRun:
    """Simulate one tomogram (noisy WBP and a denoised version) with ground-truth centres.

    ``shape_zyx`` is ``(Z, Y, X)`` in voxels (Z the beam, Y the tilt axis); particle radii in
    voxels are ``radius_angstrom / voxel_size_angstrom``. Everything random comes from
    ``np.random.default_rng(seed)``: same seed and settings, identical arrays. ``preset`` names
    a preset of :mod:`octopi.data.synthetic_presets` (or gives the settings); ``overrides``
    replace single fields of it (e.g. ``noise_sigma=0.0``, ``membranes=0``).

    Returns a SyntheticRun with float32 ``(Z, Y, X)`` ``wbp`` and ``denoised`` (zero mean,
    unit std) and per-class ``(N, 3)`` float64 ``(z, y, x)`` voxel centres, in ``particles``
    order.
    """
    if isinstance(preset, SimulationSettings):
        settings = replace(preset, **overrides)
    else:
        settings = preset_settings(preset, **overrides)
    rng = np.random.default_rng(seed)
    shape_zyx = tuple(int(s) for s in shape_zyx)
    membranes = random_membranes(rng, shape_zyx, voxel_size_angstrom, settings.membranes)
    centers = place_particles(
        rng, shape_zyx, voxel_size_angstrom, particles, settings.crowding, membranes
    )
    density = render_density(shape_zyx, voxel_size_angstrom, centers, particles, rng)
    placed = _placed_spheres(centers, particles, voxel_size_angstrom)
    placed = _add_distractors(rng, density, voxel_size_angstrom, placed, membranes, settings)
    for membrane in membranes:
        add_membrane(density, membrane, settings.membrane_amplitude)
    extra = None  # gold and ice: seen by the microscope, but they do not set the noise level
    if settings.gold_beads_per_megavoxel > 0:
        extra = _gold_beads(rng, shape_zyx, voxel_size_angstrom, placed, membranes, settings)
    if settings.ice_gradient > 0:
        extra = np.zeros(shape_zyx, dtype=np.float32) if extra is None else extra
        add_ice_gradient(extra, rng, settings.ice_gradient)

    geometry = TiltGeometry(
        (shape_zyx[0], shape_zyx[2]),
        tilt_angles_degrees(settings.tilt_max_degrees, settings.tilt_step_degrees),
    )
    clean, noise, defocus_um = _tilt_series(
        rng, geometry, density, extra, voxel_size_angstrom, settings
    )
    del density, extra
    wbp, denoised = _reconstruct(geometry, clean, noise)
    return SyntheticRun(wbp=wbp, denoised=denoised, centers_voxel=centers, defocus_um=defocus_um)
