"""One Optuna trial's configs: :func:`suggest` draws a model family's architecture and the
training settings from :data:`~octopi.models.search_spaces.SEARCH_SPACE`.

Settings the table does not name (epochs, validation interval, best metric, cache size,
background ratio, seed, AMP...) come from the study's ``training`` config. The crop edge
``dim_in`` (voxels) is rounded up to a multiple of the network's downsampling; the batch
(crops per tomogram per step) is lowered to fit the device memory
(:mod:`octopi.models.training_memory`). Both adjustments are recorded in the trial's user
attrs; :func:`suggest` never raises for memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from octopi.config import (
    AttentionUnetConfig,
    AugmentationConfig,
    DynUNetConfig,
    LossConfig,
    MedNeXtConfig,
    ModelArchitecture,
    SegResNetConfig,
    SwinUNETRConfig,
    TrainingConfig,
    UnetConfig,
    WorkflowConfig,
    canonical_model_type,
)
from octopi.models.registry import minimum_dim_in
from octopi.models.search_spaces import (
    BALANCED_LOSSES,
    CE_WEIGHTED_LOSSES,
    FOCAL_LOSSES,
    TVERSKY_LOSSES,
    Param,
    parse_overrides,
)
from octopi.models.training_memory import (
    DEFAULT_OUT_CHANNELS,
    MEMORY_FRACTION,
    estimate_training_bytes,
    largest_batch,
)

log = logging.getLogger(__name__)


def _draw(trial: Any, param: Param) -> Any:
    if param.kind == "categorical":
        return trial.suggest_categorical(param.name, started_choices(trial, param))
    if param.kind == "int":
        return trial.suggest_int(param.name, int(param.low), int(param.high), log=param.log)
    return trial.suggest_float(param.name, float(param.low), float(param.high), log=param.log)


def started_choices(trial: Any, param: Param) -> list[Any]:
    """The choices of categorical ``param`` that ``trial``'s study drew from first, else
    ``param.choices``.

    Optuna refuses a categorical whose choices change within a study ("does not support
    dynamic value space"), so an octopi release that adds a choice to a default list of
    :data:`~octopi.models.search_spaces.SEARCH_SPACE` (a model family, a loss) would stop every
    study started before it. A study keeps the choices it started with; the new ones are
    searched by new studies. (Choices from ``search_space.yaml`` cannot change within a study:
    its overrides are part of the study's identity.)
    """
    choices = list(param.choices)
    study = getattr(trial, "study", None)
    if study is None:  # e.g. optuna.trial.FixedTrial
        return choices
    for past in study.get_trials(deepcopy=False):
        started = past.distributions.get(param.name)
        if started is None or not hasattr(started, "choices"):
            continue
        started = list(started.choices)
        if started != choices:
            log.warning(
                "%s: this study started with the choices %s and keeps them (Optuna cannot "
                "change a categorical's choices within a study); %s are searched by a new "
                "study",
                param.name,
                started,
                choices,
            )
        return started
    return choices


# --------------------------------------------------------------------------- architectures

Draw = Callable[[str], Any]


def _unet_levels(draw: Draw) -> tuple[list[int], list[int]]:
    """Channels and strides as the published octopi: base × 2^i per level, then the bottom
    layers at the deepest width with stride 1."""
    num_layers, hidden, base = draw("num_layers"), draw("hidden_layers"), draw("base_channel")
    down = [base * 2**i for i in range(num_layers)]
    return down + [down[-1]] * hidden, [2] * (num_layers - 1) + [1] * hidden


def _unet(draw: Draw) -> UnetConfig:
    channels, strides = _unet_levels(draw)
    return UnetConfig(
        channels=channels,
        strides=strides,
        num_res_units=draw("num_res_units"),
        dropout=draw("dropout"),
    )


def _attention_unet(draw: Draw) -> AttentionUnetConfig:
    channels, strides = _unet_levels(draw)
    return AttentionUnetConfig(channels=channels, strides=strides, dropout=draw("dropout"))


def _segresnet(draw: Draw) -> SegResNetConfig:
    blocks = [int(n) for n in str(draw("blocks_down")).split("-")]
    return SegResNetConfig(
        init_filters=draw("init_filters"), blocks_down=blocks, dropout=draw("dropout")
    )


def _mednext(draw: Draw) -> MedNeXtConfig:
    levels = 3 if draw("depth") == "shallow" else 4
    return MedNeXtConfig(
        init_filters=draw("init_filters"),
        blocks_down=[2] * levels,
        blocks_bottleneck=2,
        expansion_ratio=draw("expansion_ratio"),
        kernel_size=draw("kernel_size"),
    )


def _dynunet(draw: Draw) -> DynUNetConfig:
    levels, base = draw("num_layers"), draw("base_filters")
    return DynUNetConfig(
        filters=[min(base * 2**i, 320) for i in range(levels)],
        strides=[1] + [2] * (levels - 1),
        res_block=draw("res_block"),
        dropout=draw("dropout"),
    )


def _swin_unetr(draw: Draw) -> SwinUNETRConfig:
    return SwinUNETRConfig(
        feature_size=draw("feature_size"),
        depths=[int(n) for n in str(draw("depths")).split("-")],
        window_size=draw("window_size"),
        use_v2=draw("use_v2"),
        dropout=draw("dropout"),
    )


_ARCHITECTURES: dict[str, Callable[[Draw], ModelArchitecture]] = {
    "Unet": _unet,
    "AttentionUnet": _attention_unet,
    "SegResNet": _segresnet,
    "MedNeXt": _mednext,
    "DynUNet": _dynunet,
    "SwinUNETR": _swin_unetr,
}


def _loss(draw: Draw) -> LossConfig:
    name = draw("loss")
    values: dict[str, Any] = {"name": name}
    if name in TVERSKY_LOSSES:
        values["tversky_alpha"] = draw("tversky_alpha")
    if name in FOCAL_LOSSES:
        values["focal_gamma"] = draw("focal_gamma")
    if name in CE_WEIGHTED_LOSSES:
        values["ce_foreground_weight"] = draw("ce_foreground_weight")
    if name in BALANCED_LOSSES:
        values["ce_class_balance"] = draw("ce_class_balance")
    return LossConfig(**values)


def scale_augmentation(base: AugmentationConfig, strength: float) -> AugmentationConfig:
    """``base`` with probabilities × ``strength`` (capped at 1) and intensities × strength."""
    return AugmentationConfig(
        flip_probability=min(1.0, base.flip_probability * strength),
        rotate90_probability=min(1.0, base.rotate90_probability * strength),
        intensity_scale=base.intensity_scale * strength,
        intensity_shift=base.intensity_shift * strength,
        gaussian_noise_std=base.gaussian_noise_std * strength,
    )


# --------------------------------------------------------------------------- one trial


def suggest(
    trial: Any,
    model_type: str,
    base: WorkflowConfig,
    device_memory_bytes: int | None,
    *,
    overrides: Mapping[str, Any] | None = None,
    out_channels: int = DEFAULT_OUT_CHANNELS,
) -> tuple[ModelArchitecture, TrainingConfig]:
    """Draw one trial's (architecture, training settings) for ``model_type``.

    ``trial`` is an Optuna ``Trial`` or ``FixedTrial``; a trial whose parameters are already
    set (a resumed slot) gets the same configs back. Settings outside
    :data:`~octopi.models.search_spaces.SEARCH_SPACE` come from ``base.training``.
    ``overrides`` narrow the space (:func:`~octopi.models.search_spaces.parse_overrides`).
    ``device_memory_bytes`` None skips the memory bound; adjustments are recorded as user
    attrs ``dim_in_adjusted`` / ``batch_size_adjusted``.
    """
    space = parse_overrides(model_type, overrides)
    model_type = canonical_model_type(model_type)

    def draw(name: str) -> Any:
        return _draw(trial, space[name])

    architecture = _ARCHITECTURES[model_type](draw)
    factor = architecture.downsampling_factor()
    drawn_dim = int(draw("dim_in"))
    dim_in = max(minimum_dim_in(architecture), math.ceil(drawn_dim / factor) * factor)
    if dim_in != drawn_dim:
        trial.set_user_attr(
            "dim_in_adjusted",
            {"drawn": drawn_dim, "used": dim_in, "why": f"a multiple of {factor} is needed"},
        )
    batch_size = int(draw("batch_size"))
    values = {
        "lr": draw("lr"),
        "weight_decay": draw("weight_decay"),
        "loss": _loss(draw),
        "augmentation": scale_augmentation(
            base.training.augmentation, draw("augmentation_strength")
        ),
        "dim_in": dim_in,
        "batch_size": _bound_batch(
            trial, architecture, dim_in, batch_size, device_memory_bytes, out_channels
        ),
    }
    training = TrainingConfig.model_validate({**dict(base.training), **values})
    return architecture, training


def _bound_batch(
    trial: Any,
    architecture: ModelArchitecture,
    dim_in: int,
    batch_size: int,
    device_memory_bytes: int | None,
    out_channels: int,
) -> int:
    """``batch_size``, or the largest batch that fits ``device_memory_bytes`` (at least 1,
    recorded as ``batch_size_adjusted``) when it does not."""
    if not device_memory_bytes:
        return batch_size
    fits = largest_batch(architecture, dim_in, device_memory_bytes, out_channels)
    if fits >= batch_size:
        return batch_size
    used = max(1, fits)
    needed = estimate_training_bytes(architecture, dim_in, batch_size, out_channels)
    trial.set_user_attr(
        "batch_size_adjusted",
        {
            "drawn": batch_size,
            "used": used,
            "estimated_bytes": needed,
            "device_memory_bytes": int(device_memory_bytes),
            "memory_fraction": MEMORY_FRACTION,
            "why": "one crop alone exceeds the budget" if fits < 1 else "memory bound",
        },
    )
    return used
