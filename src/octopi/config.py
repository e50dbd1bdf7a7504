"""Configuration models: the one home of every default in octopi.

All models are pydantic v2, frozen and ``extra="forbid"``. CLI options default to ``None``
and only override these models (see :func:`octopi.cli.options.build`); the Snakemake config
is validated against the JSON schema generated from :class:`WorkflowConfig`.

Defaults follow the published octopi training guide (docs/flags.md maps its flags to these
settings); docs/architecture.md describes the layers and where defaults live.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from octopi.errors import InputError

# The CZII cryo-ET object identification challenge weights (F-beta aggregation).
CZII_CLASS_WEIGHTS: dict[str, float] = {
    "apo-ferritin": 1.0,
    "beta-amylase": 0.0,
    "beta-galactosidase": 2.0,
    "ribosome": 1.0,
    "thyroglobulin": 2.0,
    "virus-like-particle": 1.0,
}

# copick uses "_" to separate fields in file names, so names must not contain it.
_COPICK_NAME = re.compile(r"^[A-Za-z0-9.\-]+$")


def check_copick_name(value: str, what: str) -> str:
    """Return ``value`` if copick accepts it as an object, user or session name, else raise."""
    if not _COPICK_NAME.match(value):
        raise InputError(
            f"{what} {value!r} is not a valid copick name: use letters, digits, '-' and '.' only "
            "(copick separates file-name fields with '_')"
        )
    return value


class Frozen(BaseModel):
    """Base for all config models: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- data selection


class CopickSource(Frozen):
    """One copick project: ``path`` or ``session_name,path`` on the command line."""

    path: Path
    session_name: str | None = Field(
        default=None,
        description="Short name that tells runs of several projects apart (run key 'session/run').",
    )

    @classmethod
    def parse(cls, text: str) -> CopickSource:
        """Parse ``path`` or ``session_name,path``; a whole text that names an existing file
        is a path, even with a comma in it."""
        if "," in text and not Path(text.strip()).is_file():
            session, path = (part.strip() for part in text.split(",", 1))
            if not session or not path:
                raise InputError(f"copick config {text!r}: expected 'path' or 'session_name,path'")
            return cls(path=Path(path), session_name=session)
        return cls(path=Path(text.strip()))

    def __str__(self) -> str:
        return f"{self.session_name},{self.path}" if self.session_name else str(self.path)


class TargetSpec(Frozen):
    """A copick segmentation: ``name`` or ``name,user_id,session_id``."""

    name: str = "targets"
    user_id: str = "octopi"
    session_id: str = "1"

    @classmethod
    def parse(cls, text: str) -> TargetSpec:
        """Parse ``name`` (user and session take their defaults) or ``name,user_id,session_id``."""
        parts = [part.strip() for part in text.split(",")]
        if len(parts) == 1 and parts[0]:
            return cls(name=parts[0])
        if len(parts) == 3 and all(parts):
            return cls(name=parts[0], user_id=parts[1], session_id=parts[2])
        raise InputError(f"{text!r}: expected 'name' or 'name,user_id,session_id'")

    @field_validator("name", "user_id", "session_id")
    @classmethod
    def _copick_name(cls, value: str, info: Any) -> str:
        return check_copick_name(value, info.field_name)

    def __str__(self) -> str:
        return f"{self.name},{self.user_id},{self.session_id}"


class PickSpec(Frozen):
    """Which picks to read or write: copick user and session IDs."""

    user_id: str = "curation"
    session_id: str = "0"

    @classmethod
    def parse(cls, text: str) -> PickSpec:
        parts = [part.strip() for part in text.split(",")]
        if len(parts) != 2 or not all(parts):
            raise InputError(f"{text!r}: expected 'user_id,session_id'")
        return cls(user_id=parts[0], session_id=parts[1])

    @field_validator("user_id", "session_id")
    @classmethod
    def _copick_name(cls, value: str, info: Any) -> str:
        return check_copick_name(value, info.field_name)


# Where `octopi segment` writes label volumes unless told otherwise (--seg-info).
DEFAULT_SEGMENTATION_TARGET = TargetSpec(name="predict", user_id="octopi", session_id="1")
# Where `octopi localize` writes picks and `octopi evaluate` reads them (--pick-info, --pred-info).
DEFAULT_PREDICTED_PICKS = PickSpec(user_id="octopi", session_id="1")


