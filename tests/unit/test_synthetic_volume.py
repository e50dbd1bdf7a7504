"""Unit tests for the synthetic tomogram simulator (data.synthetic_volume/run/tilt_series)."""

from __future__ import annotations

import numpy as np
import pytest

from octopi.data.synthetic_run import simulate_run
from octopi.data.synthetic_volume import (
    CZII_PARTICLES,
    ParticleClass,
    SyntheticRun,
    render_density,
)
from octopi.data.tilt_series import TiltGeometry, tilt_angles_degrees

VOXEL_SIZE_ANGSTROM = 10.0
SMALL_SHAPE = (32, 64, 64)
MEDIUM_SHAPE = (48, 96, 96)


@pytest.fixture(scope="module")
def medium_run() -> SyntheticRun:
    return simulate_run(MEDIUM_SHAPE, VOXEL_SIZE_ANGSTROM, seed=3)


def _radii_voxel() -> dict[str, float]:
    return {p.name: p.radius_angstrom / VOXEL_SIZE_ANGSTROM for p in CZII_PARTICLES}


def test_czii_particle_table() -> None:
    table = [(p.name, p.radius_angstrom, p.label) for p in CZII_PARTICLES]
    assert table == [
        ("apo-ferritin", 60.0, 1),
        ("beta-amylase", 65.0, 2),
        ("beta-galactosidase", 90.0, 3),
        ("ribosome", 150.0, 4),
        ("thyroglobulin", 130.0, 5),
        ("virus-like-particle", 135.0, 6),
    ]
    shells = {p.name for p in CZII_PARTICLES if p.shape == "shell"}
    assert shells == {"apo-ferritin", "virus-like-particle"}
    assert all("_" not in p.name for p in CZII_PARTICLES)
    assert len({p.shape for p in CZII_PARTICLES if p.shape != "shell"}) == 4


def test_shapes_dtypes_and_normalisation(medium_run: SyntheticRun) -> None:
    for volume in (medium_run.wbp, medium_run.denoised):
        assert volume.shape == MEDIUM_SHAPE
        assert volume.dtype == np.float32
        assert abs(float(volume.mean())) < 1e-3
        assert float(volume.std()) == pytest.approx(1.0, abs=1e-3)
    assert list(medium_run.centers_voxel) == [p.name for p in CZII_PARTICLES]
    for centres in medium_run.centers_voxel.values():
        assert centres.dtype == np.float64
        assert centres.ndim == 2 and centres.shape[1] == 3


def test_same_seed_is_bit_identical_and_other_seed_differs() -> None:
    a = simulate_run(SMALL_SHAPE, VOXEL_SIZE_ANGSTROM, seed=7)
    b = simulate_run(SMALL_SHAPE, VOXEL_SIZE_ANGSTROM, seed=7)
    c = simulate_run(SMALL_SHAPE, VOXEL_SIZE_ANGSTROM, seed=8)
    assert np.array_equal(a.wbp, b.wbp)
    assert np.array_equal(a.denoised, b.denoised)
    for name in a.centers_voxel:
        assert np.array_equal(a.centers_voxel[name], b.centers_voxel[name])
    assert not np.array_equal(a.wbp, c.wbp)


def test_every_class_present_and_crowded(medium_run: SyntheticRun) -> None:
    counts = {name: len(c) for name, c in medium_run.centers_voxel.items()}
    assert all(n >= 1 for n in counts.values()), counts
    assert counts["apo-ferritin"] > counts["ribosome"]


def test_centres_do_not_overlap_and_stay_inside(medium_run: SyntheticRun) -> None:
    radii = _radii_voxel()
    centres = np.concatenate(list(medium_run.centers_voxel.values()))
    r = np.concatenate([np.full(len(c), radii[n]) for n, c in medium_run.centers_voxel.items()])
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert np.all(dist >= r[:, None] + r[None, :] - 1e-9)
    upper = np.asarray(MEDIUM_SHAPE) - 1.0
    assert np.all(centres >= 0.5 * r[:, None] - 1e-9)
    assert np.all(centres <= upper - 0.5 * r[:, None] + 1e-9)


def test_too_large_classes_are_skipped_without_error() -> None:
    run = simulate_run((16, 64, 64), VOXEL_SIZE_ANGSTROM, seed=0)
    # Diameters of 26-30 voxels do not fit in 16 slices; apo-ferritin (12) does.
    for name in ("ribosome", "thyroglobulin", "virus-like-particle"):
        assert run.centers_voxel[name].shape == (0, 3)
    assert len(run.centers_voxel["apo-ferritin"]) >= 1


