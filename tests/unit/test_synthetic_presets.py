"""Presets of the synthetic simulator, the CTF, and the default preset's frozen output."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from octopi.config import SynthesizeConfig
from octopi.data.ctf import CtfParameters, apply_ctf, ctf_1d, electron_wavelength_angstrom
from octopi.data.synthetic_presets import PRESET_NAMES, PRESETS, preset_settings
from octopi.data.synthetic_run import simulate_run

# Computed with the generator as it was before presets existed (commit b36ea90):
# simulate_run((32, 48, 48), 10.0, seed=7).
_REFERENCE_INDICES = [62714, 46961, 37685, 19890, 22695, 3020, 5547, 1218, 12922, 59960, 47880]
_REFERENCE_WBP = [
    1.154218, -0.421366, -1.11669, 1.380458, 0.184275, 2.817008,
    0.592327, -0.484507, -0.218564, 1.13196, -0.094543,
]  # fmt: skip
_REFERENCE_DENOISED = [
    0.145842, 0.410442, -0.563373, 0.859011, -0.106878, 2.265809,
    -0.587433, -0.232396, 0.594097, -0.616122, 0.124177,
]  # fmt: skip
_REFERENCE_ABS_SUMS = (58814.68844152162, 57871.3442020792)
_REFERENCE_CENTRES = {
    "apo-ferritin": [[27.646528, 26.188151, 41.433763]],
    "beta-amylase": [[24.604687, 5.02221, 23.196389]],
    "beta-galactosidase": [[15.797695, 38.915406, 41.381838], [10.803939, 6.050624, 12.834264]],
    "ribosome": [[9.827359, 13.658832, 37.192982]],
    "thyroglobulin": [],
    "virus-like-particle": [[23.43373, 36.437605, 10.580964]],
}


@pytest.mark.parametrize("preset", [None, "default"])
def test_default_preset_reproduces_the_original_generator(preset) -> None:
    kwargs = {} if preset is None else {"preset": preset}
    run = simulate_run((32, 48, 48), 10.0, seed=7, **kwargs)
    for name, expected in _REFERENCE_CENTRES.items():
        centres = run.centers_voxel[name].reshape(-1, 3)
        np.testing.assert_allclose(centres, np.reshape(expected, (-1, 3)), atol=1e-5)
    np.testing.assert_allclose(run.wbp.ravel()[_REFERENCE_INDICES], _REFERENCE_WBP, atol=1e-4)
    np.testing.assert_allclose(
        run.denoised.ravel()[_REFERENCE_INDICES], _REFERENCE_DENOISED, atol=1e-4
    )
    sums = (float(np.abs(run.wbp).sum(dtype=np.float64)), float(np.abs(run.denoised).sum()))
    assert sums == pytest.approx(_REFERENCE_ABS_SUMS, rel=1e-5)


def test_preset_names_agree_with_the_config() -> None:
    literal = typing.get_args(SynthesizeConfig.model_fields["preset"].annotation)
    assert tuple(literal) == PRESET_NAMES == ("default", "hard")
    assert SynthesizeConfig(output="x").preset == "default"


def test_unknown_preset_or_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown preset 'nasty'; choose from default, hard"):
        preset_settings("nasty")
    with pytest.raises(ValueError, match="unknown simulation settings"):
        simulate_run((16, 24, 24), 10.0, seed=0, noise_level=2.0)


def _wavelength_angstrom(voltage_volt: float) -> float:
    """de Broglie wavelength with the relativistic correction, from SI constants."""
    h, m, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299_792_458.0
    momentum = np.sqrt(2 * m * e * voltage_volt * (1 + e * voltage_volt / (2 * m * c * c)))
    return h / momentum * 1e10


@pytest.mark.parametrize("defocus_um", [2.0, 3.0, 4.0])
def test_ctf_zeros_lie_where_the_formula_puts_them(defocus_um: float) -> None:
    assert electron_wavelength_angstrom(300.0) == pytest.approx(_wavelength_angstrom(3e5), 1e-6)
    assert _wavelength_angstrom(3e5) == pytest.approx(0.019687, abs=2e-6)  # textbook value
    params = CtfParameters(defocus_angstrom=defocus_um * 1e4, b_factor_angstrom2=0.0)
    wavelength = _wavelength_angstrom(3e5)
    cs = params.spherical_aberration_mm * 1e7
    phase_shift = np.arctan2(params.amplitude_contrast, np.sqrt(1 - params.amplitude_contrast**2))
    for n in (1, 2, 3):
        # chi(k) = n*pi - phase_shift, a quadratic in k^2: a k^4 - b k^2 + c = 0 (smaller root)
        a = 0.5 * np.pi * cs * wavelength**3
        b = np.pi * wavelength * params.defocus_angstrom
        c = n * np.pi - phase_shift
        k_zero = np.sqrt((b - np.sqrt(b * b - 4 * a * c)) / (2 * a))
        below, at, above = ctf_1d(np.array([0.995, 1.0, 1.005]) * k_zero, params)
        assert abs(at) < 1e-6
        assert np.sign(below) == -np.sign(above) != 0
    flipped = CtfParameters(defocus_angstrom=3e4, phase_flip=True)
    assert np.all(ctf_1d(np.linspace(0, 0.05, 500), flipped) >= 0)
    assert ctf_1d(np.zeros(1), params)[0] == pytest.approx(params.amplitude_contrast)


def test_apply_ctf_filters_each_projection_by_the_radial_ctf() -> None:
    projections = np.zeros((2, 64, 48), dtype=np.float32)
    projections[:, 0, 0] = 1.0  # a delta: its spectrum is flat, so the result is the CTF itself
    params = CtfParameters(defocus_angstrom=2.5e4)
    out = apply_ctf(projections, 10.0, params)
    k = np.hypot(np.fft.fftfreq(64, 10.0)[:, None], np.fft.fftfreq(48, 10.0)[None, :])
    np.testing.assert_allclose(np.fft.fft2(out[1]).real, ctf_1d(k, params), atol=1e-5)


def _snr(preset: str) -> float:
    """Signal-to-noise ratio of the WBP: signal = the same run simulated without noise."""
    shape = (32, 80, 80)
    noisy = simulate_run(shape, 10.0, seed=4, preset=preset).wbp.ravel()
    clean = simulate_run(shape, 10.0, seed=4, preset=preset, noise_sigma=0.0).wbp.ravel()
    r = np.corrcoef(noisy, clean)[0, 1]
    return r * r / (1 - r * r)


def test_hard_preset_has_lower_snr_than_default() -> None:
    default, hard = _snr("default"), _snr("hard")
    assert hard < 0.9 * default, (default, hard)


def test_hard_preset_adds_what_default_lacks() -> None:
    default, hard = PRESETS["default"], PRESETS["hard"]
    assert default.defocus_range_um is None and hard.defocus_range_um is not None
    assert hard.gold_beads_per_megavoxel > 0 == default.gold_beads_per_megavoxel
    assert hard.membranes > default.membranes and hard.crowding > default.crowding
    assert len(hard.distractor_shapes) > 1
    run = simulate_run((32, 96, 96), 10.0, seed=1, preset="hard", gold_beads_per_megavoxel=20.0)
    plain = simulate_run((32, 96, 96), 10.0, seed=1, preset="hard")
    assert run.wbp.max() > 1.5 * plain.wbp.max()  # gold beads are far denser than protein


def test_settings_object_and_overrides_match_the_named_preset() -> None:
    by_name = simulate_run((16, 32, 32), 10.0, seed=2, preset="hard", membranes=1)
    by_settings = simulate_run((16, 32, 32), 10.0, seed=2, preset=PRESETS["hard"], membranes=1)
    np.testing.assert_array_equal(by_name.wbp, by_settings.wbp)
    plain = simulate_run((16, 32, 32), 10.0, seed=2, preset="hard")
    assert not np.array_equal(by_name.wbp, plain.wbp)
