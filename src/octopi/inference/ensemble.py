"""An ensemble of networks for inference: loading from model cards, test-time augmentation
in the XY plane, and softmax probabilities averaged over members and augmentations."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from octopi.class_match import class_labels
from octopi.errors import InputError
from octopi.models.model_card import ModelCard

if TYPE_CHECKING:
    import torch

__all__ = ["check_cards_agree", "load_ensemble", "mean_probabilities", "tta_transforms"]

Transform = Callable[["torch.Tensor"], "torch.Tensor"]


# --------------------------------------------------------------------------- models


def load_ensemble(
    model_configs: Sequence[str | Path],
    weights: Sequence[str | Path],
    device: torch.device | str = "cpu",
) -> tuple[ModelCard, list[torch.nn.Module]]:
    """Load one network per (model_config.yaml, weights) pair, in eval mode on ``device``,
    its stride-1 transposed convolutions swapped for plain ones (for prediction only:
    :mod:`octopi.models.inference_layers`).

    Every card must name the same classes (names and labels) and voxel size, because the
    members' probabilities are averaged per channel. Returns the first card and the models.
    """
    from octopi.models.inference_layers import swap_for_inference
    from octopi.models.registry import load_model

    if not model_configs:
        raise InputError("no model config given: pass --model-config model_config.yaml")
    if len(model_configs) != len(weights):
        raise InputError(
            f"{len(model_configs)} model config(s) but {len(weights)} weight file(s); give one "
            "--model-weights file per --model-config, in the same order"
        )
    cards = [ModelCard.load(path) for path in model_configs]
    check_cards_agree(cards, model_configs)
    models = []
    for card, path in zip(cards, weights, strict=True):
        model = load_model(card, path, device=str(device))
        model.eval()
        swap_for_inference(model)  # exact, faster layers; these models are never trained
        models.append(model)
    return cards[0], models


def check_cards_agree(cards: Sequence[ModelCard], paths: Sequence[str | Path]) -> None:
    """Raise ``InputError`` unless all cards share classes (name, label) and voxel size."""
    first, first_path = cards[0], paths[0]
    first_classes = class_labels(first.classes)
    for card, path in zip(cards[1:], paths[1:], strict=True):
        classes = class_labels(card.classes)
        if classes != first_classes:
            raise InputError(
                f"ensemble members disagree on classes: {first_path} has {first_classes}, "
                f"{path} has {classes}; only models trained on the same classes can be averaged"
            )
        if not math.isclose(card.voxel_size_angstrom, first.voxel_size_angstrom):
            raise InputError(
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


def mean_probabilities(
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
