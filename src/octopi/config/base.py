"""Shared config pieces: the frozen base model, copick sources, targets, picks, data
selection and input normalisation.

Part of :mod:`octopi.config` (import from there).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

    path: Path = Field(description="copick project config JSON")
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

    name: str = Field(default="targets", description="segmentation name")
    user_id: str = Field(default="octopi", description="copick user ID")
    session_id: str = Field(default="1", description="copick session ID")

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

    user_id: str = Field(default="curation", description="copick user ID")
    session_id: str = Field(default="0", description="copick session ID")

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
    target: TargetSpec = Field(
        default=TargetSpec(),
        description="segmentation the networks learn (`octopi create-targets`)",
    )
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
