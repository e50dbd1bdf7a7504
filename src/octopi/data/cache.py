"""Training samples in memory, and the window of them cached each epoch (like MONAI SmartCache).

A :class:`TrainingSample` holds a normalised tomogram, its labels and a compact index of
labelled voxels (per class at most :data:`MAX_INDEX_VOXELS_PER_CLASS` coordinates, a uniform
subsample), which foreground crop sampling draws centres from.

:class:`TomogramCache`: when every sample fits in ``capacity``, each is read once per process
and kept. Otherwise the samples are laid on a ring in a seeded random order and the cache
holds a window of ``capacity`` consecutive ones; each epoch the window moves on by
``replace_count``: the oldest samples leave, the next ones on the ring enter. The window of
epoch ``e`` starts at ring position ``e × replace_count``, a pure function of (seed, epoch),
so a process that resumes at epoch ``e`` trains on the same samples as one that ran epochs
0..e-1, and every sample is visited once every ``ceil(n_samples / replace_count)`` epochs.

The samples entering at epoch ``e + 1`` are read by a background thread while epoch ``e``
trains, so peak memory is ``capacity + replace_count`` samples.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

# 20k voxels × 3 int32 = 240 kB per class: small next to a tomogram, yet dense enough that
# every particle of a crowded class keeps hundreds of candidate centres.
MAX_INDEX_VOXELS_PER_CLASS = 20_000


@dataclass(frozen=True, order=True)
class SampleKey:
    """One training sample: tomogram ``algorithm`` of run ``run_key`` (``run``/``session/run``)."""

    run_key: str
    algorithm: str

    def __str__(self) -> str:
        return f"{self.run_key}:{self.algorithm}"


@dataclass
class TrainingSample:
    """A tomogram in memory, ready for crop sampling.

    ``volume`` (Z, Y, X) float32, already normalised; ``labels`` (Z, Y, X) uint8, 0 is
    background; ``foreground_voxels`` maps each label present to an (N, 3) int32 array of
    (z, y, x) voxel coordinates carrying it (all of them, or a uniform subsample of
    :data:`MAX_INDEX_VOXELS_PER_CLASS`). Left out, it is computed from ``labels``.
    """

    key: SampleKey
    volume: np.ndarray
    labels: np.ndarray
    foreground_voxels: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.volume.ndim != 3 or self.volume.shape != self.labels.shape:
            raise ValueError(
                f"sample {self.key}: tomogram shape {self.volume.shape} and label shape "
                f"{self.labels.shape} differ; both must be the same (Z, Y, X)"
            )
        if self.volume.dtype != np.float32:
            raise ValueError(f"sample {self.key}: volume must be float32, got {self.volume.dtype}")
        if self.labels.dtype != np.uint8:
            raise ValueError(f"sample {self.key}: labels must be uint8, got {self.labels.dtype}")
        if not self.foreground_voxels:
            self.foreground_voxels = build_foreground_index(self.labels)

    @property
    def index_nbytes(self) -> int:
        """Memory held by the foreground index (bytes)."""
        return sum(coords.nbytes for coords in self.foreground_voxels.values())


def build_foreground_index(
    labels: np.ndarray, max_voxels_per_class: int = MAX_INDEX_VOXELS_PER_CLASS
) -> dict[int, np.ndarray]:
    """Per label ≥ 1: (N, 3) int32 (z, y, x) coordinates of its voxels, N ≤ the cap.

    Classes with more voxels keep a uniform random subsample (fixed seed, so the index of a
    tomogram is always the same). Cost: one pass over the volume plus the labelled voxels.
    """
    flat = np.flatnonzero(labels)
    values = labels.reshape(-1)[flat]
    index: dict[int, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for label in np.unique(values):
        chosen = flat[values == label]
        if len(chosen) > max_voxels_per_class:
            chosen = np.sort(rng.choice(chosen, max_voxels_per_class, replace=False))
        coords = np.stack(np.unravel_index(chosen, labels.shape), axis=1)
        index[int(label)] = coords.astype(np.int32)
    return index


_RING_STREAM = 0x0C_AC_4E  # tells the ring-order generator apart from others seeded by `seed`


def seed_entropy(*parts: int) -> list[int]:
    """Non-negative entropy for ``np.random.default_rng`` from signed integers (seed, epoch...)."""
    return [int(part) % 2**64 for part in parts]


class TomogramCache:
    """SmartCache-like window over training samples.

    Holds at most ``capacity`` samples (plus, while the next epoch's replacements are being
    read in the background, ``replace_count`` more). ``loader(key)`` reads one sample; it is
    never called from two threads at once. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        keys: Sequence[SampleKey],
        loader: Callable[[SampleKey], TrainingSample],
        capacity: int,
        seed: int,
        replace_fraction: float = 0.25,
    ):
        keys = list(keys)
        if not keys:
            raise ValueError("TomogramCache needs at least one training sample, got none")
        if len(set(keys)) != len(keys):
            duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
            raise ValueError(f"training samples listed twice: {', '.join(duplicates)}")
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1 sample, got {capacity}")
        if not 0.0 < replace_fraction <= 1.0:
            raise ValueError(f"replace_fraction must lie in (0, 1], got {replace_fraction}")
        self._loader = loader
        self.seed = int(seed)
        keys = sorted(keys)  # the ring must not depend on the order the caller lists them in
        ring = np.random.default_rng(seed_entropy(seed, _RING_STREAM)).permutation(len(keys))
        self._ring: list[SampleKey] = [keys[int(i)] for i in ring]
        self.capacity = min(int(capacity), len(keys))
        spare = len(keys) - self.capacity
        self.replace_count = min(max(1, round(replace_fraction * self.capacity)), spare)
        self._cached: dict[SampleKey, TrainingSample] = {}
        self._prefetch: tuple[int, Future[dict[SampleKey, TrainingSample]]] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._closed = False
        self.load_count = 0  # calls of `loader` that returned, over the cache's life

    @property
    def n_samples(self) -> int:
        return len(self._ring)

    @property
    def cached_keys(self) -> list[SampleKey]:
        """Samples held now (not counting replacements being read in the background)."""
        return list(self._cached)

    def keys_for_epoch(self, epoch: int) -> list[SampleKey]:
        """The samples cached during ``epoch`` (a pure function of seed and epoch; no I/O)."""
        if epoch < 0:
            raise ValueError(f"epoch must be ≥ 0, got {epoch}")
        offset = epoch * self.replace_count
        n = len(self._ring)
        return [self._ring[(offset + i) % n] for i in range(self.capacity)]

    def samples_for_epoch(self, epoch: int) -> list[TrainingSample]:
        """The cached samples of ``epoch``, in ring order; reads what is missing.

        Also starts reading, in the background, the samples that enter at ``epoch + 1``.
        A loader error of that background read is raised by the call for ``epoch + 1``.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("TomogramCache is closed; make a new one")
            wanted = self.keys_for_epoch(epoch)
            pool = dict(self._cached)
            pool.update(self._collect_prefetch(epoch))
            # Drop what leaves before reading what enters, so memory stays at capacity.
            self._cached = {key: pool[key] for key in wanted if key in pool}
            del pool
            for key in wanted:
                if key not in self._cached:
                    self._cached[key] = self._load(key)
            self._start_prefetch(epoch + 1)
            return [self._cached[key] for key in wanted]

    def _load(self, key: SampleKey) -> TrainingSample:
        sample = self._loader(key)
        with self._count_lock:
            self.load_count += 1
        return sample

    def _collect_prefetch(self, epoch: int) -> dict[SampleKey, TrainingSample]:
        if self._prefetch is None:
            return {}
        prefetch_epoch, future = self._prefetch
        self._prefetch = None
        if prefetch_epoch == epoch:
            return future.result()  # re-raises the loader's error here, in the caller
        # Out-of-order call: keep whatever the background read finished; errors resurface
        # (from this thread) if the sample is still wanted.
        self._stop.set()
        try:
            return future.result()
        except Exception:
            return {}
        finally:
            self._stop.clear()

    def _start_prefetch(self, epoch: int) -> None:
        entering = [key for key in self.keys_for_epoch(epoch) if key not in self._cached]
        if not entering:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="octopi-cache")
        self._prefetch = (epoch, self._executor.submit(self._load_many, entering))

    def _load_many(self, keys: list[SampleKey]) -> dict[SampleKey, TrainingSample]:
        loaded: dict[SampleKey, TrainingSample] = {}
        for key in keys:
            if self._stop.is_set():
                break
            loaded[key] = self._load(key)
        return loaded

    def close(self) -> None:
        """Stop the background reader (waits for a read in progress) and drop the samples."""
        with self._lock:
            self._closed = True
            self._stop.set()
            if self._prefetch is not None:
                self._prefetch[1].cancel()
                self._prefetch = None
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None
            self._cached = {}

    def __enter__(self) -> TomogramCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
