"""The training data pipeline: samples read from copick, crops, batches.

:func:`load_sample` reads one training sample (a tomogram algorithm of one run, normalised,
with its target labels). Foreground crops are centred as MONAI's ``RandCropByLabelClasses``
does: a class uniformly among those present, then one of its labelled voxels (from the
sample's compact index). :class:`CropLoader` turns the samples cached for an epoch into
augmented batches in background threads.

Related modules: :mod:`octopi.data.cache` (samples in memory and which are cached each epoch)
and :mod:`octopi.data.augment` (flips, XY rotations, intensity); their public names are
re-exported here, so the trainer imports everything from ``octopi.data.patches``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from octopi.config import AugmentationConfig, NormalisationConfig, TargetSpec
from octopi.data.augment import augment_batch, plan_augmentation
from octopi.data.cache import (
    MAX_INDEX_VOXELS_PER_CLASS,
    SampleKey,
    TomogramCache,
    TrainingSample,
    build_foreground_index,
    seed_entropy,
)
from octopi.data.normalise import normalise_tomogram

if TYPE_CHECKING:
    from torch import Tensor

    from octopi.data.copick_io import CopickProjects

__all__ = [
    "MAX_INDEX_VOXELS_PER_CLASS",
    "CropLoader",
    "SampleKey",
    "TomogramCache",
    "TrainingSample",
    "augment_batch",
    "background_crop_count",
    "build_foreground_index",
    "crop_views",
    "load_sample",
    "plan_crop_starts",
    "sample_crops",
    "step_generators",
]


def load_sample(
    projects: CopickProjects,
    key: SampleKey,
    voxel_size_angstrom: float,
    target: TargetSpec,
    normalisation: NormalisationConfig,
) -> TrainingSample:
    """Read tomogram ``key.algorithm`` and segmentation ``target`` of run ``key.run_key``.

    The tomogram is normalised with :func:`~octopi.data.normalise.normalise_tomogram`. Raises
    ``CopickDataError`` when either is missing (listing what exists), or when the segmentation
    is not a (Z, Y, X) label volume of the tomogram's shape.
    """
    from octopi.data.copick_io import CopickDataError

    ref = projects.resolve(key.run_key)
    raw = projects.load_tomogram(ref, voxel_size_angstrom, key.algorithm)
    labels = projects.load_segmentation(ref, voxel_size_angstrom, target)
    where = (
        f"run {ref.key} at voxel size {voxel_size_angstrom:g} Å (tomogram {key.algorithm!r}, "
        f"segmentation {target})"
    )
    if labels.shape != raw.shape:
        raise CopickDataError(
            f"{where}: tomogram shape {raw.shape} and segmentation shape {labels.shape} differ; "
            f"recreate the targets at this voxel size (octopi create-targets)"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 255:
        raise CopickDataError(
            f"{where}: the segmentation must hold integer labels 0..255, got dtype {labels.dtype}"
        )
    volume = normalise_tomogram(raw, normalisation)
    del raw
    return TrainingSample(key=key, volume=volume, labels=labels.astype(np.uint8, copy=False))


def step_generators(
    seed: int, epoch: int, step: int
) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent (crop, augmentation) generators of one training step.

    They depend on (seed, epoch, step) alone, not on what ran before: a resumed run draws
    the same crops as an uninterrupted one.
    """
    crop, augment = (np.random.default_rng(seed_entropy(seed, epoch, step, t)) for t in (1, 2))
    return crop, augment


def background_crop_count(n_crops: int, background_ratio: float) -> int:
    """Crops placed uniformly at random: ``round(n · r / (1 + r))`` (r = 1 → half of them)."""
    if background_ratio < 0:
        raise ValueError(f"background_ratio must be ≥ 0, got {background_ratio}")
    return round(n_crops * background_ratio / (1.0 + background_ratio))


