"""Checkpoint helpers of the trainer: RNG state, epoch seeds, fresh weights."""

from __future__ import annotations

import random

import numpy as np
import torch

from octopi.config import UnetConfig
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import build_model
from octopi.training.checkpoint import (
    capture_rng_state,
    cpu_state_dict,
    epoch_seed,
    restore_rng_state,
)

TINY_ARCH = UnetConfig(channels=[8, 16, 32], strides=[2, 2])


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fresh_model_weights_depend_on_the_seed_only() -> None:
    card = ModelCard(
        architecture=TINY_ARCH,
        dim_in=16,
        classes=[ClassInfo(name="a", label=1, radius_angstrom=50)],
        voxel_size_angstrom=10,
        tomo_algorithms=["wbp"],
    )
    torch.manual_seed(1)
    first = cpu_state_dict(build_model(card))
    torch.manual_seed(1)
    assert states_equal(first, cpu_state_dict(build_model(card)))


def test_rng_state_round_trip() -> None:
    state = capture_rng_state()
    drawn = (random.random(), np.random.random(), torch.rand(1))  # noqa: NPY002
    restore_rng_state(state)
    again = (random.random(), np.random.random(), torch.rand(1))  # noqa: NPY002
    assert drawn[:2] == again[:2] and torch.equal(drawn[2], again[2])


def test_epoch_seeds_differ_and_repeat() -> None:
    assert epoch_seed(42, 1) == epoch_seed(42, 1)
    assert len({epoch_seed(42, e) for e in range(100)} | {epoch_seed(43, 1)}) == 101
    assert 0 <= epoch_seed(-5, 3) < 2**63
