"""Segmentation losses, built by name from :class:`~octopi.config.LossConfig`.

Every loss takes logits ``(B, C, D, H, W)`` (any float dtype; scored in float32) and integer
labels ``(B, 1, D, H, W)`` with values in ``0..C-1`` (0 is background), applies a softmax over
the channels and compares against the one-hot labels. MONAI's implementations are used where
MONAI has the loss; the focal Tversky family is written here because MONAI has none, and the
class-weighted cross-entropy (``weighted_ce``, alone or added to Tversky as ``tversky_ce``)
wraps torch's: particle voxels weigh ``ce_foreground_weight`` against background 1, as in the
first-place CZII solution (weight 256), so that the few voxels of small and rare particles
are not drowned by background; ``tversky_balanced_ce`` also balances the particle classes
against each other by their voxel counts in each batch.
"""

from __future__ import annotations

from typing import get_args

import torch

from octopi.config import LossConfig, LossName
from octopi.models.monai_import import import_monai

import_monai()  # MONAI without its import-everything start-up
from monai.losses import DiceCELoss, FocalLoss, TverskyLoss  # noqa: E402

LOSS_NAMES: tuple[str, ...] = get_args(LossName)


def tversky_beta(config: LossConfig) -> float:
    """The false-negative weight: ``tversky_beta`` or, when unset, ``1 - tversky_alpha``."""
    return config.tversky_beta if config.tversky_beta is not None else 1.0 - config.tversky_alpha


def build_loss(config: LossConfig) -> torch.nn.Module:
    """The loss module named by ``config.name``; see the module docstring for shapes."""
    alpha, beta = config.tversky_alpha, tversky_beta(config)
    if config.name == "tversky":
        inner: torch.nn.Module = _tversky(alpha, beta)
    elif config.name == "focal_tversky":
        inner = FocalTverskyLoss(alpha=alpha, beta=beta, gamma=config.focal_gamma)
    elif config.name == "weighted_focal_tversky":
        inner = FocalTverskyLoss(
            alpha=alpha, beta=beta, gamma=config.focal_gamma, inverse_frequency_weights=True
        )
    elif config.name == "focal":
        inner = FocalLoss(
            include_background=True, to_onehot_y=True, gamma=config.focal_gamma, use_softmax=True
        )
    elif config.name == "dice_ce":
        inner = DiceCELoss(include_background=True, to_onehot_y=True, softmax=True)
    elif config.name == "weighted_ce":
        inner = WeightedCrossEntropyLoss(config.ce_foreground_weight)
    elif config.name == "tversky_ce":
        inner = SumOfLosses(
            _tversky(alpha, beta), WeightedCrossEntropyLoss(config.ce_foreground_weight)
        )
    elif config.name == "tversky_balanced_ce":
        inner = SumOfLosses(
            _tversky(alpha, beta),
            WeightedCrossEntropyLoss(config.ce_foreground_weight, config.ce_class_balance),
        )
    else:  # pragma: no cover - LossConfig's Literal rejects other names first
        raise ValueError(f"unknown loss {config.name!r}; choose one of {', '.join(LOSS_NAMES)}")
    return Float32Loss(inner)


def _tversky(alpha: float, beta: float) -> torch.nn.Module:
    # As the published octopi: background included, so empty crops still teach "nothing here".
    return TverskyLoss(
        include_background=True, to_onehot_y=True, softmax=True, alpha=alpha, beta=beta
    )


class Float32Loss(torch.nn.Module):
    """Scores logits from an autocast (bf16 / fp16) region in float32."""

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), labels)


def class_weights(voxel_counts: torch.Tensor) -> torch.Tensor:
    """Inverse-frequency weights (C,) from per-class voxel counts (C,), averaging to 1.

    A class with no voxels gets the smallest weight of the classes present, so a rare class
    missing from one batch is not pushed towards "never predict me" by a huge weight.
    """
    present = voxel_counts > 0
    if not bool(present.any()):
        return torch.ones_like(voxel_counts)
    inverse = torch.where(present, 1.0 / voxel_counts.clamp_min(1.0), 0.0)
    weights = torch.where(present, inverse, inverse[present].min())
    return weights * (len(weights) / weights.sum())


