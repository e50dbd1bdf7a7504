"""Tests for octopi.inference.localize on small synthetic volumes (voxel size 10 Å)."""

from __future__ import annotations

import numpy as np
import pytest

from octopi.config import LocalizeConfig
from octopi.inference import localize as localize_module
from octopi.inference.localize import (
    ClassPicks,
    LocalizeClass,
    class_threshold,
    localize,
    localize_channel,
)

VOXEL_ANGSTROM = 10.0
APO = LocalizeClass("apo-ferritin", 1, 60.0)  # 6 voxels
RIBO = LocalizeClass("ribosome", 2, 100.0)  # 10 voxels


def _distances_voxel(centers: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(K, Z, Y, X) distances in voxels from every voxel to each of K centres."""
    grid = np.indices(shape, dtype=np.float64)
    return np.stack([np.sqrt(((grid - c[:, None, None, None]) ** 2).sum(axis=0)) for c in centers])


def _label_volume(shape, spheres):
    """spheres: list of (label, radius_voxel, centre (3,)) drawn as hard balls."""
    volume = np.zeros(shape, dtype=np.uint8)
    for label, radius, center in spheres:
        volume[_distances_voxel(np.array([center]), shape)[0] <= radius] = label
    return volume


def _probability_volume(shape, spheres, n_channels=3, softness_voxel=1.0, peak=0.95):
    """(C, Z, Y, X) probabilities falling off logistically at each radius; channel 0 the rest."""
    probs = np.zeros((n_channels, *shape), dtype=np.float32)
    for label, radius, center in spheres:
        distance = _distances_voxel(np.array([center]), shape)[0]
        soft = peak / (1.0 + np.exp((distance - radius) / softness_voxel))
        probs[label] = np.maximum(probs[label], soft)
    probs[0] = np.clip(1.0 - probs[1:].sum(axis=0), 0.0, 1.0)
    return probs


def _assert_recovered(picks: ClassPicks, truth: list[np.ndarray], tolerance_voxel=1.0):
    assert len(picks) == len(truth), picks.centers_voxel
    for center in truth:
        nearest = np.linalg.norm(picks.centers_voxel - center, axis=1).min()
        assert nearest <= tolerance_voxel, (center, picks.centers_voxel)


@pytest.mark.parametrize("method", ["peaks", "components"])
def test_label_spheres_recovered_within_one_voxel(method):
    rng = np.random.default_rng(0)
    grid_centres = [(10, 12, 12), (10, 12, 36), (30, 12, 12), (30, 36, 12), (10, 36, 36)]
    # Random sub-voxel offsets: a centre on the grid would hide rounding errors.
    apo = [np.array(c) + rng.uniform(-0.5, 0.5, 3) for c in grid_centres]
    ribo = [np.array([26.3, 40.6, 44.2])]
    spheres = [(1, 6.0, c) for c in apo] + [(2, 10.0, c) for c in ribo]
    volume = _label_volume((40, 56, 56), spheres)
    picks = localize(volume, [APO, RIBO], VOXEL_ANGSTROM, LocalizeConfig(method=method))
    _assert_recovered(picks["apo-ferritin"], apo)
    _assert_recovered(picks["ribosome"], ribo)
    assert picks["ribosome"].centers_voxel.dtype == np.float64
    assert picks["ribosome"].scores.dtype == np.float32


def test_probability_spheres_recovered_with_mean_probability_scores():
    shape = (36, 48, 48)
    spheres = [(1, 6.0, np.array([10.4, 12.7, 30.1])), (2, 10.0, np.array([20.2, 30.6, 14.8]))]
    probs = _probability_volume(shape, spheres)
    picks = localize(probs, [APO, RIBO], VOXEL_ANGSTROM)
    _assert_recovered(picks["apo-ferritin"], [spheres[0][2]], tolerance_voxel=0.5)
    _assert_recovered(picks["ribosome"], [spheres[1][2]], tolerance_voxel=0.5)
    for name in ("apo-ferritin", "ribosome"):
        assert 0.5 <= picks[name].scores[0] <= 0.95


@pytest.mark.parametrize("radius_voxel", [5.0, 8.0, 14.0])
def test_touching_pair_at_1_2_radii_gives_two_picks(radius_voxel):
    rng = np.random.default_rng(int(radius_voxel))
    shape = (int(4 * radius_voxel) + 8,) * 3
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    first = np.array(shape) / 2 - 0.6 * radius_voxel * direction + rng.uniform(-0.5, 0.5, 3)
    second = first + 1.2 * radius_voxel * direction
    cls = LocalizeClass("ribosome", 1, radius_voxel * VOXEL_ANGSTROM)
    volume = _label_volume(shape, [(1, radius_voxel, first), (1, radius_voxel, second)])
    picks = localize(volume, [cls], VOXEL_ANGSTROM)["ribosome"]
    _assert_recovered(picks, [first, second])
    # The same blob as one connected component is one pick by design.
    components = localize(volume, [cls], VOXEL_ANGSTROM, LocalizeConfig(method="components"))
    assert len(components["ribosome"]) == 1


def test_touching_pair_probability_input():
    radius = 8.0
    first, second = np.array([16.3, 16.8, 12.1]), np.array([16.3, 16.8, 12.1 + 1.2 * radius])
    probs = _probability_volume((32, 34, 40), [(1, radius, first), (1, radius, second)], 2)
    cls = LocalizeClass("thyroglobulin", 1, radius * VOXEL_ANGSTROM)
    _assert_recovered(localize(probs, [cls], VOXEL_ANGSTROM)["thyroglobulin"], [first, second])


@pytest.mark.parametrize("method", ["peaks", "components"])
def test_size_filter_drops_specks(method):
    volume = _label_volume((30, 30, 30), [(1, 6.0, np.array([15.2, 14.6, 15.0]))])
    volume[2:4, 2:4, 2:4] = 1  # 8 voxels, ~1% of a 6-voxel sphere
    picks = localize(volume, [APO], VOXEL_ANGSTROM, LocalizeConfig(method=method))
    _assert_recovered(picks["apo-ferritin"], [np.array([15.2, 14.6, 15.0])])
    keep_all = LocalizeConfig(method=method, min_size_fraction=0.0)
    assert len(localize(volume, [APO], VOXEL_ANGSTROM, keep_all)["apo-ferritin"]) == 2


@pytest.mark.parametrize("method", ["peaks", "components"])
def test_max_size_fraction_drops_oversized_regions(method):
    volume = _label_volume((40, 40, 40), [(1, 12.0, np.array([20.0, 20.0, 20.0]))])
    settings = LocalizeConfig(method=method, max_size_fraction=2.0)
    # A 12-voxel ball is 8 times the volume of a 6-voxel apo-ferritin sphere.
    assert len(localize(volume, [APO], VOXEL_ANGSTROM, settings)["apo-ferritin"]) == 0


def test_cavities_inside_a_particle_do_not_split_it():
    center = np.array([16.4, 15.7, 16.2])
    volume = _label_volume((32, 32, 32), [(2, 10.0, center)])
    # Voxels of another class inside the ribosome, as an argmax of a real prediction gives.
    volume[19:22, 14:17, 15:18] = 1
    volume[11, 15, 12] = 1
    volume[16, 20, 16] = 1
    # One ribosome fills 13% of this small crop: lift the whole-tomogram foreground cap.
    crop = LocalizeConfig(max_foreground_fraction=None)
    picks = localize(volume, [RIBO], VOXEL_ANGSTROM, crop)
    _assert_recovered(picks["ribosome"], [center])


def test_per_class_threshold_overrides_default():
    spheres = [(1, 6.0, np.array([12.0, 12.0, 12.0])), (2, 8.0, np.array([12.0, 12.0, 34.0]))]
    probs = _probability_volume((24, 24, 46), spheres, peak=0.45)
    settings = LocalizeConfig(per_class_threshold={"apo-ferritin": 0.3})
    picks = localize(probs, [APO, RIBO], VOXEL_ANGSTROM, settings)
    assert len(picks["apo-ferritin"]) == 1
    assert len(picks["ribosome"]) == 0  # still at the default 0.5, above its 0.45 peak
    assert len(localize(probs, [APO, RIBO], VOXEL_ANGSTROM)["apo-ferritin"]) == 0


def _faint_and_bright_particles() -> tuple[np.ndarray, list[np.ndarray]]:
    """(3, Z, Y, X) float16 probabilities: apo-ferritin particles peaking at 0.9, 0.6, 0.4, 0.25
    and a ribosome at 0.7."""
    centres = [np.array([12.0, 12.0, 12.0 + 18.0 * i]) for i in range(4)]
    probs = np.zeros((3, 24, 30, 84), dtype=np.float32)
    for centre, peak in zip(centres, (0.9, 0.6, 0.4, 0.25), strict=True):
        probs[:2] = np.maximum(
            probs[:2], _probability_volume((24, 30, 84), [(1, 6.0, centre)], 2, peak=peak)
        )
    ribosome = _probability_volume((24, 30, 84), [(2, 8.0, np.array([12.0, 21.0, 40.0]))], peak=0.7)
    probs[2] = ribosome[2]
    probs[0] = np.clip(1.0 - probs[1:].sum(axis=0), 0.0, 1.0)
    return probs.astype(np.float16), centres


def test_a_lower_threshold_never_gives_fewer_picks():
    probs, centres = _faint_and_bright_particles()
    crop = dict(max_foreground_fraction=None)
    counts = [
        len(
            localize(probs, [APO], VOXEL_ANGSTROM, LocalizeConfig(score_threshold=t, **crop))[
                "apo-ferritin"
            ]
        )
        for t in (0.95, 0.8, 0.5, 0.35, 0.2, 0.1)
    ]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 4, counts
    _assert_recovered(
        localize(probs, [APO], VOXEL_ANGSTROM, LocalizeConfig(score_threshold=0.2, **crop))[
            "apo-ferritin"
        ],
        centres,
    )


def test_a_per_class_threshold_changes_only_its_class():
    probs, _ = _faint_and_bright_particles()
    crop = dict(max_foreground_fraction=None)
    plain = localize(probs, [APO, RIBO], VOXEL_ANGSTROM, LocalizeConfig(**crop))
    lowered = localize(
        probs,
        [APO, RIBO],
        VOXEL_ANGSTROM,
        LocalizeConfig(per_class_threshold={"apo-ferritin": 0.2}, **crop),
    )
    assert (len(plain["apo-ferritin"]), len(lowered["apo-ferritin"])) == (2, 4)
    np.testing.assert_array_equal(
        lowered["ribosome"].centers_voxel, plain["ribosome"].centers_voxel
    )
    np.testing.assert_array_equal(lowered["ribosome"].scores, plain["ribosome"].scores)
    assert len(plain["ribosome"]) == 1


def test_one_channel_at_a_time_equals_all_channels():
    probs, _ = _faint_and_bright_particles()
    settings = LocalizeConfig(score_threshold=0.3, max_foreground_fraction=None)
    together = localize(probs, [APO, RIBO], VOXEL_ANGSTROM, settings)
    for cls in (APO, RIBO):
        alone = localize_channel(probs[cls.label], cls, VOXEL_ANGSTROM, settings)
        np.testing.assert_array_equal(alone.centers_voxel, together[cls.name].centers_voxel)
        np.testing.assert_array_equal(alone.scores, together[cls.name].scores)
    assert class_threshold("ribosome", LocalizeConfig(per_class_threshold={"ribosome": 0.2})) == 0.2
    assert (
        class_threshold("apo-ferritin", LocalizeConfig(per_class_threshold={"ribosome": 0.2}))
        == 0.5
    )
    with pytest.raises(ValueError, match="float array"):
        localize_channel(np.zeros((8, 8, 8), np.uint8), APO, VOXEL_ANGSTROM)


def test_min_separation_keeps_only_one_of_close_picks():
    centres = [np.array([15.0, 15.0, 10.0]), np.array([15.0, 15.0, 26.0])]
    volume = _label_volume((30, 30, 36), [(1, 6.0, c) for c in centres])
    assert len(localize(volume, [APO], VOXEL_ANGSTROM)["apo-ferritin"]) == 2
    far = LocalizeConfig(min_separation_fraction=3.0)  # 18 voxels > 16 apart
    assert len(localize(volume, [APO], VOXEL_ANGSTROM, far)["apo-ferritin"]) == 1


def test_giant_components_are_skipped_by_the_peaks_method():
    volume = np.ones((20, 40, 40), np.uint8)  # 32000 voxels, ~35 apo-ferritin spheres
    no_cap = LocalizeConfig(max_foreground_fraction=None)  # test the component bound alone
    assert len(localize(volume, [APO], VOXEL_ANGSTROM, no_cap)["apo-ferritin"]) == 0
    unlimited = LocalizeConfig(max_component_fraction=None, max_foreground_fraction=None)
    assert len(localize(volume, [APO], VOXEL_ANGSTROM, unlimited)["apo-ferritin"]) > 0


def test_foreground_cap_warns_and_gives_no_picks():
    volume = _label_volume((30, 30, 30), [(1, 6.0, np.array([15.0, 15.0, 15.0]))])  # 3.4 %
    capped = LocalizeConfig(max_foreground_fraction=0.02)
    with pytest.warns(RuntimeWarning, match="apo-ferritin"):
        picks = localize(volume, [APO, RIBO], VOXEL_ANGSTROM, capped)
    assert picks["apo-ferritin"].centers_voxel.shape == (0, 3)
    relaxed = LocalizeConfig(max_foreground_fraction=0.05)
    assert len(localize(volume, [APO], VOXEL_ANGSTROM, relaxed)["apo-ferritin"]) == 1


@pytest.mark.parametrize("method", ["peaks", "components"])
def test_sparse_and_dense_label_paths_agree(method, monkeypatch):
    rng = np.random.default_rng(5)
    spheres = [(1 + i % 2, 6.0 + 3 * (i % 2), rng.uniform(8, 40, 3)) for i in range(6)]
    volume = _label_volume((48, 48, 48), spheres)
    settings = LocalizeConfig(method=method)
    results = []
    for fraction in (0.0, 1.0):  # every volume dense, every volume sparse
        monkeypatch.setattr(localize_module, "_SPARSE_FOREGROUND_FRACTION", fraction)
        results.append(localize(volume, [APO, RIBO], VOXEL_ANGSTROM, settings))
    for name in ("apo-ferritin", "ribosome"):
        assert len(results[0][name]) > 0
        np.testing.assert_array_equal(
            results[0][name].centers_voxel, results[1][name].centers_voxel
        )
        np.testing.assert_array_equal(results[0][name].scores, results[1][name].scores)


def test_labels_outside_the_class_list_are_ignored():
    volume = _label_volume((30, 30, 30), [(7, 6.0, np.array([15.0, 15.0, 15.0]))])
    assert len(localize(volume, [APO], VOXEL_ANGSTROM)["apo-ferritin"]) == 0


def test_empty_segmentation_gives_empty_arrays_for_every_class():
    for volume in (np.zeros((8, 9, 10), np.int16), np.zeros((3, 8, 9, 10), np.float32)):
        picks = localize(volume, [APO, RIBO], VOXEL_ANGSTROM)
        assert set(picks) == {"apo-ferritin", "ribosome"}
        for p in picks.values():
            assert p.centers_voxel.shape == (0, 3) and p.centers_voxel.dtype == np.float64
            assert p.scores.shape == (0,) and p.scores.dtype == np.float32


@pytest.mark.parametrize(
    ("volume", "classes", "message"),
    [
        (np.zeros((8, 8), np.uint8), [APO], "shape"),
        (np.zeros((1, 2, 8, 8, 8), np.float32), [APO], "shape"),
        (np.zeros((8, 8, 8), np.float32), [APO], "integer labels"),
        (np.zeros((2, 8, 8, 8), np.int64), [APO], "float probabilities"),
        (np.zeros((2, 8, 8, 8), np.float32), [APO, RIBO], "out of range"),
        (np.zeros((8, 8, 8), np.uint8), [], "classes is empty"),
        (np.zeros((8, 8, 8), np.uint8), [LocalizeClass("x", 0, 60.0)], ">= 1"),
        (np.zeros((8, 8, 8), np.uint8), [LocalizeClass("x", 1, 0.0)], "radius"),
        (np.zeros((8, 8, 8), np.uint8), [APO, LocalizeClass(APO.name, 2, 1.0)], "unique"),
    ],
)
def test_bad_input_raises(volume, classes, message):
    with pytest.raises(ValueError, match=message):
        localize(volume, classes, VOXEL_ANGSTROM)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="method"):
        LocalizeConfig(method="blobs")
    with pytest.raises(ValueError, match="greater than 0"):
        LocalizeConfig(score_threshold=0.0)
    with pytest.raises(ValueError, match="unknown classes"):
        localize(
            np.zeros((2, 8, 8, 8), np.float32),
            [APO],
            VOXEL_ANGSTROM,
            LocalizeConfig(per_class_threshold={"ribosome": 0.2}),
        )
    with pytest.raises(ValueError, match="voxel_size"):
        localize(np.zeros((8, 8, 8), np.uint8), [APO], 0.0)


def test_argmax_labels_slab_by_slab_equal_numpy_s_argmax():
    """A few z-slices at a time (here 1 and 3 slices, and the whole volume; 7 slices do not
    divide evenly): the labels of ``np.argmax`` over the channels, as uint8."""
    from octopi.inference.localize import argmax_labels

    rng = np.random.default_rng(0)
    probabilities = rng.random((5, 7, 6, 4)).astype(np.float16)
    expected = np.argmax(probabilities, axis=0).astype(np.uint8)
    for slab_voxels in (1, 3 * 6 * 4, 1 << 22):
        labels = argmax_labels(probabilities, slab_voxels)
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, expected)
