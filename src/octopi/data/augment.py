"""Random augmentation of training crops, missing-wedge aware.

A tomogram's missing wedge lies along Z, so every spatial transform here keeps Z on its own
axis: flips along Z, Y or X, and 90° rotations in the XY plane only. Intensity changes
(scale, shift, Gaussian noise) apply to images, never to labels.

Augmentation is split into a *plan* (all random numbers of a batch, drawn up front from one
generator) and its *application* per crop. :class:`octopi.data.patches.CropLoader` applies
the same plan while cutting crops out of the tomogram, so it copies each crop once instead of
twice, and gives bit-for-bit the result of :func:`augment_batch` on :func:`sample_crops`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from octopi.config import AugmentationConfig


@dataclass(frozen=True)
class AugmentationPlan:
    """The random draws for ``n`` crops.

    ``flips`` (n, 3) bool per (Z, Y, X) axis; ``rot90_k`` (n,) quarter turns in the XY plane
    (0 = none); ``scale`` and ``shift`` (n,) float32, image → image × scale + shift (shift in
    std units of the normalised tomogram); ``noise_std`` (n,) float32 (0 = no noise) and
    ``noise_seed`` (n,) seeds of each crop's noise generator.
    """

    flips: np.ndarray
    rot90_k: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    noise_std: np.ndarray
    noise_seed: np.ndarray

    def __len__(self) -> int:
        return len(self.rot90_k)

    def transform(self, crop: np.ndarray, index: int) -> np.ndarray:
        """Flipped / XY-rotated *view* of one (Z, Y, X) crop (no copy)."""
        axes = tuple(int(axis) for axis in np.flatnonzero(self.flips[index]))
        view = np.flip(crop, axis=axes) if axes else crop
        k = int(self.rot90_k[index])
        return np.rot90(view, k, axes=(1, 2)) if k else view

    def write_image(self, crop: np.ndarray, index: int, out: np.ndarray) -> None:
        """Write augmented crop ``index`` (Z, Y, X) float32 into ``out`` (same shape)."""
        np.multiply(self.transform(crop, index), self.scale[index], out=out)
        out += self.shift[index]
        std = float(self.noise_std[index])
        if std > 0.0:
            noise = np.random.default_rng(int(self.noise_seed[index])).standard_normal(
                out.shape, dtype=np.float32
            )
            noise *= np.float32(std)
            out += noise

    def write_labels(self, crop: np.ndarray, index: int, out: np.ndarray) -> None:
        """Write crop ``index``'s (Z, Y, X) labels, transformed like its image, into ``out``."""
        out[...] = self.transform(crop, index)


def plan_augmentation(
    n_crops: int, settings: AugmentationConfig, rng: np.random.Generator
) -> AugmentationPlan:
    """Draw the augmentation of ``n_crops`` crops, each independent of the others.

    Every draw happens whatever the settings, so a generator is consumed the same way for any
    configuration. Noise std per crop is uniform in [0, ``gaussian_noise_std``] (as MONAI's
    ``RandGaussianNoise`` with ``sample_std``).
    """
    flips = rng.random((n_crops, 3)) < settings.flip_probability
    rotate = rng.random(n_crops) < settings.rotate90_probability
    rot90_k = np.where(rotate, rng.integers(1, 4, size=n_crops), 0)
    scale = 1.0 + rng.uniform(-1.0, 1.0, size=n_crops) * settings.intensity_scale
    shift = rng.uniform(-1.0, 1.0, size=n_crops) * settings.intensity_shift
    noise_std = rng.uniform(0.0, 1.0, size=n_crops) * settings.gaussian_noise_std
    noise_seed = rng.integers(0, 2**63, size=n_crops)
    return AugmentationPlan(
        flips=flips,
        rot90_k=rot90_k.astype(np.int64),
        scale=scale.astype(np.float32),
        shift=shift.astype(np.float32),
        noise_std=noise_std.astype(np.float32),
        noise_seed=noise_seed,
    )


def check_rotatable(shape_zyx: tuple[int, ...], settings: AugmentationConfig) -> None:
    """Raise if XY rotations are asked for on crops that are not square in XY."""
    if settings.rotate90_probability > 0 and shape_zyx[-1] != shape_zyx[-2]:
        raise ValueError(
            f"90° XY rotations need crops with as many Y as X voxels, got (Z, Y, X) crops of "
            f"shape {tuple(shape_zyx)}; use cubic crops or set rotate90_probability to 0"
        )


def augment_batch(
    images: np.ndarray,
    labels: np.ndarray,
    settings: AugmentationConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment each crop of a batch independently; returns new arrays.

    ``images`` (n, 1, D, H, W) float32; ``labels`` (n, D, H, W) or (n, 1, D, H, W), any integer
    dtype (kept). Per crop: flips along Z, Y and X (each with ``flip_probability``), a rotation
    by 90°, 180° or 270° in the XY plane (``rotate90_probability``), then on the image only
    ``× (1 + u·intensity_scale) + v·intensity_shift`` (u, v uniform in [-1, 1]) and Gaussian
    noise. Labels move with their image voxel for voxel; Z never turns into Y or X.
    """
    if images.ndim != 5 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (n, 1, D, H, W), got {images.shape}")
    label_shape = labels.shape if labels.ndim == 4 else labels.shape[:1] + labels.shape[2:]
    if labels.ndim not in (4, 5) or label_shape != images.shape[:1] + images.shape[2:]:
        raise ValueError(
            f"labels of shape {labels.shape} do not match images of shape {images.shape}; "
            "expected (n, D, H, W) or (n, 1, D, H, W)"
        )
    check_rotatable(images.shape[2:], settings)
    plan = plan_augmentation(len(images), settings, rng)
    out_images = np.empty(images.shape, dtype=np.float32)
    out_labels = np.empty_like(labels)
    for index in range(len(images)):
        plan.write_image(images[index, 0], index, out_images[index, 0])
        source = labels[index] if labels.ndim == 4 else labels[index, 0]
        target = out_labels[index] if labels.ndim == 4 else out_labels[index, 0]
        plan.write_labels(source, index, target)
    return out_images, out_labels
