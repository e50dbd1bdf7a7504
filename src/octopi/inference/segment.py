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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from octopi.config import InferenceConfig
from octopi.models.model_card import ModelCard

if TYPE_CHECKING:
    import torch

__all__ = ["SegmentationResult", "load_ensemble", "segment_volume", "tta_transforms"]

# MONAI's default Gaussian width (sigma = 0.125 × window edge).
_SIGMA_SCALE = 0.125
# Planes reduced to labels per step when flushing (bounds the temporaries).
_FLUSH_PLANES = 4

Transform = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class SegmentationResult:
    """Per-voxel result: ``labels`` (Z, Y, X) uint8 argmax class (0 background) and
    ``confidence`` (Z, Y, X) float16, the averaged probability of that class."""

    labels: np.ndarray
    confidence: np.ndarray


# --------------------------------------------------------------------------- models


def load_ensemble(
    model_configs: Sequence[str | Path],
    weights: Sequence[str | Path],
    device: torch.device | str = "cpu",
) -> tuple[ModelCard, list[torch.nn.Module]]:
    """Load one network per (model_config.yaml, weights) pair, in eval mode on ``device``.

    Every card must name the same classes (names and labels) and voxel size, because the
    members' probabilities are averaged per channel. Returns the first card and the models.
    """
    from octopi.models.registry import load_model

    if not model_configs:
        raise ValueError("no model config given: pass --model-config model_config.yaml")
    if len(model_configs) != len(weights):
        raise ValueError(
            f"{len(model_configs)} model config(s) but {len(weights)} weight file(s); give one "
            "--model-weights file per --model-config, in the same order"
        )
    cards = [ModelCard.load(path) for path in model_configs]
    check_cards_agree(cards, model_configs)
    models = []
    for card, path in zip(cards, weights, strict=True):
        model = load_model(card, path, device=str(device))
        model.eval()
        models.append(model)
    return cards[0], models


def check_cards_agree(cards: Sequence[ModelCard], paths: Sequence[str | Path]) -> None:
    """Raise ``ValueError`` unless all cards share classes (name, label) and voxel size."""
    first, first_path = cards[0], paths[0]
    first_classes = sorted((c.name, c.label) for c in first.classes)
    for card, path in zip(cards[1:], paths[1:], strict=True):
        classes = sorted((c.name, c.label) for c in card.classes)
        if classes != first_classes:
            raise ValueError(
                f"ensemble members disagree on classes: {first_path} has {first_classes}, "
                f"{path} has {classes}; only models trained on the same classes can be averaged"
            )
        if not math.isclose(card.voxel_size_angstrom, first.voxel_size_angstrom):
            raise ValueError(
                f"ensemble members disagree on voxel size: {first_path} was trained at "
                f"{first.voxel_size_angstrom:g} Å, {path} at {card.voxel_size_angstrom:g} Å"
            )


# --------------------------------------------------------------------------- augmentation


