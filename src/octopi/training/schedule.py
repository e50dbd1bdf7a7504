"""Learning-rate schedule (linear warm-up, then cosine decay) and an EMA of the weights.

The schedule is a pure function of training progress in epochs, so resuming at any epoch
reproduces it exactly without stored state; its ``state_dict`` only records its settings so
that a checkpoint from another schedule is refused.

Why not the library versions (issue 15): ``monai.optimizers.WarmupCosineSchedule`` is a
``LambdaLR`` counted in optimizer steps, whose state is the step count. Our steps per epoch
follow the cached tomograms and a stop can cut an epoch short (:mod:`octopi.training.stop`),
so a step count does not identify a point of training, and resuming a cut epoch would need
it stored and replayed; a function of fractional epochs resumes bit-identically from the
checkpoint's (epoch, step) alone. ``torch.optim.swa_utils.AveragedModel`` with an EMA
``multi_avg_fn`` has a constant decay (no warm-up ``(1 + n) / (10 + n)``, which keeps the
first validations from averaging in the random initialisation) and wraps the model in
another module, which would change the state-dict keys of every checkpoint and weights file
already written. Both classes are short and tested for exact resume
(tests/unit/test_schedule.py, test_checkpoint.py).
"""

from __future__ import annotations

import copy
import math
from typing import get_args

import torch

from octopi.config import LrDecay
from octopi.config.history import SETTINGS_ADDED_LATER
from octopi.errors import InputError

LR_DECAYS: tuple[str, ...] = get_args(LrDecay)
# Checkpoints written before the decay was a setting used this one.
_DECAY_BEFORE_CHOICE = SETTINGS_ADDED_LATER["training.lr_decay"]


class WarmupCosineSchedule:
    """``lr(p) = base_lr * factor(p)`` for progress ``p`` in epochs (0 … num_epochs).

    factor rises linearly to 1 over ``warmup_epochs``, then follows a half cosine:

    - ``cosine_to_zero``: over the ``num_epochs - warmup_epochs`` epochs left, reaching 0 at
      ``num_epochs``;
    - ``cosine_over_run``: over ``num_epochs`` epochs from the end of the warm-up, as octopi
      1.7.0's ``CosineAnnealingLR(T_max=num_epochs)``, so the last epochs keep a rate above 0
      (0.15 at 20 epochs with 5 of warm-up; mean over the run 0.61 against 0.50).

    Each step uses the progress at its midpoint, so the first step has a small non-zero rate
    and the last a small non-zero one (never exactly 0).
    """

    def __init__(
        self,
        base_lr: float,
        warmup_epochs: int,
        num_epochs: int,
        decay: LrDecay,
    ):
        if base_lr <= 0 or num_epochs < 1 or warmup_epochs < 0 or decay not in LR_DECAYS:
            raise ValueError(
                f"bad schedule: base_lr {base_lr}, warmup_epochs {warmup_epochs}, "
                f"num_epochs {num_epochs}, decay {decay!r} (need lr > 0, epochs >= 1, "
                f"warm-up >= 0, decay one of {', '.join(LR_DECAYS)})"
            )
        self.base_lr = float(base_lr)
        self.warmup_epochs = int(warmup_epochs)
        self.num_epochs = int(num_epochs)
        self.decay = decay

    def factor(self, progress_epochs: float) -> float:
        """Multiplier of the base rate at ``progress_epochs`` (epochs done, fractional)."""
        p = min(max(progress_epochs, 0.0), float(self.num_epochs))
        if self.warmup_epochs and p < self.warmup_epochs:
            return p / self.warmup_epochs
        span = self.num_epochs
        if self.decay == "cosine_to_zero":
            span -= self.warmup_epochs
        if span <= 0:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (p - self.warmup_epochs) / span))

    def lr(self, epoch_index: int, step: int, steps_per_epoch: int) -> float:
        """Rate of step ``step`` (0-based) of 0-based epoch ``epoch_index``."""
        progress = epoch_index + (step + 0.5) / max(steps_per_epoch, 1)
        return self.base_lr * self.factor(progress)

    def apply(
        self, optimizer: torch.optim.Optimizer, epoch_index: int, step: int, steps_per_epoch: int
    ) -> float:
        """Set every parameter group of ``optimizer`` to this step's rate; return it."""
        rate = self.lr(epoch_index, step, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = rate
        return rate

    def state_dict(self) -> dict:
        return {
            "base_lr": self.base_lr,
            "warmup_epochs": self.warmup_epochs,
            "num_epochs": self.num_epochs,
            "decay": self.decay,
        }

    def load_state_dict(self, state: dict) -> None:
        """Check a stored schedule against this one (the schedule itself is stateless); a
        state without ``decay`` (written before it was a setting) had ``cosine_to_zero``."""
        state = {"decay": _DECAY_BEFORE_CHOICE, **state}
        if state != self.state_dict():
            raise InputError(
                f"checkpoint was trained with learning-rate schedule {state}, this run asks for "
                f"{self.state_dict()}; use a new --output or the original settings"
            )


class ModelEMA:
    """Exponential moving average of a model's weights.

    After each optimiser step: ``ema = d * ema + (1 - d) * weights`` for floating-point
    parameters and buffers (others are copied), with ``d = min(decay, (1 + n) / (10 + n))``
    after ``n`` earlier updates. The ramp keeps the average from clinging to the random
    initial weights in short runs; from ~2000 updates on ``d`` is ``decay`` (0.995).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie strictly between 0 and 1, got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = self.current_decay()
        model_state = model.state_dict()
        for name, average in self.module.state_dict().items():
            value = model_state[name].detach()
            if average.dtype.is_floating_point:
                average.mul_(decay).add_(value.to(average.dtype), alpha=1.0 - decay)
            else:
                average.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
