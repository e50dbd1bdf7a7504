"""Optuna search spaces of the four model families, and the memory bound on crop × batch.

:data:`SEARCH_SPACE` is the one table of what model exploration samples (the docs print it
with :func:`search_space_table`). :func:`suggest` draws one trial's architecture and training
settings from it; settings the table does not name (epochs, validation interval, best metric,
cache size, background ratio, seed, AMP...) come from the study's ``training`` config.

A study may narrow the table with *overrides* (``search_space.yaml`` in the study folder, see
:func:`parse_overrides`): a parameter fixed to one value, a list of choices, or a
``{low, high}`` range. Tests and quick demos use them to keep crops and batches tiny.

Memory bound: :func:`estimate_training_bytes` traces the network on PyTorch's ``meta`` device
(shapes only, no memory, ~0.1 s) and sums the tensors autograd keeps for the backward pass.
If the estimate exceeds :data:`MEMORY_FRACTION` of the device memory, :func:`suggest` lowers
the batch and records why in the trial's user attrs; it never raises for memory.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from octopi.config import (
    AttentionUnetConfig,
    AugmentationConfig,
    LossConfig,
    MedNeXtConfig,
    ModelArchitecture,
    SegResNetConfig,
    TrainingConfig,
    UnetConfig,
    WorkflowConfig,
    canonical_model_type,
)

ParamKind = Literal["float", "int", "categorical"]


@dataclass(frozen=True)
class Param:
    """One searched parameter. ``when`` names the condition under which it is drawn."""

    name: str
    kind: ParamKind
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: str = ""
    help: str = ""

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        scale = ", log" if self.log else ""
        return f"{_number(self.low)} … {_number(self.high)}{scale}"


def _number(value: float | None) -> str:
    return f"{value:g}" if value is not None else "?"


_TVERSKY_LOSSES = ("tversky", "focal_tversky", "weighted_focal_tversky")
_FOCAL_LOSSES = ("focal", "focal_tversky", "weighted_focal_tversky")

COMMON_PARAMS: tuple[Param, ...] = (
    Param("lr", "float", 1e-4, 3e-3, log=True, help="AdamW learning rate"),
    Param("weight_decay", "float", 1e-4, 1e-2, log=True, help="AdamW weight decay"),
    Param(
        "batch_size",
        "categorical",
        choices=(4, 8, 16, 24, 32, 48),
        help="crops per tomogram per step; lowered to fit device memory",
    ),
    Param(
        "dim_in",
        "categorical",
        choices=(48, 64, 80, 96, 128, 160),
        help="crop edge (voxels); rounded up to a multiple of the network's downsampling",
    ),
    Param(
        "loss",
        "categorical",
        choices=("tversky", "focal_tversky", "weighted_focal_tversky", "focal", "dice_ce"),
    ),
    Param(
        "tversky_alpha",
        "float",
        0.1,
        0.7,
        when="loss in " + "/".join(_TVERSKY_LOSSES),
        help="false-positive weight; beta = 1 - alpha",
    ),
    Param("focal_gamma", "float", 0.1, 2.0, when="loss in " + "/".join(_FOCAL_LOSSES)),
    Param(
        "augmentation_strength",
        "float",
        0.0,
        1.5,
        help="multiplies the augmentation probabilities (capped at 1) and intensities",
    ),
)

_UNET_DEPTH: tuple[Param, ...] = (
    Param("num_layers", "int", 3, 4, help="resolution levels; strides 2 between them"),
    Param("hidden_layers", "int", 1, 2, help="extra bottom layers (stride 1)"),
    Param("base_channel", "categorical", choices=(8, 16, 32), help="channels x2 per level"),
)
_DROPOUT = Param("dropout", "float", 0.0, 0.3)

SEARCH_SPACE: dict[str, tuple[Param, ...]] = {
    "all": COMMON_PARAMS,
    "Unet": (*_UNET_DEPTH, Param("num_res_units", "int", 1, 2), _DROPOUT),
    "AttentionUnet": (*_UNET_DEPTH, _DROPOUT),
    "SegResNet": (
        Param("init_filters", "categorical", choices=(8, 16, 32)),
        Param(
            "blocks_down",
            "categorical",
            choices=("1-2-2-4", "1-2-2-2", "1-1-2-2", "1-2-2"),
            help="residual blocks per level (levels = entries)",
        ),
        _DROPOUT,
    ),
    "MedNeXt": (
        Param("init_filters", "categorical", choices=(8, 16, 32)),
        Param("expansion_ratio", "int", 1, 3),
        Param("kernel_size", "categorical", choices=(3, 5)),
        Param("depth", "categorical", choices=("shallow", "deep"), help="3 or 4 levels"),
    ),
}
"""What model exploration samples: ``"all"`` for every family, then each family's own."""

# --------------------------------------------------------------------------- memory model

