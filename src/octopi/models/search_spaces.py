"""Optuna search spaces of the six model families: what model exploration samples.

:data:`SEARCH_SPACE` is the one table of searched parameters (the docs print it with
:func:`search_space_table`). :func:`octopi.models.trial_sampling.suggest` draws one trial's
architecture and training settings from it; the memory bound on crop × batch lives in
:mod:`octopi.models.training_memory`.

A study may narrow the table with *overrides* (``search_space.yaml`` in the study folder, see
:func:`parse_overrides` and :func:`load_overrides`): a parameter fixed to one value, a list of
choices, or a ``{low, high}`` range. Tests and quick demos use them to keep crops and batches
tiny.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

from octopi.config import LossName, canonical_model_type
from octopi.errors import InputError
from octopi.input_files import read_yaml_mapping
from octopi.models.training_memory import MEMORY_FRACTION

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


TVERSKY_LOSSES = (
    "tversky",
    "focal_tversky",
    "weighted_focal_tversky",
    "tversky_ce",
    "tversky_balanced_ce",
)
"""Losses that take ``tversky_alpha``."""
FOCAL_LOSSES = ("focal", "focal_tversky", "weighted_focal_tversky")
"""Losses that take ``focal_gamma``."""
CE_WEIGHTED_LOSSES = ("weighted_ce", "tversky_ce", "tversky_balanced_ce")
"""Losses that take ``ce_foreground_weight``."""
BALANCED_LOSSES = ("tversky_balanced_ce",)
"""Losses that take ``ce_class_balance``."""
SEARCHED_LOSSES: tuple[str, ...] = get_args(LossName)
"""The losses a study searches unless its ``search_space.yaml`` lists others: every one. A
study started before a loss existed keeps the choices it started with
(:func:`octopi.models.trial_sampling.started_choices`)."""

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
    Param("loss", "categorical", choices=SEARCHED_LOSSES),
    Param(
        "tversky_alpha",
        "float",
        0.1,
        0.7,
        when="loss in " + "/".join(TVERSKY_LOSSES),
        help="false-positive weight; beta = 1 - alpha",
    ),
    Param("focal_gamma", "float", 0.1, 2.0, when="loss in " + "/".join(FOCAL_LOSSES)),
    Param(
        "ce_foreground_weight",
        "float",
        4.0,
        256.0,
        log=True,
        when="loss in " + "/".join(CE_WEIGHTED_LOSSES),
        help="particle-class cross-entropy weight against background 1",
    ),
    Param(
        "ce_class_balance",
        "float",
        0.0,
        1.0,
        when="loss in " + "/".join(BALANCED_LOSSES),
        help="power of the weights that balance the particle classes by their voxels",
    ),
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
    "DynUNet": (
        Param("num_layers", "int", 4, 5, help="levels; stride 1 at the first, 2 after"),
        Param("base_filters", "categorical", choices=(16, 32), help="x2 per level, at most 320"),
        Param("res_block", "categorical", choices=(True, False), help="residual blocks"),
        _DROPOUT,
    ),
    "SwinUNETR": (
        Param("feature_size", "categorical", choices=(12, 24, 36, 48), help="a multiple of 12"),
        Param("depths", "categorical", choices=("2-2-2-2", "2-2-6-2"), help="blocks per stage"),
        Param("window_size", "categorical", choices=(4, 7), help="attention window (tokens)"),
        Param("use_v2", "categorical", choices=(False, True), help="SwinUNETR-v2"),
        _DROPOUT,
    ),
}
"""What model exploration samples: ``"all"`` for every family, then each family's own."""

# --------------------------------------------------------------------------- overrides


def parse_overrides(model_type: str, overrides: Mapping[str, Any] | None) -> dict[str, Param]:
    """The parameters of ``model_type`` with ``overrides`` applied, by name.

    An override is one value (the parameter is fixed), a list (categorical: the choices;
    float/int: ``[low, high]``) or a mapping ``{low, high[, log]}``. Unknown names and
    malformed values raise ``InputError`` naming the parameter and the accepted forms.
    """
    model_type = canonical_model_type(model_type)
    space = {p.name: p for p in (*SEARCH_SPACE["all"], *SEARCH_SPACE[model_type])}
    for name, value in (overrides or {}).items():
        if name not in space:
            raise InputError(
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
    return read_yaml_mapping(path, "search space", allow_empty=True)


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
            raise InputError(f"{where}: give one value or a list of values, got {value!r}")
        return replace(param, choices=choices)
    if isinstance(value, Mapping):
        low, high, log = value.get("low"), value.get("high"), value.get("log", param.log)
    elif isinstance(value, list | tuple) and len(value) == 2:
        (low, high), log = value, param.log
    elif isinstance(_as_number(value), int | float) and not isinstance(value, bool):
        low = high = value
        log = param.log
    else:
        raise InputError(
            f"{where}: give a number, [low, high] or {{low: ..., high: ...}}, got {value!r}"
        )
    low, high = _as_number(low), _as_number(high)
    if not isinstance(low, int | float) or not isinstance(high, int | float) or low > high:
        raise InputError(f"{where}: need numbers low ≤ high, got low={low!r}, high={high!r}")
    if log and low <= 0:
        raise InputError(f"{where}: a log-scaled range needs low > 0, got {low}")
    if param.kind == "int" and (int(low) != low or int(high) != high):
        raise InputError(f"{where}: {param.name} takes integers, got {low}, {high}")
    return replace(param, low=low, high=high, log=bool(log))


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
        "`hidden_layers` bottom layers (stride 1); DynUNet filters are `base_filters × 2^i` "
        "(at most 320); SwinUNETR crops are multiples of 32 and at least 64; everything else "
        "comes from the study's "
        f"`training` config. Batches are lowered to fit {MEMORY_FRACTION:.0%} of the device "
        "memory (see `estimate_training_bytes`)."
    )
    return "\n".join(lines)
