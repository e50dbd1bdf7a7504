"""Prose of the config reference that the config models do not carry themselves.

- :data:`CHECKS`: the cross-field checks (model validators) of each model;
- :data:`COMMAND_MODELS`: the commands that build the models outside the study config.
"""

from __future__ import annotations

# Cross-field checks (model validators), by model; field validators show as constraints.
CHECKS: dict[str, list[str]] = {
    "DataConfig": [
        "`data_split` ratios lie strictly between 0 and 1 and sum to less than 1",
        "`train_run_ids` and `validate_run_ids`: both or neither, non-empty, no overlap",
        "several `configs` need distinct `session_name`s",
    ],
    "UnetConfig": ["`strides` has one entry fewer than `channels`"],
    "LocalizeConfig": ["`max_size_fraction` (when set) ≥ `min_size_fraction`"],
    "AttentionUnetConfig": ["`strides` has one entry fewer than `channels`"],
    "DynUNetConfig": ["`strides` has one entry per `filters` entry"],
    "TrainingConfig": ["`val_interval` ≤ `num_epochs`"],
    "TargetSpec": ["names use letters, digits, `-` and `.` only (copick separates with `_`)"],
    "PickSpec": ["IDs use letters, digits, `-` and `.` only (copick separates with `_`)"],
}

# Models that single commands build (not part of the study config).
COMMAND_MODELS: dict[str, str] = {
    "UnetConfig": "`octopi train --model-type Unet` (`--channels`, `--strides`, `--res-units`); "
    "the `architecture` of `model_config.yaml`",
    "AttentionUnetConfig": "`octopi train --model-type AttentionUnet`; `model_config.yaml`",
    "SegResNetConfig": "`octopi train --model-type SegResNet`; `model_config.yaml`",
    "MedNeXtConfig": "`octopi train --model-type MedNeXt`; `model_config.yaml`",
    "DynUNetConfig": "`octopi train --model-type DynUNet`; `model_config.yaml`",
    "SwinUNETRConfig": "`octopi train --model-type SwinUNETR`; `model_config.yaml`",
    "NormalisationConfig": "the `normalisation` of `model_config.yaml` (written by `octopi train`)",
    "SynthesizeConfig": "`octopi synthesize` (and `make demo`)",
    "ImportConfig": "`octopi import`",
    "TargetsConfig": "`octopi create-targets`; the study's optional `create_targets` section",
}