MEMORY_FRACTION = 0.7
"""Share of the device memory a trial may plan to use (the rest: CUDA context, caches)."""
ACTIVATION_OVERHEAD = 1.5
"""Peak / saved activations: gradient buffers in flight, cuDNN workspace, fragmentation."""
BYTES_PER_WEIGHT = 20
"""fp32 weight, gradient, AdamW's two moments and the EMA copy."""
DEFAULT_OUT_CHANNELS = 7
"""Background + the six CZII classes, when the trial does not know the project's classes."""

# Calibration. The tensors autograd saves for backward (fp32, deduplicated by storage) were
# measured on the CPU with torch.autograd.graph.saved_tensors_hooks during a real forward pass
# (torch 2.13, MONAI 1.6, 7 output channels) and compared with the meta-device trace below:
#   family         architecture                                 crop³×batch  CPU B/voxel  meta
#   Unet (default) ch 32,64,96,96 strides 2,2,1 res 1            64³×1        375.2        375.2
#   Unet           ch 16,32,64,64 strides 2,2,1 res 2            64³×1        307.7        307.7
#   Unet           ch 8..64 (6 levels) strides 2,2,2,1,1 res 1   64³×1        190.9        189.7
#   AttentionUnet  ch 16,32,64,64 strides 2,2,1                  64³×1        1121.1       1121.1
#   SegResNet      16 filters, blocks 1,2,2,4                    64³×1        1104.7       1104.7
#   MedNeXt        16 filters, blocks 2,2,2,2, expansion 2       64³×1        3624.5       3624.5
# Bytes per voxel are flat in crop size (Unet default: 427 at 32³×2, 375 at 64³, 358 at
# 160³×48) and linear in batch, so one trace at batch 1 gives every batch size. A
# channels-per-voxel formula fitted to 25 random architectures per family was off by up to
# 34 % for the U-Net; the trace is exact for any architecture, hence its use.


@functools.lru_cache(maxsize=64)
def _saved_bytes_per_sample(
    architecture_json: str, dim_in: int, out_channels: int
) -> tuple[int, int]:
    """(bytes autograd saves for one crop, number of parameters), traced on the meta device."""
    import torch
    from pydantic import TypeAdapter

    from octopi.models.registry import BUILDERS

    architecture = TypeAdapter(ModelArchitecture).validate_json(architecture_json)
    with torch.device("meta"):
        model = BUILDERS[architecture.model_type](architecture, out_channels)
        image = torch.empty(1, 1, dim_in, dim_in, dim_in)
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        base = tensor._base if tensor._base is not None else tensor
        saved[id(base)] = base.numel() * base.element_size()
        return tensor

    # The graph (alive while ``output`` is) holds every saved tensor, so ids stay unique.
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(image)
    output_bytes = output.numel() * output.element_size()
    parameters = sum(p.numel() for p in model.parameters())
    return sum(saved.values()) + output_bytes, parameters


def estimate_training_bytes(
    architecture: ModelArchitecture,
    dim_in: int,
    batch_size: int,
    out_channels: int = DEFAULT_OUT_CHANNELS,
) -> int:
    """Estimated peak device memory (bytes) of one fp32 training step.

    ``ACTIVATION_OVERHEAD`` × saved activations (traced on the meta device, see the
    calibration note above) × ``batch_size`` + ``BYTES_PER_WEIGHT`` × parameters. Mixed
    precision roughly halves the activations, so the estimate errs on the safe side.
    """
    per_sample, parameters = _saved_bytes_per_sample(
        architecture.model_dump_json(), int(dim_in), int(out_channels)
    )
    return int(ACTIVATION_OVERHEAD * per_sample * batch_size + BYTES_PER_WEIGHT * parameters)


