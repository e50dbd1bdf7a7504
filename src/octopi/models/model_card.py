"""The self-describing model card, ``model_config.yaml``.

A trained model folder holds ``model_config.yaml`` and ``best_model_weights.pth``; the card
names everything inference and fine-tuning need: the network and its architecture, the patch
size, the classes with labels and radii, the voxel size, the tomogram algorithms, the target
and the input normalisation.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from octopi import __version__
from octopi.config import Frozen, ModelArchitecture, NormalisationConfig, TargetSpec, UnetConfig
from octopi.input_files import read_yaml_mapping, validate_file


class ClassInfo(Frozen):
    """One output class (label ≥ 1; channel 0 is background)."""

    name: str
    label: int = Field(ge=1)
    radius_angstrom: float = Field(gt=0)


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