def plan_crop_starts(
    shape_zyx: tuple[int, int, int],
    foreground_voxels: dict[int, np.ndarray],
    n_crops: int,
    crop_size: int,
    background_ratio: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """(n_crops, 3) int64 (z, y, x) corners of the crops, in random order.

    ``round(n · r / (1 + r))`` crops (r = ``background_ratio``) are placed uniformly, the rest
    centred on a labelled voxel (class drawn uniformly among those present, then a voxel of
    it) moved by up to ``crop_size // 4`` voxels per axis. Corners are kept so the crop lies in
    the volume; on an axis shorter than ``crop_size`` the volume lies inside the crop (padded).
    """
    shape = np.asarray(shape_zyx, dtype=np.int64)
    low = np.minimum(0, shape - crop_size)
    high = np.maximum(0, shape - crop_size)
    classes = sorted(label for label, coords in foreground_voxels.items() if len(coords))
    n_background = background_crop_count(n_crops, background_ratio)
    n_foreground = n_crops - n_background if classes else 0
    n_background = n_crops - n_foreground

    starts = np.empty((n_crops, 3), dtype=np.int64)
    if n_foreground:
        chosen = rng.integers(len(classes), size=n_foreground)
        centres = np.empty((n_foreground, 3), dtype=np.int64)
        for i, class_index in enumerate(chosen):
            coords = foreground_voxels[classes[int(class_index)]]
            centres[i] = coords[rng.integers(len(coords))]
        jitter = crop_size // 4
        centres += rng.integers(-jitter, jitter + 1, size=(n_foreground, 3))
        starts[:n_foreground] = np.clip(centres - crop_size // 2, low, high)
    starts[n_foreground:] = rng.integers(low, high + 1, size=(n_background, 3))
    return starts[rng.permutation(n_crops)]


def crop_views(
    volume: np.ndarray, labels: np.ndarray, start_zyx: np.ndarray, crop_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(D, D, D) image and label crops at corner ``start_zyx``: views where the crop lies in
    the volume, zero-padded copies (image 0, label 0) where it sticks out."""
    start = [int(s) for s in start_zyx]
    stop = [s + crop_size for s in start]
    if all(s >= 0 for s in start) and all(e <= n for e, n in zip(stop, volume.shape, strict=True)):
        window = tuple(slice(s, e) for s, e in zip(start, stop, strict=True))
        return volume[window], labels[window]
    source = tuple(
        slice(max(s, 0), min(e, n)) for s, e, n in zip(start, stop, volume.shape, strict=True)
    )
    target = tuple(slice(w.start - s, w.stop - s) for w, s in zip(source, start, strict=True))
    image = np.zeros((crop_size,) * 3, dtype=volume.dtype)
    label = np.zeros((crop_size,) * 3, dtype=labels.dtype)
    image[target] = volume[source]
    label[target] = labels[source]
    return image, label


def sample_crops(
    sample: TrainingSample,
    n_crops: int,
    crop_size: int,
    background_ratio: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``n_crops`` cubic crops of edge D = ``crop_size`` voxels out of ``sample``.

    Returns images (n, 1, D, D, D) float32 and labels (n, D, D, D) int64. See
    :func:`plan_crop_starts` for where crops go; a sample without labelled voxels gets random
    crops only.
    """
    starts = plan_crop_starts(
        sample.volume.shape, sample.foreground_voxels, n_crops, crop_size, background_ratio, rng
    )
    images = np.empty((n_crops, 1) + (crop_size,) * 3, dtype=np.float32)
    labels = np.empty((n_crops,) + (crop_size,) * 3, dtype=np.int64)
    for i, start in enumerate(starts):
        images[i, 0], labels[i] = crop_views(sample.volume, sample.labels, start, crop_size)
    return images, labels


_ORDER_STREAM = 0  # step_generators use streams 1 and 2


class CropLoader:
    """Produces the batches of one epoch in background threads, so that crop sampling and
    augmentation overlap the training step.

    One epoch is one pass over the samples the cache holds that epoch, in a shuffled order,
    drawing ``batch_size`` crops from each (the published octopi's epoch); batch ``step`` of
    ``epoch`` depends on (seed, epoch, step) alone (see :func:`step_generators`).
    ``num_workers`` threads build batches ahead, about ``prefetch_batches`` in all
    (``num_workers=0``: built on demand in the consumer's thread). ``pin_memory=None`` pins
    the batches when CUDA is available. The loader does not own ``cache``: close it too.
    """

    def __init__(
        self,
        cache: TomogramCache,
        batch_size: int,
        crop_size: int,
        background_ratio: float,
        augmentation: AugmentationConfig,
        seed: int,
        *,
        num_workers: int = 1,
        pin_memory: bool | None = None,
        prefetch_batches: int = 2,
    ):
        if batch_size < 1 or crop_size < 1 or num_workers < 0 or prefetch_batches < 1:
            raise ValueError(
                f"CropLoader needs batch_size ≥ 1, crop_size ≥ 1, num_workers ≥ 0 and "
                f"prefetch_batches ≥ 1; got {batch_size}, {crop_size}, {num_workers}, "
                f"{prefetch_batches}"
            )
        if background_ratio < 0:
            raise ValueError(f"background_ratio must be ≥ 0, got {background_ratio}")
        self.cache = cache
        self.batch_size = batch_size
        self.crop_size = crop_size
        self.background_ratio = background_ratio
        self.augmentation = augmentation
        self.seed = int(seed)
        self.num_workers = num_workers
        self.prefetch_batches = prefetch_batches
        self._pin_memory = pin_memory
        self._active: set[_BatchWorkers] = set()

    def steps_per_epoch(self, epoch: int) -> int:
        """Batches in ``epoch``: one per sample cached that epoch (no I/O)."""
        return len(self.cache.keys_for_epoch(epoch))

    def sample_order(self, epoch: int, n_samples: int) -> np.ndarray:
        """(n_samples,) indices into ``cache.samples_for_epoch(epoch)``, one per step."""
        entropy = seed_entropy(self.seed, epoch, _ORDER_STREAM)
        return np.random.default_rng(entropy).permutation(n_samples)

    def build_batch(self, sample: TrainingSample, epoch: int, step: int) -> tuple[Tensor, Tensor]:
        """Batch ``step`` of ``epoch`` drawn from ``sample``: images float32 (B, 1, D, D, D)
        and labels int64 (B, 1, D, D, D). Equals :func:`augment_batch` applied to
        :func:`sample_crops` with the generators of :func:`step_generators`."""
        import torch

        if self._pin_memory is None:
            self._pin_memory = torch.cuda.is_available()
        crop_rng, augment_rng = step_generators(self.seed, epoch, step)
        n, size = self.batch_size, self.crop_size
        starts = plan_crop_starts(
            sample.volume.shape, sample.foreground_voxels, n, size, self.background_ratio, crop_rng
        )
        plan = plan_augmentation(n, self.augmentation, augment_rng)
        shape = (n, 1) + (size,) * 3
        images = torch.empty(shape, dtype=torch.float32, pin_memory=self._pin_memory)
        labels = torch.empty(shape, dtype=torch.int64, pin_memory=self._pin_memory)
        # Crop, flip/rotate and scale in one pass straight into the (pinned) batch memory.
        # Labels go through a uint8 buffer: a strided copy that also widens to int64 is 3×
        # slower than a strided uint8 copy followed by one contiguous widening.
        image_array = images.numpy()
        label_buffer = np.empty((n,) + (size,) * 3, dtype=np.uint8)
        for i, start in enumerate(starts):
            image, label = crop_views(sample.volume, sample.labels, start, size)
            plan.write_image(image, i, image_array[i, 0])
            plan.write_labels(label, i, label_buffer[i])
        np.copyto(labels.numpy()[:, 0], label_buffer)
        return images, labels

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches ``start_step..`` of ``epoch``, ``steps_per_epoch(epoch)`` in all (a run
        resumed inside an epoch starts at the step it stopped before).

        Reads the epoch's samples now (through the cache); worker errors are raised here.
        Leaving the loop early stops the workers once the iterator is released.
        """
        samples = self.cache.samples_for_epoch(epoch)
        order = self.sample_order(epoch, len(samples))
        jobs = [(samples[int(index)], epoch, step) for step, index in enumerate(order)]
        return self._iterate(jobs[start_step:])

    def _iterate(self, jobs: list[tuple[TrainingSample, int, int]]) -> Iterator[tuple]:
        if self.num_workers == 0:
            for job in jobs:
                yield self.build_batch(*job)
            return
        workers = _BatchWorkers(self.build_batch, jobs, self.num_workers, self.prefetch_batches)
        self._active.add(workers)
        try:
            for step in range(len(jobs)):
                yield workers.get(step)
        finally:
            workers.stop()
            self._active.discard(workers)

    def close(self) -> None:
        """Stop the workers of any epoch still being iterated."""
        for workers in list(self._active):
            workers.stop()
        self._active.clear()

    def __enter__(self) -> CropLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _BatchWorkers:
    """Threads building the batches of one epoch; worker ``w`` builds steps w, w + W, ..."""

    def __init__(self, build: Callable, jobs: list[tuple], n_workers: int, depth: int):
        self._build = build
        self._jobs = jobs
        self._stop = threading.Event()
        n = max(1, min(n_workers, len(jobs)))
        self._queues: list[queue.Queue] = [
            queue.Queue(maxsize=max(1, depth // n)) for _ in range(n)
        ]
        self._threads = [
            threading.Thread(target=self._work, args=(w,), name=f"octopi-crops-{w}", daemon=True)
            for w in range(n)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self, worker: int) -> None:
        for step in range(worker, len(self._jobs), len(self._threads)):
            if self._stop.is_set():
                return
            try:
                item = (True, self._build(*self._jobs[step]))
            except BaseException as error:  # handed to the consumer, which raises it
                item = (False, error)
            while not self._stop.is_set():
                try:
                    self._queues[worker].put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not item[0]:
                return

    def get(self, step: int) -> tuple:
        worker = step % len(self._threads)
        while True:
            if self._stop.is_set():
                raise RuntimeError("the CropLoader was closed during this epoch")
            try:
                ok, value = self._queues[worker].get(timeout=0.5)
            except queue.Empty:
                if not self._threads[worker].is_alive() and self._queues[worker].empty():
                    raise RuntimeError(f"crop worker {worker} ended before batch {step}") from None
                continue
            if not ok:
                raise value
            return value

    def stop(self) -> None:
        self._stop.set()
        self._drain()  # unblocks workers waiting to put, and frees their batches
        for thread in self._threads:
            thread.join()
        self._drain()

    def _drain(self) -> None:
        for worker_queue in self._queues:
            while True:
                try:
                    worker_queue.get_nowait()
                except queue.Empty:
                    break