class FocalTverskyLoss(torch.nn.Module):
    """Focal Tversky loss (Abraham & Khan 2019): ``sum_c w_c (1 - TI_c) ** (1 / gamma) / C``.

    ``TI_c = (TP + s) / (TP + alpha FP + beta FN + s)`` per class c (background included), with
    soft counts summed over the whole batch, so a class absent from one crop does not score 0.
    ``gamma`` > 1 strengthens the gradient of classes that are nearly right (small, rare
    particles). Weights ``w_c`` are 1, or with ``inverse_frequency_weights`` the
    :func:`class_weights` of the batch's label counts.
    """

    def __init__(
        self,
        alpha: float,
        beta: float,
        gamma: float,
        inverse_frequency_weights: bool = False,
        smooth: float = 1e-5,
    ):
        super().__init__()
        self.alpha, self.beta, self.smooth = alpha, beta, smooth
        # gamma 0 would divide by zero; exponent 1 is the plain Tversky loss.
        self.exponent = 1.0 / gamma if gamma > 0 else 1.0
        self.inverse_frequency_weights = inverse_frequency_weights

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n_classes = logits.shape[1]
        probs = torch.softmax(logits.float(), dim=1)
        onehot = torch.nn.functional.one_hot(labels[:, 0].long(), n_classes)
        onehot = onehot.movedim(-1, 1).to(probs.dtype)
        dims = [0, *range(2, probs.ndim)]
        tp = (probs * onehot).sum(dims)
        fp = (probs * (1 - onehot)).sum(dims)
        fn = ((1 - probs) * onehot).sum(dims)
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        # clamp: (1 - TI) ** (1 / gamma) has an infinite gradient at TI = 1.
        per_class = (1.0 - index).clamp_min(1e-6) ** self.exponent
        if not self.inverse_frequency_weights:
            return per_class.mean()
        return (class_weights(onehot.sum(dims)) * per_class).mean()


class WeightedCrossEntropyLoss(torch.nn.Module):
    """Voxel-wise cross-entropy, background weight 1, every particle class ``foreground_weight``.

    With ``class_balance`` b > 0, the particle classes' weights are ``foreground_weight``
    times the :func:`class_weights` of their voxel counts in the batch raised to b (then
    scaled to mean 1 over the particle classes): at b = 1 a class whose target balls are small
    (apo-ferritin: ~300 voxels at 10 Å against a ribosome's ~4,800) weighs as much in all as a
    large one; at b = 0.5 by the square root of the ratio.

    The mean is weighted (torch's ``CrossEntropyLoss(weight=...)``): the sum of weighted voxel
    losses over the sum of the voxels' weights, so the loss stays on one scale whatever the
    share of particle voxels in a batch.
    """

    def __init__(self, foreground_weight: float, class_balance: float = 0.0):
        super().__init__()
        self.foreground_weight = float(foreground_weight)
        self.class_balance = float(class_balance)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n_classes = logits.shape[1]
        targets = labels[:, 0].long()
        weight = torch.full(
            (n_classes,), self.foreground_weight, dtype=torch.float32, device=logits.device
        )
        if self.class_balance and n_classes > 1:
            counts = torch.bincount(targets.flatten(), minlength=n_classes).float()
            balance = class_weights(counts[1:]) ** self.class_balance
            weight[1:] *= balance * (len(balance) / balance.sum())
        weight[0] = 1.0
        return torch.nn.functional.cross_entropy(logits.float(), targets, weight=weight)


class SumOfLosses(torch.nn.Module):
    """The sum of several losses of the same (logits, labels)."""

    def __init__(self, *losses: torch.nn.Module):
        super().__init__()
        self.losses = torch.nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return sum(
            (loss(logits, labels) for loss in self.losses), torch.zeros((), device=logits.device)
        )