@pytest.mark.parametrize("name", ["apo-ferritin", "virus-like-particle"])
def test_shells_are_hollow(name: str) -> None:
    particle = next(p for p in CZII_PARTICLES if p.name == name)
    radius = particle.radius_angstrom / VOXEL_SIZE_ANGSTROM
    shape = (40, 40, 40)
    centre = np.array([[19.5, 19.5, 19.5]])
    density = render_density(shape, VOXEL_SIZE_ANGSTROM, {name: centre}, [particle], seed=0)
    at_centre = density[19:21, 19:21, 19:21].mean()
    at_wall = density[19:21, 19:21, int(round(19.5 + 0.82 * radius))].mean()
    assert at_centre < 0.1 < 0.8 < at_wall


def test_non_shell_bodies_are_class_distinct_and_oriented() -> None:
    shape = (40, 40, 40)
    centre = {p.name: np.array([[19.5, 19.5, 19.5]]) for p in CZII_PARTICLES}
    fills = {}
    for p in CZII_PARTICLES:
        if p.shape == "shell":
            continue
        # Render at a common radius so that only the body shape differs.
        same_size = ParticleClass(p.name, 150.0, p.shape, p.label)
        a = render_density(shape, VOXEL_SIZE_ANGSTROM, centre, [same_size], seed=1)
        b = render_density(shape, VOXEL_SIZE_ANGSTROM, centre, [same_size], seed=2)
        assert not np.allclose(a, b), f"{p.name}: orientation should depend on the seed"
        fills[p.name] = round(float(a.sum()), -1)
    assert len(set(fills.values())) == len(fills), fills


def test_missing_wedge_in_fourier_space() -> None:
    run = simulate_run(MEDIUM_SHAPE, VOXEL_SIZE_ANGSTROM, seed=1, noise_sigma=0.0, membranes=0)
    nz, _, nx = MEDIUM_SHAPE
    power = (np.abs(np.fft.fft2(run.wbp, axes=(0, 2))) ** 2).mean(axis=1)
    kz = np.fft.fftfreq(nz)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    k = np.hypot(kz, kx)
    angle_from_kz = np.degrees(np.arctan2(np.abs(kx), np.abs(kz)))
    band = (k > 0.04) & (k < 0.3)
    in_wedge = power[band & (angle_from_kz < 20)].mean()  # tilts stop at 60 deg: 30 deg wedge
    sampled = power[band & (angle_from_kz > 45)].mean()
    assert in_wedge < 0.1 * sampled  # an isotropic density map gives a ratio near 1


def test_denoised_particles_stand_out(medium_run: SyntheticRun) -> None:
    radii = _radii_voxel()
    grid = np.indices(MEDIUM_SHAPE).reshape(3, -1).T.astype(np.float64)
    inside = np.zeros(len(grid), dtype=bool)
    for name, centres in medium_run.centers_voxel.items():
        for c in centres:
            inside |= np.sum((grid - c) ** 2, axis=1) < (0.6 * radii[name]) ** 2
    values = medium_run.denoised.reshape(-1)
    assert values[inside].mean() - values[~inside].mean() > 0.5
    solid = [p.name for p in CZII_PARTICLES if p.shape != "shell"]
    at_centres = [
        medium_run.denoised[tuple(np.round(c).astype(int))]
        for n in solid
        for c in medium_run.centers_voxel[n]
    ]
    assert np.mean(at_centres) > values[~inside].mean() + 0.5


def test_tilt_angles() -> None:
    angles = tilt_angles_degrees(60.0, 3.0)
    assert angles.size == 41
    assert angles[0] == -60.0 and angles[-1] == 60.0 and angles[20] == 0.0


def test_full_range_back_projection_recovers_a_disc() -> None:
    nz, ny, nx = 48, 2, 48
    z, x = np.mgrid[:nz, :nx]
    disc = (((z - 24) ** 2 + (x - 20) ** 2) < 64).astype(np.float32)
    volume = np.repeat(disc[:, None, :], ny, axis=1)
    geometry = TiltGeometry((nz, nx), np.arange(-89.5, 90.0, 1.0))
    reconstruction = geometry.weighted_back_projection(geometry.project(volume))
    assert reconstruction.shape == volume.shape
    assert reconstruction[24, 0, 20] == pytest.approx(1.0, abs=0.1)
    assert abs(reconstruction[5, 0, 40]) < 0.1
