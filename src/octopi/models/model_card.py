"""The self-describing model card, ``model_config.yaml``.

A trained model folder holds ``model_config.yaml`` and ``best_model_weights.pth``; the card
names everything inference and fine-tuning need: the network and its architecture, the patch
size, the classes with labels and radii, the voxel size, the tomogram algorithms, the target
and the input normalisation, and (after training or ``octopi calibrate``) the per-class
probability thresholds and minimum region sizes that maximise F-beta on validation runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from octopi import __version__
from octopi.config import (
    Frozen,
    LocalizeConfig,
    ModelArchitecture,
    NormalisationConfig,
    TargetSpec,
    UnetConfig,
)
from octopi.input_files import read_yaml_mapping, validate_file


class ClassInfo(Frozen):
    """One output class (label ≥ 1; channel 0 is background)."""

    name: str
    label: int = Field(ge=1)
    radius_angstrom: float = Field(gt=0)


class ClassCalibration(Frozen):
    """The calibrated picking settings of one class, with the validation figures behind them:
    F-beta, precision and recall of the chosen settings, and F-beta of the argmax labels."""

    threshold: float | None = Field(
        gt=0.0,
        le=1.0,
        description="class probability threshold; null: the class is picked from the argmax "
        "of the probabilities, which validated better than every threshold",
    )
    min_size_fraction: float = Field(ge=0.0, description="smallest kept region × sphere volume")
    fbeta: float = Field(ge=0.0, le=1.0, description="validation F-beta with these settings")
    precision: float = Field(ge=0.0, le=1.0)
    recall: float = Field(ge=0.0, le=1.0)
    fbeta_labels: float = Field(ge=0.0, le=1.0, description="validation F-beta of the argmax")


class Calibration(Frozen):
    """Per-class thresholds and minimum sizes chosen for F-beta (``beta``) on ``run_ids``;
    ``weighted_fbeta`` (class-weighted, as the study scores) of the argmax labels
    (``labels``) and of the calibrated settings (``calibrated``)."""

    beta: float = Field(gt=0.0)
    run_ids: list[str] = Field(min_length=1, description="runs the settings were chosen on")
    classes: dict[str, ClassCalibration]
    weighted_fbeta: dict[str, float] = Field(
        default_factory=dict, description="labels / calibrated → class-weighted F-beta"
    )

    def localize_settings(self, base: LocalizeConfig) -> LocalizeConfig:
        """``base`` with this calibration's per-class thresholds (or argmax) and minimum sizes."""
        return calibrated_settings(
            base,
            {
                name: {"threshold": c.threshold, "min_size_fraction": c.min_size_fraction}
                for name, c in self.classes.items()
            },
        )


def calibrated_settings(
    base: LocalizeConfig, calibration: Mapping[str, Mapping[str, float | None]]
) -> LocalizeConfig:
    """``base`` with a calibration (class → ``{"threshold", "min_size_fraction"}``, as stored
    with the probabilities; threshold None: argmax) applied; explicit per-class minimum sizes
    of ``base`` win. The one place a calibration becomes localize settings."""
    thresholds = {n: c["threshold"] for n, c in calibration.items() if c["threshold"] is not None}
    argmax = sorted(n for n, c in calibration.items() if c["threshold"] is None)
    sizes = {name: c["min_size_fraction"] for name, c in calibration.items()}
    sizes.update(base.per_class_min_size_fraction or {})
    return base.model_copy(
        update={
            "per_class_threshold": thresholds,
            "per_class_min_size_fraction": sizes,
            "argmax_classes": argmax or None,
        }
    )


class ModelCard(Frozen):
    """Everything that describes a trained network (``model_config.yaml``)."""

    architecture: ModelArchitecture = UnetConfig()
    dim_in: int = Field(ge=16, description="training crop edge (voxels)")
    classes: list[ClassInfo] = Field(min_length=1)
    voxel_size_angstrom: float = Field(gt=0)
    tomo_algorithms: list[str] = Field(min_length=1)
    target: TargetSpec = TargetSpec()
    normalisation: NormalisationConfig = NormalisationConfig()
    octopi_version: str = __version__
    calibration: Calibration | None = Field(
        default=None, description="per-class picking settings calibrated for F-beta; None: none"
    )

    @property
    def out_channels(self) -> int:
        """Background plus the highest class label."""
        return 1 + max(c.label for c in self.classes)

    def save(self, path: str | Path) -> None:
        from octopi.io_utils import atomic_write_yaml

        atomic_write_yaml(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read ``model_config.yaml``; an InputError naming the file when it is not one."""
        values = read_yaml_mapping(path, "model config")
        return validate_file(cls, values, path, "model config")
