"""Unit tests for the training data pipeline (octopi.data.patches, cache, loader);
augmentation is in test_augment.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from octopi.config import AugmentationConfig, NormalisationConfig
from octopi.data.copick_io import CopickDataError, CopickProjects
from octopi.data.patches import (
    CropLoader,
    SampleKey,
    TomogramCache,
    TrainingSample,
    augment_batch,
    background_crop_count,
    build_foreground_index,
    load_sample,
    sample_crops,
    step_generators,
)


def make_sample(
    shape: tuple[int, int, int] = (24, 40, 40),
    balls: list[tuple[int, tuple[int, int, int], int]] | None = None,
    name: str = "run",
    seed: int = 0,
) -> TrainingSample:
    """A random volume with labelled balls given as (label, (z, y, x) centre, radius)."""
    volume = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    grid = np.indices(shape)
    for label, centre, radius in balls if balls is not None else [(1, (12, 20, 20), 3)]:
        dist2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        labels[dist2 <= radius**2] = label
    return TrainingSample(SampleKey(name, "wbp"), volume, labels)


def crop_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("octopi-")]


class CountingLoader:
    """Sample loader that counts reads and remembers which thread read each key."""

    def __init__(self, fail_on: set[str] | None = None):
        self.reads: list[tuple[SampleKey, str]] = []
        self.fail_on = fail_on or set()

    def __call__(self, key: SampleKey) -> TrainingSample:
        if key.run_key in self.fail_on:
            raise OSError(f"cannot read {key.run_key}")
        self.reads.append((key, threading.current_thread().name))
        seed = int(key.run_key.removeprefix("run"))
        return make_sample(
            shape=(16, 24, 24), balls=[(1, (8, 12, 12), 2)], name=key.run_key, seed=seed
        )


def keys(n: int) -> list[SampleKey]:
    return [SampleKey(f"run{i}", "wbp") for i in range(n)]


# --------------------------------------------------------------------------- samples and crops


def test_training_sample_checks_shapes_and_indexes_foreground():
    sample = make_sample(balls=[(1, (5, 5, 5), 1), (3, (12, 30, 30), 2)])
    assert set(sample.foreground_voxels) == {1, 3}
    for label, coords in sample.foreground_voxels.items():
        assert coords.dtype == np.int32 and coords.shape[1] == 3
        assert np.all(sample.labels[tuple(coords.T)] == label)
        assert len(coords) == np.count_nonzero(sample.labels == label)
    with pytest.raises(ValueError, match=r"\(24, 40, 40\).*\(24, 40, 41\)"):
        TrainingSample(SampleKey("r", "wbp"), sample.volume, np.zeros((24, 40, 41), np.uint8))


def test_foreground_index_is_capped_and_deterministic():
    labels = np.ones((10, 20, 20), dtype=np.uint8)
    first = build_foreground_index(labels, max_voxels_per_class=500)
    assert first[1].shape == (500, 3)
    np.testing.assert_array_equal(first[1], build_foreground_index(labels, 500)[1])
    assert len(np.unique(first[1][:, 0])) == 10  # spread over the volume, not the first rows


def test_sample_crops_shapes_and_dtypes():
    images, labels = sample_crops(make_sample(), 5, 16, 0.5, np.random.default_rng(0))
    assert images.shape == (5, 1, 16, 16, 16) and images.dtype == np.float32
    assert labels.shape == (5, 16, 16, 16) and labels.dtype == np.int64


def test_foreground_crops_contain_labelled_voxels():
    sample = make_sample(shape=(30, 80, 80), balls=[(2, (3, 75, 4), 1)])  # near a corner
    _, labels = sample_crops(sample, 40, 16, 0.0, np.random.default_rng(1))
    assert all((crop == 2).any() for crop in labels)


@pytest.mark.parametrize(("ratio", "expected"), [(0.0, 0), (1.0, 8), (0.5, 5), (3.0, 12)])
def test_background_crop_count_follows_published_flag(ratio, expected):
    assert background_crop_count(16, ratio) == expected


def test_background_ratio_sets_share_of_random_crops():
    # One labelled voxel in a large volume: random crops almost never contain it.
    sample = make_sample(shape=(64, 128, 128), balls=[(1, (32, 64, 64), 0)])
    rng = np.random.default_rng(2)
    hits = [(sample_crops(sample, 20, 8, 1.0, rng)[1] > 0).any(axis=(1, 2, 3)) for _ in range(5)]
    assert 50 <= int(np.sum(hits)) <= 52  # 50 foreground crops, plus rare lucky random ones


def test_rare_class_is_sampled_as_often_as_a_common_one():
    sample = make_sample(shape=(40, 96, 96), balls=[(1, (20, 30, 30), 12), (2, (20, 80, 80), 1)])
    _, labels = sample_crops(sample, 400, 12, 0.0, np.random.default_rng(3))
    with_rare = int((labels == 2).any(axis=(1, 2, 3)).sum())
    assert 150 <= with_rare <= 250  # ≈ half, although class 2 has 7 voxels against 7000


def test_small_volumes_are_padded_with_zero_image_and_background_label():
    sample = make_sample(shape=(10, 20, 30), balls=[(1, (5, 10, 15), 3)])
    images, labels = sample_crops(sample, 6, 32, 1.0, np.random.default_rng(4))
    assert images.shape == (6, 1, 32, 32, 32)
    for image, label in zip(images[:, 0], labels, strict=True):
        # The crop is larger than the volume on every axis: it holds all of it, padded.
        assert np.count_nonzero(label) == np.count_nonzero(sample.labels)
        assert np.isclose(image.sum(), sample.volume.sum(), atol=1e-2)
        assert np.count_nonzero(image) == sample.volume.size


def test_sample_without_labels_falls_back_to_random_crops():
    sample = make_sample(balls=[])
    assert sample.foreground_voxels == {}
    images, labels = sample_crops(sample, 4, 16, 0.0, np.random.default_rng(5))
    assert images.shape == (4, 1, 16, 16, 16) and not labels.any()


def test_sample_crops_is_deterministic_given_the_generator():
    sample = make_sample()
    first = sample_crops(sample, 4, 16, 0.3, np.random.default_rng(7))
    second = sample_crops(sample, 4, 16, 0.3, np.random.default_rng(7))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


# --------------------------------------------------------------------------- cache


def test_cache_with_all_samples_reads_each_once_without_background_thread():
    loader = CountingLoader()
    with TomogramCache(keys(3), loader, capacity=5, seed=0) as cache:
        for epoch in range(4):
            assert {s.key for s in cache.samples_for_epoch(epoch)} == set(keys(3))
        assert cache.load_count == 3 and len(loader.reads) == 3
        assert crop_threads() == []


def test_cache_window_is_capped_replaced_deterministically_and_covers_all():
    loader = CountingLoader()
    with TomogramCache(keys(10), loader, capacity=4, seed=3, replace_fraction=0.5) as cache:
        assert cache.replace_count == 2
        seen: set[SampleKey] = set()
        previous: set[SampleKey] | None = None
        for epoch in range(5):
            current = {s.key for s in cache.samples_for_epoch(epoch)}
            assert len(current) == 4 and len(cache.cached_keys) == 4
            assert current == set(cache.keys_for_epoch(epoch))
            if previous is not None:
                assert len(current - previous) == 2  # exactly replace_count new ones
            previous = current
            seen |= current
        assert seen == set(keys(10))  # ceil(10 / 2) = 5 epochs visit every sample
        # 4 first + 2 per later epoch were needed; the replacements came from the background.
        assert 4 + 2 * 4 <= cache.load_count <= 4 + 2 * 5
        assert any(name.startswith("octopi-cache") for _, name in loader.reads)
    assert crop_threads() == []


def test_cache_replaces_at_least_one_and_never_more_than_the_spare_samples():
    assert (
        TomogramCache(keys(10), CountingLoader(), 4, seed=0, replace_fraction=0.1).replace_count
        == 1
    )
    assert (
        TomogramCache(keys(5), CountingLoader(), 4, seed=0, replace_fraction=1.0).replace_count == 1
    )


def test_cache_epoch_content_is_the_same_in_a_fresh_cache():
    with TomogramCache(keys(7), CountingLoader(), capacity=3, seed=11) as running:
        history = [[s.key for s in running.samples_for_epoch(e)] for e in range(6)]
    fresh_loader = CountingLoader()
    with TomogramCache(keys(7), fresh_loader, capacity=3, seed=11) as fresh:
        assert [s.key for s in fresh.samples_for_epoch(5)] == history[5]
        assert [s.key for s in fresh.samples_for_epoch(2)] == history[2]  # out of order works
    with TomogramCache(keys(7)[::-1], CountingLoader(), capacity=3, seed=11) as reordered:
        assert [reordered.keys_for_epoch(e) for e in range(6)] == history
    with TomogramCache(keys(7), CountingLoader(), capacity=3, seed=12) as other:
        assert [other.keys_for_epoch(e) for e in range(6)] != history


def test_cache_reraises_a_background_read_error_in_the_next_epoch():
    loader = CountingLoader()
    with TomogramCache(keys(10), loader, capacity=9, seed=0) as cache:
        order = cache.keys_for_epoch(0)
        entering = cache.keys_for_epoch(1)[-1]
        loader.fail_on = {entering.run_key}
        assert entering not in order
        cache.samples_for_epoch(0)
        with pytest.raises(OSError, match=f"cannot read {entering.run_key}"):
            cache.samples_for_epoch(1)


def test_cache_close_stops_its_thread_and_refuses_further_use():
    cache = TomogramCache(keys(6), CountingLoader(), capacity=2, seed=0)
    cache.samples_for_epoch(0)
    cache.close()
    assert crop_threads() == []
    with pytest.raises(RuntimeError, match="closed"):
        cache.samples_for_epoch(1)


# --------------------------------------------------------------------------- loader


def make_loader(cache: TomogramCache, **kwargs) -> CropLoader:
    settings = dict(batch_size=3, crop_size=12, background_ratio=0.5, seed=5, pin_memory=False)
    settings.update(kwargs)
    return CropLoader(cache, augmentation=AugmentationConfig(), **settings)


def batches(loader: CropLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader.epoch(epoch))


def test_loader_yields_steps_per_epoch_batches_of_the_right_shape():
    with TomogramCache(keys(5), CountingLoader(), capacity=3, seed=0) as cache:
        loader = make_loader(cache)
        assert loader.steps_per_epoch(0) == 3
        result = batches(loader, 0)
        assert len(result) == 3
        for images, labels in result:
            assert images.shape == (3, 1, 12, 12, 12) and images.dtype == torch.float32
            assert labels.shape == (3, 1, 12, 12, 12) and labels.dtype == torch.int64
    assert crop_threads() == []


def test_loader_batches_depend_only_on_seed_and_epoch():
    with TomogramCache(keys(5), CountingLoader(), capacity=3, seed=0) as cache:
        loader = make_loader(cache)
        ran = [batches(loader, e) for e in range(3)]
    with TomogramCache(keys(5), CountingLoader(), capacity=3, seed=0) as cache:
        resumed = batches(make_loader(cache, num_workers=2), 2)  # fresh process at epoch 2
        inline = batches(make_loader(cache, num_workers=0), 2)
    for (a_img, a_lab), (b_img, b_lab), (c_img, c_lab) in zip(ran[2], resumed, inline, strict=True):
        assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
        assert torch.equal(a_img, c_img) and torch.equal(a_lab, c_lab)
    assert not torch.equal(ran[0][0][0], ran[1][0][0])


def test_loader_batch_equals_sample_crops_then_augment_batch():
    sample = make_sample()
    with TomogramCache([sample.key], lambda key: sample, capacity=1, seed=0) as cache:
        loader = make_loader(cache, batch_size=4, crop_size=16)
        images, labels = loader.build_batch(sample, epoch=3, step=0)
    crop_rng, augment_rng = step_generators(5, 3, 0)
    crops = sample_crops(sample, 4, 16, 0.5, crop_rng)
    expected_images, expected_labels = augment_batch(*crops, AugmentationConfig(), augment_rng)
    np.testing.assert_array_equal(images.numpy(), expected_images)
    np.testing.assert_array_equal(labels.numpy()[:, 0], expected_labels)


class FailingLoader(CropLoader):
    def build_batch(self, sample, epoch, step):
        if step == 1:
            raise ArithmeticError("bad crop in step 1")
        return super().build_batch(sample, epoch, step)


def test_loader_reraises_worker_errors_and_stops_its_threads():
    with TomogramCache(keys(4), CountingLoader(), capacity=4, seed=0) as cache:
        loader = FailingLoader(cache, 2, 8, 0.0, AugmentationConfig(), seed=0, pin_memory=False)
        received = []
        with pytest.raises(ArithmeticError, match="bad crop in step 1"):
            for batch in loader.epoch(0):
                received.append(batch)
        assert len(received) == 1
        assert crop_threads() == []


def test_loader_leaves_no_thread_after_break_or_close():
    with TomogramCache(keys(4), CountingLoader(), capacity=4, seed=0) as cache:
        loader = make_loader(cache, num_workers=2)
        for _ in loader.epoch(0):
            break
        assert crop_threads() == []
        iterator = loader.epoch(1)
        next(iterator)
        assert crop_threads()
        loader.close()
        assert crop_threads() == []
        with pytest.raises(RuntimeError, match="closed"):
            list(iterator)


# --------------------------------------------------------------------------- copick


def test_load_sample_reads_normalised_tomogram_and_targets(tiny_project):
    projects = CopickProjects([tiny_project.source])
    key = SampleKey(tiny_project.run_names[0], "wbp")
    sample = load_sample(
        projects, key, tiny_project.voxel_size_angstrom, tiny_project.target, NormalisationConfig()
    )
    assert sample.volume.shape == sample.labels.shape == tiny_project.shape_zyx
    assert sample.volume.dtype == np.float32 and sample.labels.dtype == np.uint8
    assert abs(float(sample.volume.mean())) < 0.1 and sample.foreground_voxels


def test_load_sample_reports_both_shapes_when_they_differ(tiny_project_copy):
    projects = CopickProjects([tiny_project_copy.source])
    ref = projects.resolve(tiny_project_copy.run_names[0])
    voxel = tiny_project_copy.voxel_size_angstrom
    projects.write_segmentation(
        ref, voxel, tiny_project_copy.target, np.zeros((16, 24, 24), np.uint8)
    )
    with pytest.raises(CopickDataError, match=r"\(32, 48, 48\).*\(16, 24, 24\)"):
        load_sample(
            projects,
            SampleKey(ref.key, "wbp"),
            voxel,
            tiny_project_copy.target,
            NormalisationConfig(),
        )
