"""Named settings of the synthetic tomogram simulator: ``default`` and ``hard``.

``default`` reproduces the generator's original output bit for bit (same seed, same arrays),
so tests and benchmarks made with it stay comparable. ``hard`` adds what real tomograms have
and ``default`` lacks, so that a blob detector with no training is not enough: a CTF with a
per-run defocus (no phase flipping), a lower SNR, more crowding, similar-size distractor
particles of every class shape, several vesicles, gold beads (small, very dense spheres whose
missing-wedge streaks cross their neighbours) and a smooth ice-thickness gradient.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class SimulationSettings:
    """Every knob of :func:`octopi.data.synthetic_run.simulate_run` except shape and seed.

    Lengths in Å unless a name says otherwise; densities in units of protein density (~1).
    """

    tilt_max_degrees: float = 60.0
    tilt_step_degrees: float = 3.0
    crowding: float = 0.2  # fraction of the volume in particle bounding spheres (target)
    distractors_per_megavoxel: float = 20.0
    distractor_radius_angstrom: tuple[float, float] = (20.0, 120.0)
    distractor_amplitude: tuple[float, float] = (0.4, 1.1)
    # "globule" = random soft ellipsoid; class shapes (shell, lobed, ...) make look-alikes
    distractor_shapes: tuple[str, ...] = ("globule",)
    # per projection pixel, in std of the noise-free tilt series before the CTF (no gold, ice)
    noise_sigma: float = 1.0
    membranes: int = 1  # lipid vesicles (particles avoid them)
    membrane_amplitude: float = 0.7
    gold_beads_per_megavoxel: float = 0.0
    gold_radius_angstrom: float = 50.0
    gold_amplitude: float = 8.0
    ice_gradient: float = 0.0  # peak-to-peak of a smooth background ramp
    defocus_range_um: tuple[float, float] | None = None  # None: no CTF
    voltage_kv: float = 300.0
    spherical_aberration_mm: float = 2.7
    amplitude_contrast: float = 0.07
    b_factor_angstrom2: float = 100.0
    phase_flip: bool = False

    def to_dict(self) -> dict:
        return {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()}


PRESETS: dict[str, SimulationSettings] = {
    "default": SimulationSettings(),
    "hard": SimulationSettings(
        crowding=0.25,
        distractors_per_megavoxel=25.0,
        distractor_radius_angstrom=(45.0, 150.0),
        distractor_amplitude=(0.6, 1.1),
        distractor_shapes=("globule", "shell", "lobed", "elongated", "dimer"),
        noise_sigma=0.5,  # of the pre-CTF projection std: CTF and noise give lower SNR
        membranes=3,
        membrane_amplitude=1.0,
        gold_beads_per_megavoxel=3.0,
        ice_gradient=1.0,
        defocus_range_um=(2.0, 4.0),
    ),
}
PRESET_NAMES = tuple(PRESETS)


def preset_settings(name: str, **overrides) -> SimulationSettings:
    """The settings of preset ``name`` with ``overrides`` (field=value) applied.

    Raises ValueError for an unknown preset or field.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESET_NAMES)}")
    known = {f.name for f in fields(SimulationSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown simulation settings {unknown}; known: {sorted(known)}")
    return replace(PRESETS[name], **overrides)
