"""Contrast transfer function (CTF) of a transmission electron microscope (numpy only).

Weak-phase-object model with amplitude contrast ``A``::

    chi(k) = pi * lambda * defocus * k**2 - pi / 2 * Cs * lambda**3 * k**4
    CTF(k) = (sqrt(1 - A**2) * sin(chi) + A * cos(chi)) * exp(-B * k**2 / 4)

``k`` is the spatial frequency in 1/Å, ``defocus`` is positive for underfocus (Å), ``Cs`` the
spherical aberration (Å) and ``B`` a temperature-factor envelope (Å²). With this sign
convention the CTF is positive at low frequency under underfocus, so positive (bright) density
stays bright up to the first zero. Phase flipping replaces the CTF by its absolute value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_ELECTRON_REST_ENERGY_EV = 510_998.95
_HC_EV_ANGSTROM = 12_398.419843320026  # Planck constant x speed of light


@dataclass(frozen=True)
class CtfParameters:
    """Microscope settings of one tilt series (defocus constant over the tilts)."""

    defocus_angstrom: float  # positive = underfocus
    voltage_kv: float = 300.0
    spherical_aberration_mm: float = 2.7
    amplitude_contrast: float = 0.07
    b_factor_angstrom2: float = 100.0
    phase_flip: bool = False


def electron_wavelength_angstrom(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å at an acceleration voltage in kV."""
    energy_ev = voltage_kv * 1e3
    momentum_ev = np.sqrt(energy_ev * (energy_ev + 2.0 * _ELECTRON_REST_ENERGY_EV))
    return float(_HC_EV_ANGSTROM / momentum_ev)


def ctf_1d(frequency_per_angstrom: np.ndarray, params: CtfParameters) -> np.ndarray:
    """CTF at spatial frequencies ``frequency_per_angstrom`` (any shape, 1/Å); float64, same
    shape. Includes the envelope and, with ``params.phase_flip``, the absolute value."""
    k2 = np.asarray(frequency_per_angstrom, dtype=np.float64) ** 2
    wavelength = electron_wavelength_angstrom(params.voltage_kv)
    cs_angstrom = params.spherical_aberration_mm * 1e7
    chi = np.pi * wavelength * params.defocus_angstrom * k2
    chi -= 0.5 * np.pi * cs_angstrom * wavelength**3 * k2 * k2
    a = params.amplitude_contrast
    ctf = np.sqrt(1.0 - a * a) * np.sin(chi) + a * np.cos(chi)
    if params.phase_flip:
        ctf = np.abs(ctf)
    return ctf * np.exp(-0.25 * params.b_factor_angstrom2 * k2)


def apply_ctf(
    projections: np.ndarray, voxel_size_angstrom: float, params: CtfParameters
) -> np.ndarray:
    """Multiply every projection by the CTF in 2D Fourier space.

    ``projections``: ``(n_angles, n_detector, Y)`` in any density units, pixel edge
    ``voxel_size_angstrom``. Returns float32 of the same shape. The defocus is the same for
    the whole image (no defocus gradient across a tilted specimen).
    """
    n_u, n_y = projections.shape[1:]
    k_u = np.fft.fftfreq(n_u, d=voxel_size_angstrom)[:, None]
    k_y = np.fft.rfftfreq(n_y, d=voxel_size_angstrom)[None, :]
    transfer = ctf_1d(np.sqrt(k_u**2 + k_y**2), params).astype(np.float32)
    spectrum = np.fft.rfft2(projections, axes=(1, 2))
    spectrum *= transfer[None]
    return np.fft.irfft2(spectrum, s=(n_u, n_y), axes=(1, 2)).astype(np.float32)
