"""``octopi train``: train or fine-tune one network (thin wrapper over ``train_model``).

The flags and defaults are those of the published tool's ``octopi train``; defaults live in the
config models, so every option here defaults to ``None`` and only overrides them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import click

from octopi.cli.options import (
    build,
    build_data_config,
    csv_numbers,
    data_options,
    default_help,
    friendly_errors,
    stop_on_signals_then_exit,
)
from octopi.config import (
    MODEL_TYPES,
    AttentionUnetConfig,
    LossConfig,
    LossName,
    LrDecay,
    PickSpec,
    TrainingConfig,
    UnetConfig,
    canonical_model_type,
)

_OFF = "off"  # --ema-decay off / --early-stopping-patience off
_MODEL_TYPES = ", ".join(MODEL_TYPES)
_LOSSES = get_args(LossName)


def _number_or_off(kind: type) -> Any:
    """A click callback: a number of ``kind``, or ``off``/``none`` (→ the ``_OFF`` marker)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        if value.strip().lower() in ("off", "none"):
            return _OFF
        try:
            return kind(value)
        except ValueError as error:
            raise click.BadParameter(
                f"expected a {kind.__name__} or 'off', got {value!r}"
            ) from error

    return parse


# The options of `octopi train` beyond the data options, in --help order.
_TRAIN_OPTIONS = [
    click.option("--output", type=click.Path(path_type=Path), default="results",
                 show_default=True, help="Folder for the model, checkpoints and logs."),
    click.option("--num-epochs", type=int,
                 help="Total training epochs." + default_help(TrainingConfig, "num_epochs")),
    click.option("--val-interval", type=int,
                 help="Validate every N epochs (and at the last)."
                 + default_help(TrainingConfig, "val_interval")),
    click.option("--batch-size", type=int,
                 help="Crops per training step." + default_help(TrainingConfig, "batch_size")),
    click.option("--lr", type=float,
                 help="Peak learning rate (AdamW)." + default_help(TrainingConfig, "lr")),
    click.option("--best-metric",
                 help="Checkpoint selection metric: avg_f1 or fBetaN (e.g. fBeta4)."
                 + default_help(TrainingConfig, "best_metric")),
    click.option("--ncache-tomos", type=int,
                 help="Tomograms cached per epoch (SmartCache window)."
                 + default_help(TrainingConfig, "ncache_tomos")),
    click.option("--tomo-batch-size", "tomo_batch_size", type=int, hidden=True,
                 help="Old name of --ncache-tomos."),
    click.option("--background-ratio", type=float,
                 help="Background / foreground crop ratio (1.0 → 50/50)."
                 + default_help(TrainingConfig, "background_ratio")),
    click.option("--tversky-alpha", type=float,
                 help="Tversky false-positive weight (beta = 1 - alpha)."
                 + default_help(LossConfig, "tversky_alpha")),
    click.option("--model-type",
                 help=f"Network: {_MODEL_TYPES} (case-insensitive).  [default: Unet]"),
    click.option("--channels", callback=csv_numbers(int),
                 help="UNet feature maps per level." + default_help(UnetConfig, "channels")),
    click.option("--strides", callback=csv_numbers(int),
                 help="UNet downsampling strides." + default_help(UnetConfig, "strides")),
    click.option("--res-units", type=int,
                 help="Residual units per UNet level."
                 + default_help(UnetConfig, "num_res_units")),
    click.option("--dim-in", type=int,
                 help="Crop edge in voxels (fine-tuning: the model's)."
                 + default_help(TrainingConfig, "dim_in")),
    click.option("--model-config", type=click.Path(path_type=Path),
                 help="Fine-tune: model_config.yaml of an earlier training."),
    click.option("--model-weights", type=click.Path(path_type=Path),
                 help="Fine-tune: its best_model_weights.pth."),
    click.option("--loss", type=click.Choice(_LOSSES),
                 help="Segmentation loss." + default_help(LossConfig, "name")),
    click.option("--ce-foreground-weight", type=float,
                 help="Cross-entropy weight of particle classes (background 1; weighted_ce, "
                 "tversky_ce, tversky_balanced_ce)."
                 + default_help(LossConfig, "ce_foreground_weight")),
    click.option("--ce-class-balance", type=float,
                 help="tversky_balanced_ce: how far the particle classes are balanced by their "
                 "voxels (1 fully, 0.5 by the square root)."
                 + default_help(LossConfig, "ce_class_balance")),
    click.option("--weight-decay", type=float,
                 help="AdamW weight decay." + default_help(TrainingConfig, "weight_decay")),
    click.option("--warmup-epochs", type=int,
                 help="Linear learning-rate warm-up, then cosine decay."
                 + default_help(TrainingConfig, "warmup_epochs")),
    click.option("--lr-decay", type=click.Choice(get_args(LrDecay)),
                 help="Learning-rate decay after the warm-up: a half cosine over the whole "
                 "run (octopi 1.7.0's, ends above 0) or over the epochs left (ends at 0)."
                 + default_help(TrainingConfig, "lr_decay")),
    click.option("--ema-decay", callback=_number_or_off(float),
                 help="EMA of the weights (validated and saved), or off."
                 + default_help(TrainingConfig, "ema_decay")),
    click.option("--early-stopping-patience", callback=_number_or_off(int),
                 help="Stop after N validations without improvement, or off."
                 + default_help(TrainingConfig, "early_stopping_patience")),
    click.option("--seed", type=int,
                 help="Random seed." + default_help(TrainingConfig, "seed")),
    click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]),
                 help="Mixed precision." + default_help(TrainingConfig, "amp")),
    click.option("--tracking-uri",
                 help="MLflow tracking URI, or none.  [default: sqlite:///<output>/mlflow.db]"),
    click.option("--gt-info",
                 help="Ground-truth picks for validation: user_id,session_id."
                 "  [default: curation,0]"),
]  # fmt: skip