class DataConfig(Frozen):
    """Which tomograms and targets to use, and how runs are split."""

    configs: list[CopickSource] = Field(min_length=1, description="copick project config files")
    voxel_size_angstrom: float = Field(default=10.0, gt=0, description="Voxel size (Å)")
    tomo_algorithms: list[str] = Field(
        default=["wbp"], min_length=1, description="Tomogram algorithms; each is one sample"
    )
    target: TargetSpec = TargetSpec()
    ground_truth: PickSpec = Field(
        default=PickSpec(), description="picks that validation and test runs are scored against"
    )
    train_run_ids: list[str] | None = Field(default=None, description="Explicit training runs")
    validate_run_ids: list[str] | None = Field(default=None, description="Explicit validation runs")
    data_split: list[float] = Field(
        default=[0.8],
        min_length=1,
        max_length=2,
        description="[train] → train/val, [train, val] → train/val/test (rest is test)",
    )
    split_seed: int = Field(default=42, description="Seed of the random run split")

    @field_validator("data_split")
    @classmethod
    def _ratios(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < ratio < 1.0 for ratio in value):
            raise ValueError(f"data split ratios must lie strictly between 0 and 1, got {value}")
        if sum(value) >= 1.0:
            raise ValueError(
                f"data split ratios must sum to less than 1 (the rest is validation or test), "
                f"got {value} (sum {sum(value):g})"
            )
        return value

    @model_validator(mode="after")
    def _explicit_runs(self) -> DataConfig:
        if (self.train_run_ids is None) != (self.validate_run_ids is None):
            raise ValueError("give both --trainRunIDs and --validateRunIDs, or neither")
        if self.train_run_ids is not None:
            overlap = sorted(set(self.train_run_ids) & set(self.validate_run_ids or []))
            if overlap:
                raise ValueError(f"runs both in training and validation: {', '.join(overlap)}")
            if not self.train_run_ids or not self.validate_run_ids:
                raise ValueError("--trainRunIDs and --validateRunIDs must not be empty")
        names = [source.session_name for source in self.configs]
        if len(self.configs) > 1 and (None in names or len(set(names)) != len(names)):
            raise ValueError(
                "with several copick projects give each a distinct session name: "
                "--config name1,path1 --config name2,path2"
            )
        return self


class NormalisationConfig(Frozen):
    """Per-tomogram z-score normalisation, clipped (recorded in the model card)."""

    method: str = Field(
        default="zscore",
        pattern="^zscore$",
        description="zscore: subtract the tomogram's mean, divide by its standard deviation",
    )
    clip_sigma: float | None = Field(
        default=5.0, gt=0, description="Clip normalised values to ± this many σ; None: no clip"
    )


# --------------------------------------------------------------------------- models


class UnetConfig(Frozen):
    """MONAI UNet (residual units), the default of the published octopi."""

    model_type: Literal["Unet"] = "Unet"
    channels: list[int] = Field(default=[32, 64, 96, 96], min_length=2)
    strides: list[int] = Field(default=[2, 2, 1], min_length=1)
    num_res_units: int = Field(default=1, ge=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _lengths(self) -> UnetConfig:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"--strides needs one value fewer than --channels: got {len(self.channels)} "
                f"channels {self.channels} and {len(self.strides)} strides {self.strides}"
            )
        return self

    def downsampling_factor(self) -> int:
        """Product of the strides: the patch size must be a multiple of it."""
        factor = 1
        for stride in self.strides:
            factor *= stride
        return factor


class AttentionUnetConfig(UnetConfig):
    """MONAI AttentionUnet: UNet with attention gates on the skip connections."""

    model_type: Literal["AttentionUnet"] = "AttentionUnet"  # type: ignore[assignment]
    num_res_units: int = Field(default=0, ge=0, le=0, description="not used by AttentionUnet")


class SegResNetConfig(Frozen):
    """MONAI SegResNet (encoder-decoder with residual blocks)."""

    model_type: Literal["SegResNet"] = "SegResNet"
    init_filters: int = Field(default=16, ge=4)
    blocks_down: list[int] = Field(default=[1, 2, 2, 4], min_length=2)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    def downsampling_factor(self) -> int:
        return 2 ** (len(self.blocks_down) - 1)


