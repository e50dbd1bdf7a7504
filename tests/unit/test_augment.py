"""Unit tests for the augmentation of training crops (octopi.data.patches.augment_batch)."""

from __future__ import annotations

import numpy as np

from octopi.config import AugmentationConfig
from octopi.data.patches import augment_batch

NO_AUGMENTATION = AugmentationConfig(
    flip_probability=0.0, rotate90_probability=0.0, intensity_scale=0.0, intensity_shift=0.0
)
SPATIAL_ONLY = AugmentationConfig(
    flip_probability=0.5, rotate90_probability=0.5, intensity_scale=0.0, intensity_shift=0.0
)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_augmentation_keeps_labels_aligned_with_images_and_counts():
    images = np.random.default_rng(0).standard_normal((32, 1, 12, 12, 12), dtype=np.float32)
    labels = np.digitize(images[:, 0], [-1.0, 0.0, 1.0]).astype(np.int64)  # derived from image
    out_images, out_labels = augment_batch(images, labels, SPATIAL_ONLY, np.random.default_rng(1))
    assert out_labels.dtype == np.int64 and out_images.dtype == np.float32
    np.testing.assert_array_equal(out_labels, np.digitize(out_images[:, 0], [-1.0, 0.0, 1.0]))
    for before, after in zip(labels, out_labels, strict=True):
        np.testing.assert_array_equal(np.bincount(before.ravel()), np.bincount(after.ravel()))
    assert not np.array_equal(out_images, images)  # something was flipped or rotated
    # Labels may carry a channel axis too.
    _, with_channel = augment_batch(images, labels[:, None], SPATIAL_ONLY, np.random.default_rng(1))
    np.testing.assert_array_equal(with_channel[:, 0], out_labels)


def test_flips_and_rotations_never_move_z_into_xy():
    z = np.arange(10, dtype=np.float32)[:, None, None]
    images = np.broadcast_to(z, (64, 1, 10, 10, 10)).copy()  # value = z index
    always = AugmentationConfig(flip_probability=0.5, rotate90_probability=1.0)
    out, _ = augment_batch(images, np.zeros((64, 10, 10, 10), np.uint8), always, rng(8))
    for crop in out[:, 0]:
        per_slice = crop.reshape(10, -1)
        assert np.allclose(per_slice, per_slice[:, :1], atol=1e-5)  # each Z slice is constant
        profile = per_slice[:, 0]
        assert np.all(np.diff(profile) > 0) or np.all(np.diff(profile) < 0)


def test_rotations_turn_the_xy_plane():
    images = np.random.default_rng(0).standard_normal((16, 1, 6, 6, 6), dtype=np.float32)
    rotate = AugmentationConfig(
        flip_probability=0.0, rotate90_probability=1.0, intensity_scale=0.0, intensity_shift=0.0
    )
    out, _ = augment_batch(images, np.zeros((16, 6, 6, 6), np.int64), rotate, rng(9))
    for before, after in zip(images[:, 0], out[:, 0], strict=True):
        k = [k for k in (1, 2, 3) if np.array_equal(np.rot90(before, k, axes=(1, 2)), after)]
        assert len(k) == 1


def test_intensity_changes_stay_within_settings_and_spare_labels():
    images = np.random.default_rng(0).standard_normal((20, 1, 8, 8, 8), dtype=np.float32)
    labels = np.random.default_rng(1).integers(0, 3, (20, 8, 8, 8))
    settings = AugmentationConfig(
        flip_probability=0.0, rotate90_probability=0.0, intensity_scale=0.2, intensity_shift=0.3
    )
    out, out_labels = augment_batch(images, labels, settings, rng(10))
    np.testing.assert_array_equal(out_labels, labels)
    for before, after in zip(images, out, strict=True):
        scale, shift = np.polyfit(before.ravel(), after.ravel(), 1)
        assert 0.8 - 1e-4 <= scale <= 1.2 + 1e-4 and abs(shift) <= 0.3 + 1e-4


def test_gaussian_noise_is_added_to_images_only():
    images = np.zeros((8, 1, 8, 8, 8), dtype=np.float32)
    noisy = NO_AUGMENTATION.model_copy(update={"gaussian_noise_std": 0.5})
    out, _ = augment_batch(images, np.zeros((8, 8, 8, 8), np.uint8), noisy, rng(11))
    stds = out.std(axis=(1, 2, 3, 4))
    assert stds.max() > 0.05 and stds.max() < 0.6
