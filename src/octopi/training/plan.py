"""Everything a training run checks and decides before it writes a file.

:func:`plan_training` resolves the run split, the classes, the model card and the initial
network (new, or fine-tuned from a model card and weights), loads the validation ground truth
and inspects ``output_dir``: a checkpoint of the same resolved config is resumed, one of a
different config is refused with the differences listed. Any bad input raises here, so
nothing is written into ``output_dir`` for a run that cannot start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from octopi.class_match import class_labels
from octopi.config import (
    DataConfig,
    EvaluationConfig,
    Frozen,
    InferenceConfig,
    LocalizeConfig,
    ModelArchitecture,
    TrainingConfig,
    UnetConfig,
)
from octopi.config.history import with_settings_added_later
from octopi.config_diff import config_differences, listing
from octopi.data.copick_io import CopickDataError, CopickProjects
from octopi.data.split import RunSplit, discover_runs, split_runs
from octopi.errors import InputError, OutputExistsError
from octopi.input_files import absolute_path, read_yaml_mapping
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import build_model, check_patch_size, load_model
from octopi.training.checkpoint import load_checkpoint

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "train_config.yaml"


class TrainRunConfig(Frozen):
    """The fully resolved settings of one training run (``train_config.yaml``).

    Two runs with equal resolved configs train the same model; resuming requires equality.
    """

    data: DataConfig
    training: TrainingConfig
    architecture: ModelArchitecture = UnetConfig()
    inference: InferenceConfig = InferenceConfig()
    localize: LocalizeConfig = LocalizeConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    split: dict[str, list[str]] = Field(description="run keys: train, validate, test")
    init_model_config: Path | None = Field(default=None, description="fine-tuning: card")
    init_weights: Path | None = Field(default=None, description="fine-tuning: weights")


@dataclass
class TrainingPlan:
    """What :func:`plan_training` resolved. ``model`` is on the CPU, freshly initialised (or
    loaded for fine-tuning); ``ground_truth`` maps validation run → class → (M, 3) (x, y, z) Å;
    ``checkpoint`` is the state to resume from (None: start at epoch 1)."""

    projects: CopickProjects
    split: RunSplit
    card: ModelCard
    model: Any
    config: TrainRunConfig
    ground_truth: dict[str, dict[str, np.ndarray]]
    checkpoint: dict | None

    @property
    def resolved(self) -> dict:
        return self.config.model_dump(mode="json")


def plan_training(
    data: DataConfig,
    training: TrainingConfig,
    architecture: ModelArchitecture | None,
    output_dir: Path,
    *,
    inference: InferenceConfig,
    localize: LocalizeConfig,
    evaluation: EvaluationConfig,
    split: RunSplit | None = None,
    init_card: ModelCard | None = None,
    init_weights: Path | None = None,
    init_card_path: Path | None = None,
) -> TrainingPlan:
    """Check every input and resolve the run; see the module docstring. Writes nothing."""
    import torch

    output_dir = Path(output_dir)
    _check_request(output_dir, architecture, init_card, init_weights)
    data = _absolute_paths(data)
    projects = CopickProjects(data.configs)
    usable = discover_runs(projects, data).usable
    if split is None:
        split = split_runs(usable, data, projects)
    _check_split(split, usable, data)
    classes = project_classes(projects)
    card = _model_card(data, training, architecture, classes, init_card)

    with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed alone
        torch.manual_seed(training.seed)
        fine_tuning = init_card is not None and init_weights is not None
        model = load_model(init_card, init_weights) if fine_tuning else build_model(card)

    config = TrainRunConfig(
        data=data,
        training=training,
        architecture=card.architecture,
        inference=inference,
        localize=localize,
        evaluation=evaluation,
        split={"train": split.train, "validate": split.validate, "test": split.test},
        init_model_config=_resolve(init_card_path),
        init_weights=_resolve(init_weights),
    )
    ground_truth = load_ground_truth(projects, split.validate, classes, data)
    checkpoint = check_output_dir(output_dir, config.model_dump(mode="json"))
    return TrainingPlan(projects, split, card, model, config, ground_truth, checkpoint)


def _check_request(
    output_dir: Path,
    architecture: ModelArchitecture | None,
    init_card: ModelCard | None,
    init_weights: Path | None,
) -> None:
    """Refuse an output that is a file and half-given or contradictory fine-tuning options."""
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputExistsError(f"--output {output_dir} exists and is not a folder; choose another")
    if (init_card is None) != (init_weights is None):
        raise InputError(
            "fine-tuning needs both --model-config and --model-weights (a model_config.yaml "
            "and its best_model_weights.pth from an earlier training)"
        )
    if (
        init_card is not None
        and architecture is not None
        and architecture != init_card.architecture
    ):
        raise InputError(
            "fine-tuning takes the architecture from --model-config; drop the architecture "
            "options (--model-type, --channels, --strides, --res-units)"
        )


def _model_card(
    data: DataConfig,
    training: TrainingConfig,
    architecture: ModelArchitecture | None,
    classes: list[ClassInfo],
    init_card: ModelCard | None,
) -> ModelCard:
    """The card of the network to train: a new one, or the fine-tuned card's architecture
    and normalisation (checked against this data)."""
    if init_card is not None:
        check_fine_tuning(init_card, classes, data.voxel_size_angstrom, training.dim_in)
        architecture = init_card.architecture
    card = ModelCard(
        architecture=architecture or UnetConfig(),
        dim_in=training.dim_in,
        classes=classes,
        voxel_size_angstrom=data.voxel_size_angstrom,
        tomo_algorithms=list(data.tomo_algorithms),
        target=data.target,
        **({"normalisation": init_card.normalisation} if init_card is not None else {}),
    )
    check_patch_size(card)
    return card


def _resolve(path: Path | None) -> Path | None:
    return None if path is None else Path(path).resolve()


def _absolute_paths(data: DataConfig) -> DataConfig:
    """Config paths made absolute, so a rerun from another folder resumes the same run."""
    sources = [s.model_copy(update={"path": absolute_path(s.path)}) for s in data.configs]
    return data.model_copy(update={"configs": sources})


def _check_split(split: RunSplit, usable: list[str], data: DataConfig) -> None:
    lacking = [key for key in [*split.train, *split.validate] if key not in usable]
    if lacking:
        raise CopickDataError(
            f"runs {', '.join(lacking)} of the split lack tomograms "
            f"{', '.join(data.tomo_algorithms)} at voxel size {data.voxel_size_angstrom:g} or "
            f"the target {data.target}; usable runs: {', '.join(usable)}"
        )
    if not split.train or not split.validate:
        raise InputError(
            f"training needs at least one training and one validation run; the split has "
            f"{len(split.train)} training and {len(split.validate)} validation runs"
        )
    overlap = sorted(set(split.train) & set(split.validate))
    if overlap:
        raise InputError(f"runs both in training and validation: {', '.join(overlap)}")


def project_classes(projects: CopickProjects) -> list[ClassInfo]:
    """The particle objects of the project(s) as model classes (label ≥ 1, radius > 0 Å)."""
    objects = projects.objects()
    if not objects:
        raise CopickDataError(
            "the copick project defines no particle objects (is_particle: true); "
            "there is nothing to train on"
        )
    bad = [o.name for o in objects if o.label < 1 or not o.radius_angstrom > 0]
    if bad:
        raise CopickDataError(
            f"particle objects {', '.join(bad)} need a label ≥ 1 and a radius > 0 Å in the "
            "copick config; fix pickable_objects there"
        )
    return [
        ClassInfo(name=o.name, label=o.label, radius_angstrom=o.radius_angstrom) for o in objects
    ]


def check_fine_tuning(
    init_card: ModelCard, classes: list[ClassInfo], voxel_size_angstrom: float, dim_in: int
) -> None:
    """Raise ``InputError`` unless a model of ``init_card`` can be fine-tuned on this data."""
    theirs, ours = class_labels(init_card.classes), class_labels(classes)
    if theirs != ours:
        raise InputError(
            f"--model-config classes {theirs} differ from the copick project's particle "
            f"objects {ours}; fine-tune on a project with the same objects and labels, or "
            "train a new model"
        )
    if not math.isclose(init_card.voxel_size_angstrom, voxel_size_angstrom):
        raise InputError(
            f"--model-config was trained at voxel size {init_card.voxel_size_angstrom:g} Å but "
            f"--voxel-size is {voxel_size_angstrom:g} Å; fine-tune at "
            f"{init_card.voxel_size_angstrom:g} Å (or resample the tomograms)"
        )
    check_patch_size(init_card, dim_in)


def load_ground_truth(
    projects: CopickProjects, run_keys: list[str], classes: list[ClassInfo], data: DataConfig
) -> dict[str, dict[str, np.ndarray]]:
    """Validation picks: run → class → (M, 3) (x, y, z) Å from ``data.ground_truth``.

    Raises ``CopickDataError`` when no validation run has any pick: the validation metric
    would be 0 forever.
    """
    truth = {
        key: {
            c.name: projects.load_picks_angstrom(projects.resolve(key), c.name, data.ground_truth)
            for c in classes
        }
        for key in run_keys
    }
    if not any(len(points) for run in truth.values() for points in run.values()):
        spec = data.ground_truth
        raise CopickDataError(
            f"the validation runs {', '.join(run_keys)} have no ground-truth picks of user "
            f"{spec.user_id!r}, session {spec.session_id!r}; point --gt-info at the picks to "
            "score against"
        )
    return truth


def check_output_dir(output_dir: Path, resolved: dict) -> dict | None:
    """The checkpoint in ``output_dir`` to resume from, or None for a fresh start.

    Raises ``FileExistsError`` listing the differences when ``output_dir`` holds a checkpoint
    (or a ``train_config.yaml``) of a different resolved config.
    """
    checkpoint_path = output_dir / CHECKPOINT_NAME
    config_path = output_dir / CONFIG_NAME
    if checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        _refuse_if_different(output_dir, checkpoint_path, state.get("config", {}), resolved)
        return state
    if config_path.is_file():
        stored = read_yaml_mapping(config_path, "training config", allow_empty=True)
        stored.pop("command", None)
        _refuse_if_different(output_dir, config_path, stored, resolved)
    return None


def _refuse_if_different(output_dir: Path, source: Path, stored: dict, resolved: dict) -> None:
    differences = config_differences(with_settings_added_later(stored), resolved)
    if not differences:
        return
    raise OutputExistsError(
        f"--output {output_dir} holds a training run with different settings ({source.name}):"
        f"\n{listing(differences)}\nchoose a new --output for these settings, or rerun with the "
        f"original ones to resume; nothing was written"
    )
