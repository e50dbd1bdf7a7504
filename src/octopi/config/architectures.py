"""Network architectures: one config model per family (the search spaces draw from them).

Part of :mod:`octopi.config` (import from there).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from octopi.config.base import (
    Frozen,
)
from octopi.errors import InputError


class UnetConfig(Frozen):
    """MONAI UNet (residual units), the default of the published octopi."""

    model_type: Literal["Unet"] = Field(default="Unet", description="discriminator")
    channels: list[int] = Field(
        default=[32, 64, 96, 96], min_length=2, description="feature maps per level"
    )
    strides: list[int] = Field(
        default=[2, 2, 1],
        min_length=1,
        description="downsampling between levels (one fewer than channels)",
    )
    num_res_units: int = Field(default=1, ge=0, description="residual units per level")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout probability")

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

    model_type: Literal["AttentionUnet"] = Field(
        default="AttentionUnet", description="discriminator"
    )  # type: ignore[assignment]
    num_res_units: int = Field(default=0, ge=0, le=0, description="not used by AttentionUnet")


class SegResNetConfig(Frozen):
    """MONAI SegResNet (encoder-decoder with residual blocks)."""

    model_type: Literal["SegResNet"] = Field(default="SegResNet", description="discriminator")
    init_filters: int = Field(
        default=16, ge=4, description="feature maps of the first level (doubling per level)"
    )
    blocks_down: list[int] = Field(
        default=[1, 2, 2, 4], min_length=2, description="residual blocks per encoder level"
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout probability")

    def downsampling_factor(self) -> int:
        return 2 ** (len(self.blocks_down) - 1)


class MedNeXtConfig(Frozen):
    """MONAI MedNeXt (ConvNeXt-style 3D encoder-decoder)."""

    model_type: Literal["MedNeXt"] = Field(default="MedNeXt", description="discriminator")
    init_filters: int = Field(default=16, ge=4, description="feature maps of the first level")
    blocks_down: list[int] = Field(
        default=[2, 2, 2, 2], min_length=2, description="MedNeXt blocks per encoder level"
    )
    blocks_bottleneck: int = Field(default=2, ge=1, description="blocks in the bottleneck")
    expansion_ratio: int = Field(default=2, ge=1, description="channel expansion inside a block")
    kernel_size: int = Field(default=3, ge=3, description="depthwise convolution kernel")

    def downsampling_factor(self) -> int:
        return 2 ** len(self.blocks_down)


class DynUNetConfig(Frozen):
    """MONAI DynUNet (the nnU-Net network): one level per filter entry, kernel 3."""

    model_type: Literal["DynUNet"] = Field(default="DynUNet", description="discriminator")
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

    model_type: Literal["SwinUNETR"] = Field(default="SwinUNETR", description="discriminator")
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
