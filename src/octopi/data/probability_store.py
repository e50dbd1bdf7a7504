"""Class probabilities beside a label segmentation: a float16 OME-Zarr image in the group
``probabilities`` of the segmentation's own zarr store, written plane by plane.

Layout, for the label segmentation ``name,user,session`` at voxel size V in a copick run::

    Segmentations/<V>_<user>_<session>_<name>-multilabel.zarr/
        0/                  (Z, Y, X) uint8 labels, as copick writes them
        probabilities/      OME-Zarr image (multiscales 0.4, one level, axes c, z, y, x)
            0/              (C, Z, Y, X) float16, chunks (1, 16, 256, 256); channel 0 is the
                            background, channel i the class of label i; sums to 1 over C;
                            stored in steps of 1/255 (see below)

``probabilities/.zattrs`` holds ``octopi.channels`` (class name → channel) and, when the model
was calibrated (``octopi.evaluation.calibration``), ``octopi.calibration`` (class name →
``{"threshold": p, "min_size_fraction": f}``), which ``localize`` applies. copick sees one
multilabel segmentation (it reads ``0``); the probabilities come and go with it. To open them:
``zarr.open(seg.zarr(), mode="r")["probabilities/0"]`` for a segmentation ``seg`` of
``run.get_segmentations(name=..., user_id=..., session_id=..., voxel_size=...)``, or
``zarr.open("<store path>/probabilities/0")``.

The array reads as float16, but its chunks hold uint8 steps of 1/255 (numcodecs'
``FixedScaleOffset`` filter, declared in ``.zarray``, which zarr undoes on reading): a trained
model's probabilities compress to 0.24 of their float16 bytes instead of 0.83 (about 0.2 GB
instead of 0.7 GB per 184×630×630 tomogram of 7 channels), at most 1/510 from the float16
written. Stores written before this step (plain float16) read the same way.

The writer streams into a hidden store beside the segmentation (a name starting with ``.``,
which copick does not list) and moves it into place once the labels are written, so a killed
job never leaves probabilities that look complete. Each full row of chunks (16 planes) is
compressed and written by background threads while the next planes are predicted, so that on
a GPU the writes (1.8 s of 4.3 s per CZII-size tomogram on an H200 when they were serial) can
overlap the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr
from numcodecs import Blosc, FixedScaleOffset

PROBABILITY_GROUP = "probabilities"
# Z depth of a chunk: planes are buffered until a chunk is full, so no chunk is rewritten.
_CHUNK_PLANES = 16
_CHUNK_EDGE = 256


class _StepsOf1Over255(FixedScaleOffset):
    """numcodecs' ``FixedScaleOffset(offset=0, scale=255, dtype="<f2", astype="u1")``: its id
    and configuration, so that any zarr reader decodes the chunks to float16. It encodes in
    float32: numcodecs' own encode does the arithmetic in float16, which NumPy emulates (26 ms
    against 2 ms for a (16, 256, 256) chunk here)."""

    def __init__(self) -> None:
        super().__init__(offset=0, scale=255, dtype="<f2", astype="u1")

    def encode(self, buf: Any) -> np.ndarray:
        probabilities = np.asarray(buf).view(self.dtype).reshape(-1, order="A")
        steps = np.rint(probabilities.astype(np.float32) * self.scale)
        return np.clip(steps, 0, 255, out=steps).astype(self.astype)  # never wraps around


# Probabilities in [0, 1] kept as round(p × 255) in uint8; read back as float16.
_STEPS_OF_1_255 = _StepsOf1Over255()
# Threads that compress and write one row of chunks (one channel each; Blosc releases the GIL).
_WRITE_THREADS = min(8, os.cpu_count() or 1)


def _store(fs: Any, path: str, mode: str = "w") -> zarr.storage.FSStore:
    return zarr.storage.FSStore(path, fs=fs, mode=mode, dimension_separator="/", create=True)


def _attributes(
    channels: Mapping[str, int],
    voxel_size_angstrom: float,
    calibration: Mapping[str, Mapping[str, float]] | None,
) -> dict[str, Any]:
    space = [{"name": axis, "type": "space", "unit": "angstrom"} for axis in "zyx"]
    scale = [1.0, *(float(voxel_size_angstrom),) * 3]
    return {
        "multiscales": [
            {
                "version": "0.4",
                "name": PROBABILITY_GROUP,
                "axes": [{"name": "c", "type": "channel"}, *space],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                ],
            }
        ],
        "octopi": {
            "content": "class probabilities: softmax blended over sliding windows, averaged "
            "over the ensemble and test-time augmentations",
            "channels": dict(channels),
            **(
                {"calibration": {k: dict(v) for k, v in calibration.items()}} if calibration else {}
            ),
        },
    }


class ProbabilityWriter:
    """A probability sink for :func:`octopi.inference.segment.segment_volume` that writes
    (C, Z, Y, X) float16 planes (``shape_czyx``) into a hidden temporary store beside
    ``segmentation_path`` (a path of the fsspec filesystem ``fs``), buffering at most 2 × C × 16
    planes: one row of chunks fills while the previous one is written in the background.
    ``channels``: class name → channel index (background 0 included); ``calibration``: class
    name → ``{"threshold", "min_size_fraction"}`` for localize, or None.

    After the last plane, :meth:`commit` moves the store into the segmentation's store;
    :meth:`discard` deletes it. Use as a context manager to discard unless committed.
    """

    def __init__(
        self,
        fs: Any,
        segmentation_path: str,
        channels: Mapping[str, int],
        shape_czyx: Sequence[int],
        voxel_size_angstrom: float,
        calibration: Mapping[str, Mapping[str, float]] | None = None,
    ):
        self.fs = fs
        n_channels, z, y, x = (int(n) for n in shape_czyx)
        self.shape_zyx = (z, y, x)
        directory, _, name = segmentation_path.rstrip("/").rpartition("/")
        stem = f"{directory}/.{name}.{PROBABILITY_GROUP}-"
        for stale in fs.glob(stem + "*"):  # left by a killed job
            fs.rm(stale, recursive=True)
        self.path = f"{stem}{os.getpid()}"
        group = zarr.group(store=_store(fs, self.path), overwrite=True)
        group.attrs.update(_attributes(channels, voxel_size_angstrom, calibration))
        self._array = group.create_dataset(
            "0",
            shape=(n_channels, z, y, x),
            chunks=(1, _CHUNK_PLANES, _CHUNK_EDGE, _CHUNK_EDGE),
            dtype=np.float16,
            fill_value=0,
            filters=[_STEPS_OF_1_255],
            # Bit-shuffled steps of 1/255 compress to ~0.3 of their bytes (float16: ~0.8).
            compressor=Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE),
        )
        # zarr rebuilt the filter from its configuration (numcodecs' slow float16 encoder):
        # this array writes with ours, which stores the same steps.
        if [f.get_config() for f in self._array.filters] == [_STEPS_OF_1_255.get_config()]:
            self._array._filters = [_STEPS_OF_1_255]
        self._buffer = np.zeros((n_channels, _CHUNK_PLANES, y, x), dtype=np.float16)
        self._spare = np.zeros_like(self._buffer)  # the row being written in the background
        self._buffered = 0  # planes in the buffer, which starts at plane self._written
        self._written = 0  # planes handed to the writer threads
        self._pool = ThreadPoolExecutor(min(_WRITE_THREADS, n_channels), "probabilities")
        self._pending: list[Future] = []
        self._done = False

    def write(self, z_start: int, planes: np.ndarray) -> None:
        """Add (C, n, Y, X) planes [z_start, z_start + n); planes must come in Z order."""
        if z_start != self._written + self._buffered:
            raise ValueError(
                f"probability planes must arrive in order: expected plane "
                f"{self._written + self._buffered}, got {z_start}"
            )
        done = 0
        while done < planes.shape[1]:
            take = min(planes.shape[1] - done, _CHUNK_PLANES - self._buffered)
            self._buffer[:, self._buffered : self._buffered + take] = planes[:, done : done + take]
            self._buffered += take
            done += take
            if self._buffered == _CHUNK_PLANES:
                self._flush()

    def _flush(self) -> None:
        """Hand the buffered planes to the writer threads (after the previous row is written:
        its buffer becomes the next one to fill)."""
        if self._buffered:
            self._wait()
            start, stop = self._written, self._written + self._buffered
            self._pending = [
                self._pool.submit(self._write_channel, channel, start, stop, planes)
                for channel, planes in enumerate(self._buffer)
            ]
            self._buffer, self._spare = self._spare, self._buffer
            self._written, self._buffered = stop, 0

    def _write_channel(self, channel: int, start: int, stop: int, planes: np.ndarray) -> None:
        self._array[channel, start:stop] = planes[: stop - start]

    def _wait(self) -> None:
        """Wait for the writes in flight; the first error among them is raised here."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def finish(self) -> None:
        """Write the last planes and wait for every write. Raises the first failed write, or
        ``ValueError`` when planes are missing; nothing is moved either way (call it before
        replacing an old segmentation, so a failure leaves that one as it was)."""
        self._flush()
        self._wait()
        self._pool.shutdown()
        if self._written != self.shape_zyx[0]:
            raise ValueError(
                f"{self._written} of {self.shape_zyx[0]} probability planes were written; "
                "refusing to store an incomplete volume"
            )

    def commit(self, segmentation_store: MutableMapping) -> None:
        """Finish (:meth:`finish`) and move the probabilities into ``segmentation_store`` (a
        copick segmentation's zarr store on the same filesystem) as ``probabilities``."""
        self.finish()
        target = f"{segmentation_store.path.rstrip('/')}/{PROBABILITY_GROUP}"
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)
        self.fs.mv(self.path, target, recursive=True)
        self._done = True

    def discard(self) -> None:
        """Delete the temporary store (nothing of it reaches the segmentation)."""
        for future in self._pending:  # no write may land after the delete
            future.exception()
        self._pending = []
        self._pool.shutdown()
        if not self._done and self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)
        self._done = True

    def __enter__(self) -> ProbabilityWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()