class MedNeXtConfig(Frozen):
    """MONAI MedNeXt (ConvNeXt-style 3D encoder-decoder)."""

    model_type: Literal["MedNeXt"] = "MedNeXt"
    init_filters: int = Field(default=16, ge=4)
    blocks_down: list[int] = Field(default=[2, 2, 2, 2], min_length=2)
    blocks_bottleneck: int = Field(default=2, ge=1)
    expansion_ratio: int = Field(default=2, ge=1)
    kernel_size: int = Field(default=3, ge=3)

    def downsampling_factor(self) -> int:
        return 2 ** len(self.blocks_down)


class DynUNetConfig(Frozen):
    """MONAI DynUNet (the nnU-Net network): one level per filter entry, kernel 3."""

    model_type: Literal["DynUNet"] = "DynUNet"
    filters: list[int] = Field(
        default=[32, 64, 128, 256], min_length=2, description="feature maps per level"
    )
    strides: list[int] = Field(
        default=[1, 2, 2, 2],
        min_length=2,
        description="stride of each level (one per filter; the first is usually 1)",
    )
    res_block: bool = Field(default=True, description="residual blocks instead of plain ones")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout probability")

    @model_validator(mode="after")
    def _lengths(self) -> DynUNetConfig:
        if len(self.strides) != len(self.filters):
            raise ValueError(
                f"DynUNet needs one stride per filter entry: got {len(self.filters)} filters "
                f"{self.filters} and {len(self.strides)} strides {self.strides}"
            )
        return self

    def downsampling_factor(self) -> int:
        """Product of the strides: the patch size must be a multiple of it."""
        return math.prod(self.strides)


class SwinUNETRConfig(Frozen):
    """MONAI SwinUNETR (Swin transformer encoder, convolutional decoder; 4 stages)."""

    model_type: Literal["SwinUNETR"] = "SwinUNETR"
    feature_size: int = Field(
        default=24, ge=12, multiple_of=12, description="embedding size (a multiple of 12)"
    )
    depths: list[int] = Field(
        default=[2, 2, 2, 2], min_length=4, max_length=4, description="Swin blocks per stage"
    )
    window_size: int = Field(default=7, ge=2, description="attention window edge (tokens)")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout probability")
    use_v2: bool = Field(default=False, description="SwinUNETR-v2 (residual conv per stage)")

    def downsampling_factor(self) -> int:
        """Patch embedding 2 and four 2× merges: crops must be multiples of 32."""
        return 32


ModelArchitecture = Annotated[
    UnetConfig
    | AttentionUnetConfig
    | SegResNetConfig
    | MedNeXtConfig
    | DynUNetConfig
    | SwinUNETRConfig,
    Field(discriminator="model_type"),
]
MODEL_TYPES: tuple[str, ...] = (
    "Unet",
    "AttentionUnet",
    "SegResNet",
    "MedNeXt",
    "DynUNet",
    "SwinUNETR",
)


def canonical_model_type(name: str) -> str:
    """Map a case-insensitive model family name (``unet``, ``mednext``...) to its canonical form."""
    for model_type in MODEL_TYPES:
        if name.lower() == model_type.lower():
            return model_type
    raise InputError(f"unknown model type {name!r}; choose one of {', '.join(MODEL_TYPES)}")


# --------------------------------------------------------------------------- training


class LossConfig(Frozen):
    """Segmentation loss (MONAI losses)."""

    name: Literal["tversky", "focal_tversky", "weighted_focal_tversky", "focal", "dice_ce"] = (
        "tversky"
    )
    tversky_alpha: float = Field(default=0.3, gt=0.0, lt=1.0, description="false-positive weight")
    tversky_beta: float | None = Field(
        default=None, gt=0.0, lt=1.0, description="false-negative weight; None → 1 - alpha"
    )
    focal_gamma: float = Field(default=2.0, ge=0.0)


class AugmentationConfig(Frozen):
    """Random augmentations of training crops."""

    flip_probability: float = Field(default=0.5, ge=0.0, le=1.0)
    rotate90_probability: float = Field(default=0.5, ge=0.0, le=1.0, description="XY plane")
    intensity_scale: float = Field(default=0.1, ge=0.0, description="± relative scale")
    intensity_shift: float = Field(default=0.1, ge=0.0, description="± shift in std units")
    gaussian_noise_std: float = Field(default=0.0, ge=0.0)


def _positive_beta(name: str) -> str:
    if name.startswith("fBeta") and float(name.removeprefix("fBeta")) <= 0:
        raise ValueError(f"metric {name!r}: beta must be > 0 (fBeta0 would be precision alone)")
    return name


