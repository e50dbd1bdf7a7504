"""Sliding-window segmentation of whole tomograms, streamed in Z with bounded memory.

Windows are laid out exactly as :func:`monai.inferers.sliding_window_inference` lays them out
(same grid, same padding, same Gaussian importance map), so the result equals MONAI's
whole-volume result. Instead of one (C, Z, Y, X) float32 probability volume, the weighted class
probabilities live in a ring buffer one window deep in Z: windows are visited one Z position at
a time, and as soon as no later window can reach a plane, that plane is reduced to its label and
confidence and dropped. Peak memory is the volume and outputs plus C × window × Y × X floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol

import numpy as np

from octopi.config import InferenceConfig
from octopi.inference.ensemble import mean_probabilities, tta_transforms

if TYPE_CHECKING:
    import torch

__all__ = ["ProbabilitySink", "ProbabilityVolume", "SegmentationResult", "segment_volume"]

# MONAI's default Gaussian width (sigma = 0.125 × window edge).
_SIGMA_SCALE = 0.125
# Planes reduced to labels per step when flushing (bounds the temporaries).
_FLUSH_PLANES = 4


@dataclass(frozen=True)
class SegmentationResult:
    """Per-voxel result: ``labels`` (Z, Y, X) uint8 argmax class (0 background) and
    ``confidence`` (Z, Y, X) float16, the averaged probability of that class."""

    labels: np.ndarray
    confidence: np.ndarray


# --------------------------------------------------------------------------- window grid


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Window start indices along one axis of ``length`` ≥ ``window`` voxels (MONAI's grid)."""
    interval = window if window == length else max(1, int(window * (1 - overlap)))
    starts = []
    for index in range(math.ceil(length / interval)):
        start = min(index * interval, length - window)
        starts.append(start)
        if start + window >= length:
            break
    return starts


