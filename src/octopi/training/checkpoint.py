"""Training checkpoints: atomic saving, loading and RNG states.

A checkpoint (``checkpoint.pt``) is a dict of plain data and tensors, loadable with
``torch.load(weights_only=True)``:

``format``, ``epoch`` (last finished, 1-based), ``model``, ``ema`` (or None), ``optimizer``,
``schedule``, ``scaler`` (or None), ``rng``, ``best_metric``, ``best_epoch``,
``bad_validations`` (validations since the last improvement), ``stopped_early``, ``finished``,
``history`` (one dict per epoch: the rows of ``epochs.csv``), ``config`` (the resolved
training config as plain data), ``tracking_run_id`` and ``octopi_version``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from octopi.errors import InputError
from octopi.input_files import load_torch_file
from octopi.io_utils import atomic_path

CHECKPOINT_FORMAT = 1


def save_torch(path: str | Path, data: Any) -> None:
    """``torch.save`` to ``path`` atomically (temp file in the same folder, then rename)."""
    with atomic_path(path) as temp:
        torch.save(data, temp)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`save_torch` onto the CPU.

    Raises :class:`~octopi.errors.InputError` naming the file when it is not one.
    """
    fix = "delete it to start over, or train into a new --output"
    state = load_torch_file(path, "training checkpoint", fix)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"{path} is not an octopi training checkpoint (format {CHECKPOINT_FORMAT}); {fix}"
        )
    return state


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()``."""
    return {name: value.detach().cpu().clone() for name, value in module.state_dict().items()}


def capture_rng_state() -> dict:
    """Python, NumPy and torch (CPU and every CUDA device) RNG states as plain data."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "python": [version, list(python_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping) -> None:
    """Undo :func:`capture_rng_state`."""
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from (``seed``, ``epoch``): the same on every run and resume."""
    return int(np.random.SeedSequence([seed % 2**63, epoch]).generate_state(2, np.uint64)[0] >> 1)


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed Python, NumPy and torch for ``epoch``, so an epoch's randomness never depends on
    whether the run was resumed."""
    value = epoch_seed(seed, epoch)
    random.seed(value)
    np.random.seed(value % 2**32)  # noqa: NPY002 - third-party code still draws from it
    torch.manual_seed(value)