def _training_options(command: Any) -> Any:
    for option in reversed(_TRAIN_OPTIONS):
        command = option(command)
    return command


@click.command()
@data_options
@_training_options
@friendly_errors
def train(output, model_config, model_weights, tracking_uri, gt_info, **values):
    """Train a 3D segmentation network (or fine-tune one) on copick tomograms and targets.

    Rerunning the same command with the same --output resumes from the last epoch.
    """
    from octopi.config import EvaluationConfig, InferenceConfig, LocalizeConfig
    from octopi.models.model_card import ModelCard
    from octopi.runtime import configure_threads
    from octopi.training import train_model

    data = build_data_config(**{key: values.pop(key) for key in _DATA_KEYS})
    if gt_info is not None:
        data = data.model_copy(update={"ground_truth": PickSpec.parse(gt_info)})
    init_card = None
    if (model_config is None) != (model_weights is None):
        raise click.UsageError("fine-tuning needs both --model-config and --model-weights")
    if model_config is not None:
        given = [f"--{k.replace('_', '-')}" for k in _ARCH_KEYS if values.get(k) is not None]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} cannot be combined with --model-config: fine-tuning keeps "
                "the architecture of the model config"
            )
        init_card = ModelCard.load(model_config)
        if values["dim_in"] is None:
            values["dim_in"] = init_card.dim_in
        architecture = None
    else:
        architecture = _architecture(values)
    training = _training_config(values)

    configure_threads()
    with stop_on_signals_then_exit():
        result = train_model(
            data,
            training,
            architecture,
            output,
            inference=InferenceConfig(),
            localize=LocalizeConfig(),
            evaluation=EvaluationConfig(),
            init_card=init_card,
            init_weights=model_weights,
            init_card_path=model_config,
            tracking_uri=tracking_uri,
        )
    _report(result, output)


def _report(result: Any, output: Path) -> None:
    """What `octopi train` prints at the end: the best validation, the calibration, the model."""
    if result.best_metric is None:
        click.echo(f"no validation ran; outputs in {output}")
    else:
        stop = " (stopped early)" if result.stopped_early else ""
        click.echo(
            f"best {result.best_metric_name} {result.best_metric:.4f} at epoch "
            f"{result.best_epoch} of {result.epochs_completed}{stop}"
        )
    if result.calibration:
        from octopi.cli.calibrate_cmd import format_calibration
        from octopi.models.model_card import Calibration

        click.echo("calibrated picking on the validation runs:")
        click.echo(format_calibration(Calibration.model_validate(result.calibration)))
    click.echo(f"model: {result.paths['model_config']} + {result.paths['best_weights']}")


_DATA_KEYS = (
    "configs",
    "voxel_size",
    "target_info",
    "tomo_alg",
    "train_run_ids",
    "validate_run_ids",
    "data_split",
)
_ARCH_KEYS = ("model_type", "channels", "strides", "res_units")


def _architecture(values: dict) -> Any:
    from pydantic import TypeAdapter

    from octopi.config import ModelArchitecture

    model_type = canonical_model_type(values["model_type"] or "Unet")
    unet_values = {"channels": values["channels"], "strides": values["strides"]}
    if model_type == "Unet":
        return build(UnetConfig, **unet_values, num_res_units=values["res_units"])
    if model_type == "AttentionUnet":
        if values["res_units"] is not None:
            raise click.UsageError("--res-units does not apply to --model-type AttentionUnet")
        return build(AttentionUnetConfig, **unet_values)
    given = [f"--{k.replace('_', '-')}" for k in _ARCH_KEYS[1:] if values[k] is not None]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} apply to Unet and AttentionUnet only, not {model_type}"
        )
    return TypeAdapter(ModelArchitecture).validate_python({"model_type": model_type})


def _training_config(values: dict) -> TrainingConfig:
    ncache = values["ncache_tomos"]
    alias = values["tomo_batch_size"]
    if alias is not None and ncache is not None and alias != ncache:
        raise click.UsageError("--tomo-batch-size is the old name of --ncache-tomos; give one")
    off_able = {}
    for key in ("ema_decay", "early_stopping_patience"):
        if values[key] is not None:
            off_able[key] = None if values[key] == _OFF else values[key]
    return TrainingConfig(
        **off_able,
        **{
            key: value
            for key, value in {
                "num_epochs": values["num_epochs"],
                "val_interval": values["val_interval"],
                "batch_size": values["batch_size"],
                "lr": values["lr"],
                "weight_decay": values["weight_decay"],
                "warmup_epochs": values["warmup_epochs"],
                "lr_decay": values["lr_decay"],
                "best_metric": values["best_metric"],
                "ncache_tomos": ncache if ncache is not None else alias,
                "background_ratio": values["background_ratio"],
                "dim_in": values["dim_in"],
                "seed": values["seed"],
                "amp": values["amp"],
                "loss": build(
                    LossConfig,
                    name=values["loss"],
                    tversky_alpha=values["tversky_alpha"],
                    ce_foreground_weight=values["ce_foreground_weight"],
                    ce_class_balance=values["ce_class_balance"],
                ),
            }.items()
            if value is not None
        },
    )