def _padding(shape: Sequence[int], window: int) -> list[tuple[int, int]]:
    """(before, after) per axis so every axis is at least ``window`` (centred, as MONAI pads)."""
    pads = []
    for length in shape:
        diff = max(window - length, 0)
        pads.append((diff // 2, diff - diff // 2))
    return pads


def _allocate_accumulator(
    channels: int, depth: int, height: int, width: int, device: torch.device, weighted: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ring buffers: weighted probabilities (C, depth, Y, X) and weights (depth, Y, X), float32;
    no weights unless ``weighted`` (windows that tile the volume need none)."""
    import torch

    if channels > 256:
        raise ValueError(f"{channels} output channels do not fit uint8 labels (at most 256)")
    probabilities = torch.zeros((channels, depth, height, width), device=device)
    weights = torch.zeros((depth, height, width), device=device) if weighted else None
    return probabilities, weights


def _ring_pieces(start: int, length: int, depth: int) -> list[tuple[slice, slice]]:
    """Split planes [start, start + length) into (ring slice, local slice) pieces; ≤ 2 pieces."""
    pieces = []
    done = 0
    while done < length:
        ring_start = (start + done) % depth
        count = min(length - done, depth - ring_start)
        pieces.append((slice(ring_start, ring_start + count), slice(done, done + count)))
        done += count
    return pieces


# --------------------------------------------------------------------------- segmentation


class ProbabilitySink(Protocol):
    """Receives the blended class probabilities of finished planes, in increasing Z order."""

    def write(self, z_start: int, planes: np.ndarray) -> None:
        """``planes``: (C, n, Y, X) float16 probabilities (channel 0 background, channel i the
        class of label i) of output planes [z_start, z_start + n); they sum to 1 over C."""


class ProbabilityVolume:
    """A :class:`ProbabilitySink` that keeps everything: after segmentation, ``array`` is the
    (C, Z, Y, X) float16 probability volume (2 bytes × C per voxel; use a streaming sink, such
    as the copick writer of ``segment``, where that does not fit in memory)."""

    def __init__(self, shape_zyx: Sequence[int]):
        self.shape_zyx = tuple(int(n) for n in shape_zyx)
        self.array: np.ndarray | None = None

    def write(self, z_start: int, planes: np.ndarray) -> None:
        if self.array is None:
            self.array = np.zeros((planes.shape[0], *self.shape_zyx), dtype=np.float16)
        self.array[:, z_start : z_start + planes.shape[1]] = planes


@dataclass
class _Outputs:
    """Where finished planes go, and how padded planes map to them."""

    labels: np.ndarray
    confidence: np.ndarray
    pads: list[tuple[int, int]]
    sink: ProbabilitySink | None


def _gaussian_importance(window_size: int, device):
    """MONAI's Gaussian blending weights of a cubic window, (W, W, W) float32 on ``device``."""
    from octopi.models.monai_import import import_monai

    import_monai()
    from monai.data.utils import compute_importance_map

    edge = (window_size,) * 3
    return compute_importance_map(
        edge, mode="gaussian", sigma_scale=_SIGMA_SCALE, device=device
    ).float()


def segment_volume(
    models: Sequence[torch.nn.Module],
    volume: np.ndarray,
    window_size: int,
    settings: InferenceConfig = InferenceConfig(),
    device: torch.device | str = "cpu",
    show_progress: bool = False,
    probability_sink: ProbabilitySink | None = None,
) -> SegmentationResult:
    """Segment a normalised (Z, Y, X) float32 volume with an ensemble of networks.

    Class probabilities (softmax) are averaged over ``models`` and the test-time augmentations
    of ``settings.tta``, blended across windows of edge ``window_size`` with a Gaussian
    importance map (``settings.overlap``, ``settings.window_batch_size`` windows per forward
    pass, autocast per ``settings.amp``). Axes shorter than the window are zero-padded and
    cropped back. Returns (Z, Y, X) uint8 labels and float16 confidence; the blended
    probabilities, (C, n, Y, X) float16 a few planes at a time, go to ``probability_sink``.
    """
    import torch

    from octopi.runtime import autocast_dtype

    if not models:
        raise ValueError("segment_volume needs at least one model")
    if window_size < 1:
        raise ValueError(f"window size must be positive, got {window_size}")
    device = torch.device(device)
    amp_dtype, transforms = autocast_dtype(device, settings.amp), tta_transforms(settings.tta)
    predict = partial(
        mean_probabilities, models, transforms=transforms, device=device, amp_dtype=amp_dtype
    )
    source, pads = _padded_source(volume, window_size, device)
    shape = tuple(int(n) for n in np.shape(volume))
    padded = tuple(int(n) for n in source.shape)
    w = window_size
    starts = [window_starts(n, w, settings.overlap) for n in padded]
    plane_windows = [(y, x) for y in starts[1] for x in starts[2]]
    # Windows that tile the volume predict every voxel once: nothing to blend or weigh.
    importance = None if _tiles(starts, w, padded) else _gaussian_importance(w, device)
    labels, confidence = np.zeros(shape, np.uint8), np.zeros(shape, np.float16)
    outputs = _Outputs(labels, confidence, pads, probability_sink)
    # [weighted probabilities, weights or None], allocated on first use
    blend: list[torch.Tensor | None] = []
    total_windows = len(starts[0]) * len(plane_windows)
    with (
        _eval_mode(models),
        torch.inference_mode(),
        _progress(total_windows, show_progress) as progress,
    ):
        for index, z0 in enumerate(starts[0]):
            for first in range(0, len(plane_windows), settings.window_batch_size):
                batch = plane_windows[first : first + settings.window_batch_size]
                _add_windows(predict, source, z0, batch, w, importance, blend)
                progress.update(len(batch))
            # No later window starts before the next Z start: planes up to it are complete.
            z_done = starts[0][index + 1] if index + 1 < len(starts[0]) else padded[0]
            _flush_planes(blend[0], blend[1], z0, z_done - z0, w, outputs)
    return SegmentationResult(labels=outputs.labels, confidence=outputs.confidence)


def _tiles(starts: Sequence[Sequence[int]], window: int, padded: Sequence[int]) -> bool:
    """True when the windows at ``starts`` (per axis) cover the ``padded`` (Z, Y, X) volume
    exactly once: on every axis they start a window apart and the last ends at the edge."""
    return all(
        list(axis) == list(range(0, length, window)) and length % window == 0
        for axis, length in zip(starts, padded, strict=True)
    )


def _padded_source(
    volume: np.ndarray, window_size: int, device: torch.device
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The (Z, Y, X) volume as a float32 tensor on ``device``, zero-padded (centred, as MONAI
    pads) so every axis is at least ``window_size``; and the (before, after) padding per axis."""
    import torch

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) volume, got shape {volume.shape}")
    pads = _padding(volume.shape, window_size)
    source = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    if any(before or after for before, after in pads):
        flat_pads = [n for pair in reversed(pads) for n in pair]  # F.pad wants X first
        source = torch.nn.functional.pad(source, flat_pads)
    return source.to(device), pads


def _add_windows(
    predict: Callable[[torch.Tensor], torch.Tensor],
    source: torch.Tensor,
    z0: int,
    batch: Sequence[tuple[int, int]],
    w: int,
    importance: torch.Tensor | None,
    blend: list[torch.Tensor | None],
) -> None:
    """Predict the windows at Z start ``z0`` and (Y, X) starts ``batch`` (``predict``: (B, 1, w,
    w, w) → (B, C, w, w, w) probabilities) and add their weighted probabilities into the ring
    buffers ``blend`` (allocated here on the first call). ``importance`` None: the windows
    tile the volume, so their probabilities are copied in unweighted (weights stay 0)."""
    import torch

    windows = torch.stack([source[z0 : z0 + w, y0 : y0 + w, x0 : x0 + w] for y0, x0 in batch])
    probabilities = predict(windows[:, None])
    if not blend:
        blend.extend(
            _allocate_accumulator(
                probabilities.shape[1],
                w,
                source.shape[1],
                source.shape[2],
                source.device,
                weighted=importance is not None,
            )
        )
    accumulator, weights = blend
    assert accumulator is not None
    if importance is not None:
        probabilities.mul_(importance)
    for (y0, x0), window_probabilities in zip(batch, probabilities, strict=True):
        for ring, local in _ring_pieces(z0, w, w):
            if importance is None or weights is None:
                accumulator[:, ring, y0 : y0 + w, x0 : x0 + w] = window_probabilities[:, local]
                continue
            accumulator[:, ring, y0 : y0 + w, x0 : x0 + w] += window_probabilities[:, local]
            weights[ring, y0 : y0 + w, x0 : x0 + w] += importance[local]


@contextmanager
def _eval_mode(models: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Evaluate in eval mode, then restore each model's mode (training validates with this)."""
    was_training = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for model, training in zip(models, was_training, strict=True):
            model.train(training)


def _progress(total: int, show: bool):
    """A tqdm bar over windows (a silent one when ``show`` is False)."""
    from tqdm import tqdm

    return tqdm(total=total, desc="windows", unit="win", disable=not show, leave=False)


def _flush_planes(
    accumulator: torch.Tensor,
    weights: torch.Tensor | None,
    z_start: int,
    count: int,
    depth: int,
    outputs: _Outputs,
) -> None:
    """Reduce padded planes [z_start, z_start + count) to labels and confidence (and hand their
    probabilities to the sink), then clear their ring slots. Planes in the padding are dropped;
    Y and X padding is cropped. ``weights`` None: the windows tile the volume, the ring holds
    probabilities as predicted, and the next windows overwrite every slot."""

    (z_pad, _), (y_pad, _), (x_pad, _) = outputs.pads
    shape = outputs.labels.shape
    crop_y = slice(y_pad, y_pad + shape[1])
    crop_x = slice(x_pad, x_pad + shape[2])
    for ring, local in _ring_pieces(z_start, count, depth):
        # A few planes at a time: the temporaries stay small next to the ring buffer.
        for first in range(ring.start, ring.stop, _FLUSH_PLANES):
            planes = slice(first, min(first + _FLUSH_PLANES, ring.stop))
            out_start = z_start + local.start + (first - ring.start) - z_pad
            n_planes = planes.stop - planes.start
            keep_from, keep_to = max(0, -out_start), min(n_planes, shape[0] - out_start)
            if keep_to > keep_from:
                kept = slice(planes.start + keep_from, planes.start + keep_to)
                blended = accumulator[:, kept, crop_y, crop_x]
                if weights is not None:
                    blended = blended / weights[kept, crop_y, crop_x]
                out = slice(out_start + keep_from, out_start + keep_to)
                _store_planes(blended, out, outputs)
        if weights is not None:
            accumulator[:, ring] = 0
            weights[ring] = 0


def _store_planes(blended: torch.Tensor, out: slice, outputs: _Outputs) -> None:
    """Labels, confidence (and for the sink, float16 probabilities) of output planes ``out``
    from their blended (C, n, Y, X) float32 probabilities."""
    import torch

    best, winner = blended.max(dim=0)
    outputs.labels[out] = winner.to(dtype=torch.uint8).cpu().numpy()
    outputs.confidence[out] = best.half().cpu().numpy()
    if outputs.sink is not None:
        outputs.sink.write(out.start, blended.half().cpu().numpy())
