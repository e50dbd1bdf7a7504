"""Prose of the config reference that the config models do not carry themselves.

- :data:`FALLBACK_DESCRIPTIONS`: descriptions of fields whose ``Field()`` and model docstring
  give none;
- :data:`CHECKS`: the cross-field checks (model validators) of each model;
- :data:`COMMAND_MODELS`: the commands that build the models outside the study config.
"""

from __future__ import annotations

# Descriptions of fields whose Field() carries none (the config model's own wins when set).
FALLBACK_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "CopickSource": {"path": "copick project config JSON"},
    "TargetSpec": {
        "name": "segmentation name",
        "user_id": "copick user ID",
        "session_id": "copick session ID",
    },
    "PickSpec": {"user_id": "copick user ID", "session_id": "copick session ID"},
    "DataConfig": {"target": "segmentation the networks learn (`octopi create-targets`)"},
    "TrainingConfig": {
        "num_epochs": "training epochs (per trial in a study)",
        "val_interval": "validate every N epochs (and at the last epoch)",
        "lr": "peak AdamW learning rate (linear warm-up, then cosine decay)",
        "weight_decay": "AdamW weight decay",
        "warmup_epochs": "epochs of linear learning-rate warm-up",
        "best_metric": "checkpoint (and trial) metric: `avg_f1` or `fBetaN`, e.g. `fBeta4`",
        "ncache_tomos": "tomograms cached per epoch (SmartCache window)",
        "background_ratio": "background / foreground crop ratio (`1.0` → 50/50)",
        "loss": "segmentation loss",
        "augmentation": "random augmentation of training crops",
        "seed": "random seed (crops, initialisation, augmentation)",
        "amp": "mixed precision: `auto` (bf16 where supported), `bf16`, `fp16`, `off`",
    },
    "LossConfig": {
        "name": "loss function (MONAI)",
        "focal_gamma": "focal exponent (focal losses only)",
    },
    "AugmentationConfig": {
        "flip_probability": "probability of a random flip per axis",
        "gaussian_noise_std": "standard deviation of added Gaussian noise (z-scored units)",
    },
    "SearchConfig": {
        "model_type": "model family the study explores",
        "num_trials": "trial slots `0 … N-1`; may grow in a running study",
        "random_seed": "sampler seed (slot `i` uses seed + i)",
        "study_name": "Optuna study and MLflow experiment name",
        "pruner": "stop unpromising trials early: `median`, `halving` or `none`",
    },
    "InferenceConfig": {
        "overlap": "overlap of neighbouring windows (fraction of the window)",
        "window_batch_size": "windows per forward pass",
        "amp": "mixed precision: `auto`, `bf16`, `fp16`, `off`",
    },
    "EvaluationConfig": {
        "distance_fraction": "a pick matches a true particle within this × its radius",
        "beta": "beta of the weighted F-beta score",
        "class_weights": "`{object: weight}` of the weighted F-beta; objects not listed weigh 1",
    },
    "TrialResources": {
        "gpu": "GPUs per trial job (Snakemake resource `gpu`; Slurm `--gpus`)",
        "mem_mb": "memory per trial job (MB; Slurm `--mem`)",
        "runtime_minutes": "wall-time limit per trial job (minutes; Slurm `--time`)",
        "threads": "CPU threads per trial job (Slurm `--cpus-per-task`)",
        "retries": "reruns of a failed trial job; each resumes from `checkpoint.pt`",
    },
    "WorkflowConfig": {
        "data": "tomograms, targets and the run split",
        "training": "settings of every trial that the search does not draw",
        "search": "the Optuna study",
        "inference": "segmentation of the test runs by the best model",
        "localize": "picks from those segmentations",
        "evaluation": "scoring of the test picks",
        "trial_resources": "resources of each trial job (and of `evaluate_test`)",
        "create_targets": "null: the targets exist already; else make them first",
    },
    "UnetConfig": {
        "model_type": "discriminator",
        "channels": "feature maps per level",
        "strides": "downsampling between levels (one fewer than channels)",
        "num_res_units": "residual units per level",
        "dropout": "dropout probability",
    },
    "AttentionUnetConfig": {
        "model_type": "discriminator",
        "channels": "feature maps per level",
        "strides": "downsampling between levels (one fewer than channels)",
        "dropout": "dropout probability",
    },
    "SegResNetConfig": {
        "model_type": "discriminator",
        "init_filters": "feature maps of the first level (doubling per level)",
        "blocks_down": "residual blocks per encoder level",
        "dropout": "dropout probability",
    },
    "MedNeXtConfig": {
        "model_type": "discriminator",
        "init_filters": "feature maps of the first level",
        "blocks_down": "MedNeXt blocks per encoder level",
        "blocks_bottleneck": "blocks in the bottleneck",
        "expansion_ratio": "channel expansion inside a block",
        "kernel_size": "depthwise convolution kernel",
    },
    "DynUNetConfig": {"model_type": "discriminator"},
    "SwinUNETRConfig": {"model_type": "discriminator"},
    "SynthesizeConfig": {
        "output": "new project folder",
        "runs": "number of runs",
        "shape_zyx": "tomogram shape (Z, Y, X) in voxels",
        "voxel_size_angstrom": "voxel size (Å)",
        "seed": "random seed; same seed, same project",
        "picks": "user and session of the ground-truth picks",
        "run_prefix": "run names are `<prefix>_<i>`",
    },
    "TargetsConfig": {
        "configs": "copick project configs",
        "voxel_size_angstrom": "voxel size (Å) of the label volumes",
        "target": "segmentation to write",
        "picks": "picks to read",
        "run_ids": "runs to process; null → all",
    },
    "ImportConfig": {
        "config": "copick project config JSON",
        "input_dir": "folder of `.mrc` / `.rec` files (run names from file names)",
        "tomo_algorithm": "tomogram algorithm name to write",
        "output_voxel_size_angstrom": "resample to this voxel size; null → as in the header",
        "overwrite": "replace existing tomograms",
    },
}

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