def _octopi_attributes(segmentation_store: MutableMapping) -> dict[str, Any]:
    group = zarr.open_group(segmentation_store, mode="r")
    if PROBABILITY_GROUP not in group:
        return {}
    return dict(group[PROBABILITY_GROUP].attrs.get("octopi", {}))


def probability_channels(segmentation_store: MutableMapping) -> dict[str, int]:
    """Class name → channel of the probabilities in a segmentation's store; {} if it has
    none (segmented with ``save_probabilities: false``, or by another tool)."""
    return dict(_octopi_attributes(segmentation_store).get("channels", {}))


def probability_calibration(segmentation_store: MutableMapping) -> dict[str, dict[str, float]]:
    """Class name → ``{"threshold", "min_size_fraction"}`` stored with the probabilities of a
    segmentation's store by a calibrated model; {} if none."""
    return dict(_octopi_attributes(segmentation_store).get("calibration", {}))


def read_probability(segmentation_store: MutableMapping, channel: int) -> np.ndarray:
    """One channel of the stored probabilities: (Z, Y, X) float16 (steps of 1/255 since they are
    stored so; older stores: as written)."""
    array = zarr.open_group(segmentation_store, mode="r")[f"{PROBABILITY_GROUP}/0"]
    return np.asarray(array[channel])
