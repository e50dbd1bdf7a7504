"""The configs a trial slot trains with, drawn once and kept in ``trials/<slot>/trial_config.yaml``.

:func:`configs_for_trial` draws the trial's architecture and training settings from the search
space (:func:`octopi.models.trial_sampling.suggest`), bounding crop × batch by the memory
of the device it trains on (:func:`device_memory_bytes`, bytes). A repeated slot reads the
stored file back so that its checkpoint's config still matches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import yaml

from octopi.config import ModelArchitecture, TrainingConfig, WorkflowConfig
from octopi.io_utils import atomic_write_yaml

TRIAL_CONFIG_NAME = "trial_config.yaml"


def device_memory_bytes(device: str | None = None) -> int | None:
    """Memory of the device a trial trains on: the CUDA device's total, else available RAM."""
    import psutil
    import torch

    from octopi.runtime import select_device

    chosen = select_device(device)
    if chosen.type == "cuda":
        return int(torch.cuda.get_device_properties(chosen).total_memory)
    return int(psutil.virtual_memory().available)


def configs_for_trial(
    trial: optuna.Trial,
    folder: Path,
    workflow: WorkflowConfig,
    overrides: dict[str, Any],
    device: str | None,
    memory_bytes: int | None,
) -> tuple[ModelArchitecture, TrainingConfig]:
    """The trial's architecture and training settings.

    A repeated slot reuses ``trial_config.yaml`` so the checkpoint's config matches even if
    the device (hence the memory bound) changed; otherwise draw from the search space.
    ``memory_bytes`` None → :func:`device_memory_bytes` of ``device``.
    """
    from pydantic import TypeAdapter

    from octopi.models.trial_sampling import suggest

    path = folder / TRIAL_CONFIG_NAME
    if path.is_file():
        stored = yaml.safe_load(path.read_text()) or {}
        if stored.get("params") == dict(trial.params) and trial.params:
            architecture = TypeAdapter(ModelArchitecture).validate_python(stored["architecture"])
            return architecture, TrainingConfig.model_validate(stored["training"])
    if memory_bytes is None:
        memory_bytes = device_memory_bytes(device)
    architecture, training = suggest(
        trial, workflow.search.model_type, workflow, memory_bytes, overrides=overrides
    )
    atomic_write_yaml(
        path,
        {
            "trial_number": trial.number,
            "params": dict(trial.params),
            "user_attrs": dict(trial.user_attrs),
            "architecture": architecture.model_dump(mode="json"),
            "training": training.model_dump(mode="json"),
        },
    )
    return architecture, training