def largest_batch(
    architecture: ModelArchitecture,
    dim_in: int,
    device_memory_bytes: int,
    out_channels: int = DEFAULT_OUT_CHANNELS,
) -> int:
    """The largest batch whose :func:`estimate_training_bytes` fits ``MEMORY_FRACTION`` of
    ``device_memory_bytes`` (0 when not even one crop fits)."""
    one = estimate_training_bytes(architecture, dim_in, 1, out_channels)
    fixed = estimate_training_bytes(architecture, dim_in, 0, out_channels)
    per_crop = max(one - fixed, 1)
    return max(0, int((MEMORY_FRACTION * device_memory_bytes - fixed) // per_crop))


# --------------------------------------------------------------------------- overrides


def parse_overrides(model_type: str, overrides: Mapping[str, Any] | None) -> dict[str, Param]:
    """The parameters of ``model_type`` with ``overrides`` applied, by name.

    An override is one value (the parameter is fixed), a list (categorical: the choices;
    float/int: ``[low, high]``) or a mapping ``{low, high[, log]}``. Unknown names and
    malformed values raise ``ValueError`` naming the parameter and the accepted forms.
    """
    model_type = canonical_model_type(model_type)
    space = {p.name: p for p in (*SEARCH_SPACE["all"], *SEARCH_SPACE[model_type])}
    for name, value in (overrides or {}).items():
        if name not in space:
            raise ValueError(
                f"search-space override {name!r} is not a parameter of {model_type}; "
                f"known: {', '.join(space)}"
            )
        space[name] = _override(space[name], value)
    return space


def load_overrides(path: str | Path) -> dict[str, Any]:
    """Search-space overrides from a YAML mapping (``search_space.yaml``); {} if no file."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a mapping of parameter name → override (value, list or range), "
            f"got {type(data).__name__}"
        )
    return data


def _as_number(value: Any) -> Any:
    """A numeric string as a number (YAML 1.1 reads ``1e-4``, without a dot, as a string);
    anything else unchanged."""
    if not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if value.strip().lstrip("+-").isdigit() else number


def _override(param: Param, value: Any) -> Param:
    where = f"search-space override {param.name!r}"
    if param.kind == "categorical":
        choices = tuple(value) if isinstance(value, list | tuple) else (value,)
        if not choices or any(isinstance(c, list | dict) for c in choices):
            raise ValueError(f"{where}: give one value or a list of values, got {value!r}")
        return replace(param, choices=choices)
    if isinstance(value, Mapping):
        low, high, log = value.get("low"), value.get("high"), value.get("log", param.log)
    elif isinstance(value, list | tuple) and len(value) == 2:
        (low, high), log = value, param.log
    elif isinstance(_as_number(value), int | float) and not isinstance(value, bool):
        low = high = value
        log = param.log
    else:
        raise ValueError(
            f"{where}: give a number, [low, high] or {{low: ..., high: ...}}, got {value!r}"
        )
    low, high = _as_number(low), _as_number(high)
    if not isinstance(low, int | float) or not isinstance(high, int | float) or low > high:
        raise ValueError(f"{where}: need numbers low ≤ high, got low={low!r}, high={high!r}")
    if log and low <= 0:
        raise ValueError(f"{where}: a log-scaled range needs low > 0, got {low}")
    if param.kind == "int" and (int(low) != low or int(high) != high):
        raise ValueError(f"{where}: {param.name} takes integers, got {low}, {high}")
    return replace(param, low=low, high=high, log=bool(log))


def _draw(trial: Any, param: Param) -> Any:
    if param.kind == "categorical":
        return trial.suggest_categorical(param.name, list(param.choices))
    if param.kind == "int":
        return trial.suggest_int(param.name, int(param.low), int(param.high), log=param.log)
    return trial.suggest_float(param.name, float(param.low), float(param.high), log=param.log)


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


_ARCHITECTURES: dict[str, Callable[[Draw], ModelArchitecture]] = {
    "Unet": _unet,
    "AttentionUnet": _attention_unet,
    "SegResNet": _segresnet,
    "MedNeXt": _mednext,
}


def _loss(draw: Draw) -> LossConfig:
    name = draw("loss")
    values: dict[str, Any] = {"name": name}
    if name in _TVERSKY_LOSSES:
        values["tversky_alpha"] = draw("tversky_alpha")
    if name in _FOCAL_LOSSES:
        values["focal_gamma"] = draw("focal_gamma")
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
    set (a resumed slot) gets the same configs back. Settings outside :data:`SEARCH_SPACE`
    come from ``base.training``. ``device_memory_bytes`` None skips the memory bound;
    adjustments are recorded as user attrs ``dim_in_adjusted`` / ``batch_size_adjusted``.
    """
    space = parse_overrides(model_type, overrides)
    model_type = canonical_model_type(model_type)

    def draw(name: str) -> Any:
        return _draw(trial, space[name])

    architecture = _ARCHITECTURES[model_type](draw)
    factor = architecture.downsampling_factor()
    drawn_dim = int(draw("dim_in"))
    dim_in = max(16, math.ceil(drawn_dim / factor) * factor)
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


# --------------------------------------------------------------------------- documentation


def search_space_table(model_types: tuple[str, ...] | None = None) -> str:
    """:data:`SEARCH_SPACE` as a markdown table (one section per family)."""
    lines = ["| family | parameter | values | when | notes |", "|---|---|---|---|---|"]
    for family in ("all", *(model_types or tuple(k for k in SEARCH_SPACE if k != "all"))):
        for param in SEARCH_SPACE[family]:
            lines.append(
                f"| {family} | `{param.name}` | {param.describe()} | {param.when or 'always'} "
                f"| {param.help} |"
            )
    lines.append("")
    lines.append(
        "U-Net channels are `base_channel × 2^i` for `num_layers` levels (strides 2) plus "
        "`hidden_layers` bottom layers (stride 1); everything else comes from the study's "
        f"`training` config. Batches are lowered to fit {MEMORY_FRACTION:.0%} of the device "
        "memory (see `estimate_training_bytes`)."
    )
    return "\n".join(lines)