def tta_transforms(mode: str) -> list[tuple[Transform, Transform]]:
    """(forward, inverse) pairs acting on (B, C, Z, Y, X) tensors, in the XY plane.

    "none": identity; "flips": identity, flip X, flip Y, flip XY; "rot90": 0/90/180/270°.
    """
    import torch

    if mode == "none":
        return [(_identity, _identity)]
    if mode == "flips":
        pairs: list[tuple[Transform, Transform]] = [(_identity, _identity)]
        for dims in ((-1,), (-2,), (-2, -1)):

            def flip(x: torch.Tensor, dims: tuple[int, ...] = dims) -> torch.Tensor:
                return torch.flip(x, dims)

            pairs.append((flip, flip))
        return pairs
    if mode == "rot90":
        pairs = [(_identity, _identity)]
        for k in (1, 2, 3):

            def rotate(x: torch.Tensor, k: int = k) -> torch.Tensor:
                return torch.rot90(x, k, dims=(-2, -1))

            def unrotate(x: torch.Tensor, k: int = k) -> torch.Tensor:
                return torch.rot90(x, -k, dims=(-2, -1))

            pairs.append((rotate, unrotate))
        return pairs
    raise ValueError(f"unknown test-time augmentation {mode!r}; choose none, flips or rot90")


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _mean_probabilities(
    models: Sequence[torch.nn.Module],
    windows: torch.Tensor,
    transforms: Sequence[tuple[Transform, Transform]],
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Softmax probabilities (B, C, w, w, w) float32 averaged over models and augmentations."""
    import torch

    from octopi.runtime import autocast

    total = None
    for model in models:
        for forward, inverse in transforms:
            with autocast(device, amp_dtype):
                logits = model(forward(windows))
            probabilities = inverse(torch.softmax(logits.float(), dim=1))
            total = probabilities if total is None else total.add_(probabilities)
    assert total is not None
    return total.div_(len(models) * len(transforms))


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
    channels: int, depth: int, height: int, width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ring buffers: weighted probabilities (C, depth, Y, X) and weights (depth, Y, X), float32."""
    import torch

    if channels > 256:
        raise ValueError(f"{channels} output channels do not fit uint8 labels (at most 256)")
    probabilities = torch.zeros((channels, depth, height, width), device=device)
    weights = torch.zeros((depth, height, width), device=device)
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


def segment_volume(
    models: Sequence[torch.nn.Module],
    volume: np.ndarray,
    window_size: int,
    settings: InferenceConfig = InferenceConfig(),
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> SegmentationResult:
    """Segment a normalised (Z, Y, X) float32 volume with an ensemble of networks.

    Class probabilities (softmax) are averaged over ``models`` and the test-time augmentations
    of ``settings.tta``, blended across windows of edge ``window_size`` with a Gaussian
    importance map (``settings.overlap``, ``settings.window_batch_size`` windows per forward
    pass, autocast per ``settings.amp``). Axes shorter than the window are zero-padded and
    cropped back. Returns (Z, Y, X) uint8 labels and float16 confidence.
    """
    import torch
    from monai.data.utils import compute_importance_map

    from octopi.runtime import autocast_dtype

    if not models:
        raise ValueError("segment_volume needs at least one model")
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) volume, got shape {volume.shape}")
    if window_size < 1:
        raise ValueError(f"window size must be positive, got {window_size}")
    device = torch.device(device)
    amp_dtype = autocast_dtype(device, settings.amp)
    transforms = tta_transforms(settings.tta)

    shape = tuple(int(n) for n in volume.shape)
    pads = _padding(shape, window_size)
    source = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    if any(before or after for before, after in pads):
        flat_pads = [n for pair in reversed(pads) for n in pair]  # F.pad wants X first
        source = torch.nn.functional.pad(source, flat_pads)
    source = source.to(device)
    padded = tuple(int(n) for n in source.shape)
    w = window_size

    starts = [window_starts(n, w, settings.overlap) for n in padded]
    plane_windows = [(y, x) for y in starts[1] for x in starts[2]]
    importance = compute_importance_map(
        (w, w, w), mode="gaussian", sigma_scale=_SIGMA_SCALE, device=device
    ).float()

    labels = np.zeros(shape, dtype=np.uint8)
    confidence = np.zeros(shape, dtype=np.float16)
    accumulator = weights = None
    total_windows = len(starts[0]) * len(plane_windows)
    # Training calls this for validation: evaluate in eval mode, then restore the mode.
    was_training = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        with torch.inference_mode(), _progress(total_windows, show_progress) as progress:
            for index, z0 in enumerate(starts[0]):
                z_pieces = _ring_pieces(z0, w, w)
                for first in range(0, len(plane_windows), settings.window_batch_size):
                    batch = plane_windows[first : first + settings.window_batch_size]
                    windows = torch.stack(
                        [source[z0 : z0 + w, y0 : y0 + w, x0 : x0 + w] for y0, x0 in batch]
                    )[:, None]
                    probabilities = _mean_probabilities(
                        models, windows, transforms, device, amp_dtype
                    )
                    if accumulator is None:
                        accumulator, weights = _allocate_accumulator(
                            probabilities.shape[1], w, padded[1], padded[2], device
                        )
                    probabilities.mul_(importance)
                    for (y0, x0), window_probabilities in zip(batch, probabilities, strict=True):
                        for ring, local in z_pieces:
                            accumulator[:, ring, y0 : y0 + w, x0 : x0 + w] += window_probabilities[
                                :, local
                            ]
                            weights[ring, y0 : y0 + w, x0 : x0 + w] += importance[local]
                    progress.update(len(batch))
                # No later window starts before the next Z start: planes up to it are complete.
                z_done = starts[0][index + 1] if index + 1 < len(starts[0]) else padded[0]
                _flush_planes(
                    accumulator, weights, z0, z_done - z0, w, pads, shape, labels, confidence
                )
    finally:
        for model, training in zip(models, was_training, strict=True):
            model.train(training)
    return SegmentationResult(labels=labels, confidence=confidence)


def _progress(total: int, show: bool):
    """A tqdm bar over windows (a silent one when ``show`` is False)."""
    from tqdm import tqdm

    return tqdm(total=total, desc="windows", unit="win", disable=not show, leave=False)


def _flush_planes(
    accumulator: torch.Tensor,
    weights: torch.Tensor,
    z_start: int,
    count: int,
    depth: int,
    pads: list[tuple[int, int]],
    shape: tuple[int, ...],
    labels: np.ndarray,
    confidence: np.ndarray,
) -> None:
    """Reduce padded planes [z_start, z_start + count) to labels and confidence, then clear
    their ring slots. Planes in the padding are dropped; Y and X padding is cropped."""
    import torch

    (z_pad, _), (y_pad, _), (x_pad, _) = pads
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
                blended = accumulator[:, kept, crop_y, crop_x] / weights[kept, crop_y, crop_x]
                best, winner = blended.max(dim=0)
                out = slice(out_start + keep_from, out_start + keep_to)
                labels[out] = winner.to(dtype=torch.uint8).cpu().numpy()
                confidence[out] = best.half().cpu().numpy()
        accumulator[:, ring] = 0
        weights[ring] = 0
