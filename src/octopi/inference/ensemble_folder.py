"""A self-describing ensemble folder that ``segment`` accepts as one model.

Layout (``select-best`` writes one as ``STUDY/best_ensemble/``)::

    best_ensemble/
        ensemble.yaml            members (folder, slot, trial, value), the metric, and the
                                 calibration of the averaged probabilities (or null)
        member_<slot>/           model_config.yaml + best_model_weights.pth of each member

``octopi segment --model-config best_ensemble`` (or ``best_ensemble/ensemble.yaml``) averages
the members' softmax probabilities; no ``--model-weights`` then. The folder is built in a
temporary folder beside it and renamed into place, so a killed job never leaves a mix.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from octopi.config import Frozen
from octopi.errors import InputError
from octopi.input_files import read_yaml_mapping, validate_file
from octopi.models.model_card import Calibration

ENSEMBLE_FILE = "ensemble.yaml"
MODEL_FILES = ("model_config.yaml", "best_model_weights.pth")


class EnsembleMember(Frozen):
    """One member: its folder (relative to the ensemble folder) and where it came from."""

    folder: str
    slot: int | None = Field(default=None, description="study trial slot")
    trial_number: int | None = Field(default=None, description="Optuna trial number")
    value: float | None = Field(default=None, description="the trial's objective value")


class EnsembleCard(Frozen):
    """``ensemble.yaml``: the members whose probabilities are averaged, best first."""

    members: list[EnsembleMember] = Field(min_length=2)
    metric_name: str | None = Field(default=None, description="what ranked the members")
    calibration: Calibration | None = Field(
        default=None, description="per-class picking settings for the averaged probabilities"
    )

    def save(self, path: str | Path) -> None:
        from octopi.io_utils import atomic_write_yaml

        atomic_write_yaml(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> EnsembleCard:
        return validate_file(cls, read_yaml_mapping(path, "ensemble"), path, "ensemble")


@dataclass(frozen=True)
class ModelFiles:
    """What ``segment`` loads: one (card, weights) pair per member, and the calibration of an
    ensemble folder (None for models given one by one)."""

    model_configs: list[Path]
    weights: list[Path]
    calibration: Calibration | None = None


def ensemble_file(path: str | Path) -> Path | None:
    """``path``'s ensemble.yaml when ``path`` is an ensemble folder or that file; else None."""
    path = Path(path)
    if path.is_dir() and (path / ENSEMBLE_FILE).is_file():
        return path / ENSEMBLE_FILE
    return path if path.name == ENSEMBLE_FILE and path.is_file() else None


def resolve_model_files(
    model_configs: Sequence[str | Path], weights: Sequence[str | Path]
) -> ModelFiles:
    """The member files of an ensemble folder given as the only model config, or the given
    (config, weights) pairs. InputError for a broken folder or missing weights."""
    found = ensemble_file(model_configs[0]) if len(model_configs) == 1 else None
    if found is None:
        if not weights:
            raise InputError(
                "give --model-weights (one per --model-config), or an ensemble folder "
                f"(with {ENSEMBLE_FILE}) as --model-config"
            )
        return ModelFiles([Path(p) for p in model_configs], [Path(p) for p in weights])
    if weights:
        raise InputError(
            f"{found.parent} is an ensemble folder: its members' weights are inside; "
            "drop --model-weights"
        )
    card = EnsembleCard.load(found)
    folders = [found.parent / member.folder for member in card.members]
    configs, member_weights = ([f / name for f in folders] for name in MODEL_FILES)
    missing = [str(p) for p in configs + member_weights if not p.is_file()]
    if missing:
        raise InputError(f"ensemble {found} is incomplete: {', '.join(missing)} missing")
    return ModelFiles(configs, member_weights, card.calibration)


def write_ensemble_folder(
    folder: str | Path,
    sources: Sequence[tuple[Path, EnsembleMember]],
    metric_name: str | None,
) -> EnsembleCard:
    """Copy each source model folder (model_config.yaml + weights) into ``folder`` as its
    member's folder and write ensemble.yaml; replaces an older ensemble in ``folder``."""
    folder = Path(folder)
    temp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    for source, member in sources:
        (temp / member.folder).mkdir(parents=True)
        for name in MODEL_FILES:
            shutil.copyfile(source / name, temp / member.folder / name)
    card = EnsembleCard(members=[member for _, member in sources], metric_name=metric_name)
    card.save(temp / ENSEMBLE_FILE)
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    temp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return card
