"""Training, inference, localization, evaluation and data-preparation settings.

Part of :mod:`octopi.config` (import from there).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from octopi.config.base import (
    CZII_CLASS_WEIGHTS,
    CopickSource,
    Frozen,
    PickSpec,
    TargetSpec,
)

LossName = Literal[
    "tversky",
    "focal_tversky",
    "weighted_focal_tversky",
    "focal",
    "dice_ce",
    "weighted_ce",
    "tversky_ce",
    "tversky_balanced_ce",
]
"""Every segmentation loss, by name (the one list: the CLI's choices and the search space's
``octopi.models.search_spaces.SEARCHED_LOSSES`` use it)."""


class LossConfig(Frozen):
    """Segmentation loss (MONAI losses, and the weighted cross-entropy of the CZII winners).

    The published octopi trains with Tversky alone; our default adds a class-weighted
    cross-entropy (particle classes weighted against background, and against each other by
    the square root of their voxel counts), which learns the small and hard classes in the
    first epochs, and keeps ``tversky_alpha`` (``--tversky-alpha``) acting on the Tversky part.
    """

    name: LossName = Field(
        default="tversky_balanced_ce",
        description="loss function; the default, Tversky plus cross-entropy with particle "
        "classes weighted 32 and balanced by the square root of their voxel counts, found "
        "every weighted class at 20 epochs on the hard preset's validation runs with two "
        "seeds (F4 0.485 / 0.430, against tversky_ce 0.414 / 0.438 and Tversky alone "
        "0.14; docs/benchmarks.md, Training recipe)",
    )
    tversky_alpha: float = Field(default=0.3, gt=0.0, lt=1.0, description="false-positive weight")
    tversky_beta: float | None = Field(
        default=None, gt=0.0, lt=1.0, description="false-negative weight; None → 1 - alpha"
    )
    focal_gamma: float = Field(
        default=2.0, ge=0.0, description="focal exponent (focal losses only)"
    )
    ce_foreground_weight: float = Field(
        default=32.0,
        ge=1.0,
        description="cross-entropy weight of every particle class against background 1 "
        "(weighted_ce, tversky_ce, tversky_balanced_ce; the first-place CZII solution used "
        "256, which validated lower here than 8 or 32)",
    )
    ce_class_balance: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="tversky_balanced_ce: power of the inverse-frequency weights that balance "
        "the particle classes by their voxels in each batch (1: fully, 0.5: by the square "
        "root, 0: not at all, as tversky_ce)",
    )


class AugmentationConfig(Frozen):
    """Random augmentations of training crops."""

    flip_probability: float = Field(
        default=0.5, ge=0.0, le=1.0, description="probability of a random flip per axis"
    )
    rotate90_probability: float = Field(default=0.5, ge=0.0, le=1.0, description="XY plane")
    intensity_scale: float = Field(default=0.1, ge=0.0, description="± relative scale")
    intensity_shift: float = Field(default=0.1, ge=0.0, description="± shift in std units")
    gaussian_noise_std: float = Field(
        default=0.0,
        ge=0.0,
        description="standard deviation of added Gaussian noise (z-scored units)",
    )


def _positive_beta(name: str) -> str:
    if name.startswith("fBeta") and float(name.removeprefix("fBeta")) <= 0:
        raise ValueError(f"metric {name!r}: beta must be > 0 (fBeta0 would be precision alone)")
    return name


Metric = Annotated[
    str, Field(pattern=r"^(avg_f1|fBeta\d+(\.\d+)?)$"), AfterValidator(_positive_beta)
]
AmpMode = Literal["auto", "bf16", "fp16", "off"]
LrDecay = Literal["cosine_over_run", "cosine_to_zero"]


class TrainingConfig(Frozen):
    """How one model is trained (defaults of the published `octopi train`)."""

    num_epochs: int = Field(
        default=1000, ge=1, description="training epochs (per trial in a study)"
    )
    val_interval: int = Field(
        default=10, ge=1, description="validate every N epochs (and at the last epoch)"
    )
    batch_size: int = Field(default=16, ge=1, description="crops per tomogram per epoch")
    lr: float = Field(
        default=1e-3,
        gt=0.0,
        description="peak AdamW learning rate (linear warm-up, then cosine decay)",
    )
    weight_decay: float = Field(default=1e-4, ge=0.0, description="AdamW weight decay")
    warmup_epochs: int = Field(
        default=5, ge=0, description="epochs of linear learning-rate warm-up"
    )
    lr_decay: LrDecay = Field(
        default="cosine_over_run",
        description="learning-rate decay after the warm-up, a half cosine: `cosine_over_run` "
        "lasts num_epochs (octopi 1.7.0's; training ends above 0), `cosine_to_zero` lasts the "
        "epochs left after the warm-up and ends at 0",
    )
    ema_decay: float | None = Field(default=0.995, gt=0.0, lt=1.0, description="None → off")
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="validations without improvement before stopping"
    )
    best_metric: Metric = Field(
        default="avg_f1",
        description="checkpoint (and trial) metric: `avg_f1` or `fBetaN`, e.g. `fBeta4`",
    )
    ncache_tomos: int = Field(
        default=15, ge=1, description="tomograms cached per epoch (SmartCache window)"
    )
    background_ratio: float = Field(
        default=0.0, ge=0.0, description="background / foreground crop ratio (`1.0` → 50/50)"
    )
    dim_in: int = Field(default=96, ge=16, description="crop edge (voxels)")
    loss: LossConfig = Field(default=LossConfig(), description="segmentation loss")
    augmentation: AugmentationConfig = Field(
        default=AugmentationConfig(), description="random augmentation of training crops"
    )
    num_workers: int = Field(default=1, ge=0, description="background crop-sampling threads")
    seed: int = Field(default=42, description="random seed (crops, initialisation, augmentation)")
    amp: AmpMode = Field(
        default="auto",
        description="mixed precision: `auto` (bf16 where supported), `bf16`, `fp16`, `off`",
    )

    @model_validator(mode="after")
    def _interval(self) -> TrainingConfig:
        if self.val_interval > self.num_epochs:
            raise ValueError(
                f"--val-interval {self.val_interval} is larger than --num-epochs "
                f"{self.num_epochs}: no validation would ever run"
            )
        return self


# --------------------------------------------------------------------------- inference


class InferenceConfig(Frozen):
    """Sliding-window segmentation of whole tomograms."""

    window_size: int | None = Field(default=None, ge=16, description="None → the model's crop")
    overlap: float = Field(
        default=0.25,
        ge=0.0,
        lt=1.0,
        description="overlap of neighbouring windows (fraction of the window)",
    )
    window_batch_size: int = Field(default=4, ge=1, description="windows per forward pass")
    tta: Literal["none", "flips", "rot90"] = Field(
        default="none", description="test-time augmentation: XY flips (4) or XY rotations (4)"
    )
    amp: AmpMode = Field(
        default="auto", description="mixed precision: `auto`, `bf16`, `fp16`, `off`"
    )
    save_probabilities: bool = Field(
        default=True,
        description="segment also writes the class probabilities (float16, (C, Z, Y, X), "
        "stored in steps of 1/255) into the label segmentation's store as the group "
        "'probabilities', for localize's per-class thresholds; 1 byte × classes per voxel "
        "before compression",
    )


class LocalizeConfig(Frozen):
    """How segmentations become particle picks (see :func:`octopi.inference.localize.localize`).

    method: "peaks" splits touching particles at maxima of the distance transform (watershed);
        "components" gives one pick per connected component, at its centroid.
    source: what is localized: "probabilities" (those segment writes beside the labels),
        "labels" (the argmax label volume), or "auto": the probabilities with the per-class
        thresholds and minimum sizes calibrated for the model (segment stores them with the
        probabilities), where every run has them; else the labels.
    score_threshold: probability input only; voxels with p >= threshold are foreground.
    min_size_fraction / max_size_fraction: a region is kept only if its voxel count lies within
        [min, max] × the sphere volume of the particle radius (max None: no upper bound). Target
        balls drawn at 0.5 of the radius (the default) fill 0.125 of the sphere, at 0.7 0.34.
    min_separation_fraction: two picks of one class are at least this × radius apart; the lower
        scoring pick is dropped.
    per_class_threshold: class name → threshold, overriding score_threshold.
    per_class_min_size_fraction: class name → min_size_fraction, overriding it for that class.
    argmax_classes: probability input only; these classes are picked from the argmax of the
        probabilities instead of a threshold (calibration chooses it where the argmax picks a
        class better than every threshold: a weakly trained network's class probability can
        be low everywhere and still the largest at the particles).
    calibrate: after training, choose per class the threshold (of calibration_thresholds) and
        minimum size (of calibration_min_size_fractions) that maximise the class's F-beta on
        the validation runs, and store them in model_config.yaml (`octopi calibrate` redoes it).
    max_component_fraction: "peaks" only; a connected component larger than this × sphere volume
        is no particle (a membrane, or an untrained network's class-everywhere output) and is
        skipped, which also bounds the time spent on it. None: no limit.
    max_foreground_fraction: a class covering more than this fraction of the volume is noise
        (an untrained network's output), not particles: it gets no picks and a warning instead
        of a minute spent on thousands of blobs. A particle class rarely covers 2% of a
        tomogram, so 0.1 is safe for whole tomograms; None: no limit.
    """

    method: Literal["peaks", "components"] = "peaks"
    source: Literal["auto", "probabilities", "labels"] = Field(
        default="auto",
        description="auto: the class probabilities with the model's calibrated per-class "
        "thresholds and minimum sizes, where segment stored both for every run, else the "
        "argmax labels; probabilities: threshold the class probabilities with score_threshold "
        "/ per_class_threshold (calibration ignored); labels: the argmax labels (thresholds do "
        "not apply). A fixed threshold is worse than the argmax for a weakly trained model, a "
        "calibrated one better (octopi localize --threshold or --class-thresholds switch to "
        "probabilities)",
    )
    score_threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    min_size_fraction: float = Field(default=0.05, ge=0.0)
    max_size_fraction: float | None = Field(default=None, gt=0.0)
    min_separation_fraction: float = Field(default=0.8, ge=0.0)
    per_class_threshold: dict[str, Annotated[float, Field(gt=0.0, le=1.0)]] | None = None
    per_class_min_size_fraction: dict[str, Annotated[float, Field(ge=0.0)]] | None = Field(
        default=None, description="class name → min_size_fraction of that class"
    )
    argmax_classes: list[str] | None = Field(
        default=None,
        description="classes picked from the argmax of the probabilities, not a threshold "
        "(calibration sets it where the argmax validated better)",
    )
    calibrate: bool = Field(
        default=True,
        description="after training, calibrate per-class thresholds and minimum sizes on the "
        "validation runs (F-beta) and store them in model_config.yaml",
    )
    calibration_thresholds: list[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        default=[0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7],
        min_length=1,
        description="probability thresholds calibration chooses from",
    )
    calibration_min_size_fractions: list[Annotated[float, Field(ge=0.0)]] = Field(
        default=[0.02, 0.05, 0.1, 0.2, 0.3],
        min_length=1,
        description="minimum region sizes (× sphere volume) calibration chooses from",
    )
    max_component_fraction: float | None = Field(default=20.0, gt=0.0)
    max_foreground_fraction: float | None = Field(default=0.1, gt=0.0)

    def unknown_class_names(self, names: Iterable[str]) -> list[str]:
        """The per-class settings that name a class outside ``names``, one ``"field: name,
        ..."`` entry per such setting (per_class_threshold, per_class_min_size_fraction,
        argmax_classes); empty when every name is known. A misspelt class would otherwise be
        left silently at the global setting."""
        known = set(names)
        named = {
            "per_class_threshold": self.per_class_threshold or {},
            "per_class_min_size_fraction": self.per_class_min_size_fraction or {},
            "argmax_classes": self.argmax_classes or [],
        }
        return [
            f"{field}: {', '.join(sorted(set(classes) - known))}"
            for field, classes in named.items()
            if set(classes) - known
        ]

    @model_validator(mode="after")
    def _size_bounds(self) -> LocalizeConfig:
        if self.max_size_fraction is not None and self.max_size_fraction < self.min_size_fraction:
            raise ValueError(
                f"max_size_fraction {self.max_size_fraction} is below min_size_fraction "
                f"{self.min_size_fraction}"
            )
        return self


class EvaluationConfig(Frozen):
    """Particle-level scoring against ground-truth picks (CZII rules)."""

    distance_fraction: float = Field(
        default=0.5, gt=0.0, description="a pick matches a true particle within this × its radius"
    )
    beta: float = Field(default=4.0, gt=0.0, description="beta of the weighted F-beta score")
    class_weights: dict[str, float] = Field(
        default_factory=lambda: dict(CZII_CLASS_WEIGHTS),
        description="`{object: weight}` of the weighted F-beta; objects not listed weigh 1",
    )


# --------------------------------------------------------------------------- data preparation


class SynthesizeConfig(Frozen):
    """A synthetic copick project for demos, tests and benchmarks."""

    output: Path = Field(description="new project folder")
    runs: int = Field(default=4, ge=1, description="number of runs")
    shape_zyx: tuple[int, int, int] = Field(
        default=(64, 128, 128), description="tomogram shape (Z, Y, X) in voxels"
    )
    voxel_size_angstrom: float = Field(default=10.0, gt=0, description="voxel size (Å)")
    seed: int = Field(default=0, description="random seed; same seed, same project")
    picks: PickSpec = Field(
        default=PickSpec(), description="user and session of the ground-truth picks"
    )
    run_prefix: str = Field(default="TS", description="run names are `<prefix>_<i>`")
    preset: Literal["default", "hard"] = Field(
        default="default",
        description="simulation settings: default (the original generator, same arrays for the "
        "same seed) or hard (CTF with 2-4 µm defocus, lower SNR, more crowding, similar-size "
        "distractors, vesicles, gold beads, ice gradient); recorded in synthesis.json",
    )


class TargetsConfig(Frozen):
    """Picks → one multi-class label volume per run."""

    configs: list[CopickSource] = Field(min_length=1, description="copick project configs")
    voxel_size_angstrom: float = Field(
        default=10.0, gt=0, description="voxel size (Å) of the label volumes"
    )
    target: TargetSpec = Field(default=TargetSpec(), description="segmentation to write")
    picks: PickSpec = Field(default=PickSpec(), description="picks to read")
    objects: list[str] | None = Field(default=None, description="None → every particle object")
    radius_fraction: float = Field(
        default=0.5,
        gt=0.0,
        le=1.5,
        description="ball radius / particle radius (published: 0.7; 0.5 measured better on "
        "crowded data: docs/benchmarks.md, training recipe)",
    )
    run_ids: list[str] | None = Field(default=None, description="runs to process; null → all")


class ImportConfig(Frozen):
    """MRC tomograms → copick tomograms."""

    config: Path = Field(description="copick project config JSON")
    input_dir: Path = Field(
        description="folder of `.mrc` / `.rec` files (run names from file names)"
    )
    tomo_algorithm: str = Field(default="wbp", description="tomogram algorithm name to write")
    output_voxel_size_angstrom: float | None = Field(
        default=None, gt=0, description="resample to this voxel size; null → as in the header"
    )
    overwrite: bool = Field(default=False, description="replace existing tomograms")
