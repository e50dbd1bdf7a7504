"""Training: the loop (:func:`train_model`), losses, LR schedule and EMA, checkpoints.

Importing this package is cheap; ``train_model``, ``TrainResult`` and
``TrainingInterrupted`` load torch and MONAI on first access.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainResult", "TrainingInterrupted", "train_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from octopi.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