Metric = Annotated[
    str, Field(pattern=r"^(avg_f1|fBeta\d+(\.\d+)?)$"), AfterValidator(_positive_beta)
]
AmpMode = Literal["auto", "bf16", "fp16", "off"]


class TrainingConfig(Frozen):
    """How one model is trained (defaults of the published `octopi train`)."""

    num_epochs: int = Field(default=1000, ge=1)
    val_interval: int = Field(default=10, ge=1)
    batch_size: int = Field(default=16, ge=1, description="crops per tomogram per epoch")
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    warmup_epochs: int = Field(default=5, ge=0)
    ema_decay: float | None = Field(default=0.995, gt=0.0, lt=1.0, description="None → off")
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="validations without improvement before stopping"
    )
    best_metric: Metric = "avg_f1"
    ncache_tomos: int = Field(default=15, ge=1)
    background_ratio: float = Field(default=0.0, ge=0.0)
    dim_in: int = Field(default=96, ge=16, description="crop edge (voxels)")
    loss: LossConfig = LossConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    num_workers: int = Field(default=1, ge=0, description="background crop-sampling threads")
    seed: int = 42
    amp: AmpMode = "auto"

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
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    window_batch_size: int = Field(default=4, ge=1)
    tta: Literal["none", "flips", "rot90"] = Field(
        default="none", description="test-time augmentation: XY flips (4) or XY rotations (4)"
    )
    amp: AmpMode = "auto"
    save_probabilities: bool = Field(
        default=True,
        description="segment also writes the class probabilities (float16, (C, Z, Y, X)) into "
        "the label segmentation's store as the group 'probabilities', for localize's "
        "per-class thresholds; 2 bytes × classes per voxel before compression",
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
        balls drawn at 0.7 of the radius fill 0.34 of the sphere.
    min_separation_fraction: two picks of one class are at least this × radius apart; the lower
        scoring pick is dropped.
    per_class_threshold: class name → threshold, overriding score_threshold.
    per_class_min_size_fraction: class name → min_size_fraction, overriding it for that class.
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
    calibrate: bool = Field(
        default=True,
        description="after training, calibrate per-class thresholds and minimum sizes on the "
        "validation runs (F-beta) and store them in model_config.yaml",
    )
    calibration_thresholds: list[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        default=[0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7],
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

    distance_fraction: float = Field(default=0.5, gt=0.0)
    beta: float = Field(default=4.0, gt=0.0)
    class_weights: dict[str, float] = Field(default_factory=lambda: dict(CZII_CLASS_WEIGHTS))


# --------------------------------------------------------------------------- data preparation


class SynthesizeConfig(Frozen):
    """A synthetic copick project for demos, tests and benchmarks."""

    output: Path
    runs: int = Field(default=4, ge=1)
    shape_zyx: tuple[int, int, int] = (64, 128, 128)
    voxel_size_angstrom: float = Field(default=10.0, gt=0)
    seed: int = 0
    picks: PickSpec = PickSpec()
    run_prefix: str = "TS"
    preset: Literal["default", "hard"] = Field(
        default="default",
        description="simulation settings: default (the original generator, same arrays for the "
        "same seed) or hard (CTF with 2-4 µm defocus, lower SNR, more crowding, similar-size "
        "distractors, vesicles, gold beads, ice gradient); recorded in synthesis.json",
    )


class TargetsConfig(Frozen):
    """Picks → one multi-class label volume per run."""

    configs: list[CopickSource] = Field(min_length=1)
    voxel_size_angstrom: float = Field(default=10.0, gt=0)
    target: TargetSpec = TargetSpec()
    picks: PickSpec = PickSpec()
    objects: list[str] | None = Field(default=None, description="None → every particle object")
    radius_fraction: float = Field(
        default=0.7, gt=0.0, le=1.5, description="ball radius / particle radius (published: 0.7)"
    )
    run_ids: list[str] | None = None


class ImportConfig(Frozen):
    """MRC tomograms → copick tomograms."""

    config: Path
    input_dir: Path
    tomo_algorithm: str = "wbp"
    output_voxel_size_angstrom: float | None = Field(default=None, gt=0)
    overwrite: bool = False


# --------------------------------------------------------------------------- search and workflow


class SearchConfig(Frozen):
    """Model exploration: Optuna study settings."""

    model_type: Literal["Unet", "AttentionUnet", "SegResNet", "MedNeXt", "DynUNet", "SwinUNETR"] = (
        "Unet"
    )
    num_trials: int = Field(default=100, ge=1)
    random_seed: int = 42
    study_name: str = "model-search"
    pruner: Literal["median", "halving", "none"] = "median"
    ensemble_size: int = Field(
        default=3,
        ge=0,
        description="select-best also averages the top this-many COMPLETE trials into an "
        "ensemble (best_ensemble/, calibrated on the validation runs; evaluate-test scores "
        "it beside the best model); 0 or 1: no ensemble",
    )


class TrialResources(Frozen):
    """Resources of one trial job (Snakemake `resources:`)."""

    gpu: int = Field(default=1, ge=0)
    mem_mb: int = Field(default=16000, ge=256)
    runtime_minutes: int = Field(default=720, ge=1)
    threads: int = Field(default=4, ge=1)
    retries: int = Field(default=2, ge=0)
    warning_seconds: int = Field(
        default=300,
        ge=0,
        description="Slurm warns a trial job this many seconds before its time limit "
        "(sbatch --signal=TERM@N, sent up to 60 s earlier still); the trial then saves a "
        "checkpoint of its current step and exits, and its retry continues from that step. "
        "0: no warning (a trial killed at the limit resumes from its last epoch).",
    )


class MonitorConfig(Frozen):
    """What the study's head (`octopi model-explore` on a cluster) prints while it runs."""

    heartbeat_minutes: float = Field(
        default=5.0,
        gt=0,
        description="Print one line every N minutes: trials finished, running and queued on "
        "Slurm, and how long ago the head last noticed a job end.",
    )
    stall_minutes: float = Field(
        default=10.0,
        gt=0,
        description="Warn, naming the likely cause, when a trial's result has been on disk "
        "this long without the head noticing that its job ended (its job status checks get "
        "no answer).",
    )


class TrackingConfig(Frozen):
    """Where a study's trials log to MLflow. May change between runs of a study."""

    uri: str | None = Field(
        default=None,
        description="MLflow tracking URI of the trials: an existing server (http://host:port) "
        "or store, used as is (no server is started); 'none' turns tracking off. None: the "
        "study's own store STUDY/mlflow.db, written directly by local trials and through an "
        "MLflow server on the head node with a cluster profile (see server)",
    )
    server: bool | None = Field(
        default=None,
        description="Run an MLflow server on the head node for the study's store (its only "
        "writer; the trials log over HTTP). None: with a cluster profile only; false: never "
        "(every trial writes mlflow.db, unsafe on NFS/Lustre from many nodes)",
    )
    server_host: str | None = Field(
        default=None,
        description="Name or address the trial jobs reach the head node at. None: its fully "
        "qualified name, else its host name",
    )
    server_bind: str = Field(
        default="0.0.0.0",
        description="Address the server listens on: 0.0.0.0 all interfaces; an address of the "
        "cluster network keeps others out",
    )
    server_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Server port. 0: the study's previous port if free, else any free port",
    )

    @model_validator(mode="after")
    def _uri_or_server(self) -> TrackingConfig:
        if self.uri is not None and self.server:
            raise ValueError(
                "tracking.uri names a store to use and tracking.server: true starts one; set "
                "only one of them"
            )
        return self


class WorkflowConfig(Frozen):
    """Everything a model-exploration study runs with (the Snakemake config)."""

    data: DataConfig
    training: TrainingConfig = TrainingConfig()
    search: SearchConfig = SearchConfig()
    inference: InferenceConfig = InferenceConfig()
    localize: LocalizeConfig = LocalizeConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    trial_resources: TrialResources = TrialResources()
    monitor: MonitorConfig = Field(
        default=MonitorConfig(),
        description="what the head prints while a cluster study runs (heartbeat, stall warning)",
    )
    tracking: TrackingConfig = Field(
        default=TrackingConfig(),
        description="where the trials log to MLflow; the MLflow server of a cluster run",
    )
    create_targets: TargetsConfig | None = None


def workflow_json_schema() -> dict[str, Any]:
    """JSON schema of :class:`WorkflowConfig` (committed as workflow/schemas/config.schema.json)."""
    schema = WorkflowConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "octopi model-exploration workflow config"
    return schema
