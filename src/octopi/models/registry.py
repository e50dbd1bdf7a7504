"""Networks by name: one builder per model family, all MONAI implementations."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from octopi.config import (
    AttentionUnetConfig,
    DynUNetConfig,
    MedNeXtConfig,
    ModelArchitecture,
    SegResNetConfig,
    SwinUNETRConfig,
    UnetConfig,
)
from octopi.errors import InputError
from octopi.input_files import load_torch_file
from octopi.models.model_card import ModelCard
from octopi.models.monai_import import import_monai

if TYPE_CHECKING:
    import torch


def _unet(arch: UnetConfig, out_channels: int) -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=out_channels,
        channels=arch.channels,
        strides=arch.strides,
        num_res_units=arch.num_res_units,
        dropout=arch.dropout,
        norm="INSTANCE",
    )


def _attention_unet(arch: AttentionUnetConfig, out_channels: int) -> torch.nn.Module:
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(
        spatial_dims=3,
        in_channels=1,
        out_channels=out_channels,
        channels=arch.channels,
        strides=arch.strides,
        dropout=arch.dropout,
    )


def _segresnet(arch: SegResNetConfig, out_channels: int) -> torch.nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(
        spatial_dims=3,
        init_filters=arch.init_filters,
        in_channels=1,
        out_channels=out_channels,
        dropout_prob=arch.dropout or None,
        blocks_down=tuple(arch.blocks_down),
        blocks_up=tuple([1] * (len(arch.blocks_down) - 1)),
    )


def _mednext(arch: MedNeXtConfig, out_channels: int) -> torch.nn.Module:
    from monai.networks.nets import MedNeXt

    return MedNeXt(
        spatial_dims=3,
        init_filters=arch.init_filters,
        in_channels=1,
        out_channels=out_channels,
        encoder_expansion_ratio=arch.expansion_ratio,
        decoder_expansion_ratio=arch.expansion_ratio,
        bottleneck_expansion_ratio=arch.expansion_ratio,
        kernel_size=arch.kernel_size,
        blocks_down=tuple(arch.blocks_down),
        blocks_bottleneck=arch.blocks_bottleneck,
        blocks_up=tuple(reversed(arch.blocks_down)),
    )


def _dynunet(arch: DynUNetConfig, out_channels: int) -> torch.nn.Module:
    from monai.networks.nets import DynUNet

    return DynUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=out_channels,
        kernel_size=[3] * len(arch.strides),
        strides=arch.strides,
        upsample_kernel_size=arch.strides[1:],
        filters=arch.filters,
        dropout=arch.dropout or None,
        res_block=arch.res_block,
    )


def _swin_unetr(arch: SwinUNETRConfig, out_channels: int) -> torch.nn.Module:
    from monai.networks.nets import SwinUNETR

    return SwinUNETR(
        in_channels=1,
        out_channels=out_channels,
        depths=tuple(arch.depths),
        window_size=arch.window_size,
        feature_size=arch.feature_size,
        drop_rate=arch.dropout,
        use_v2=arch.use_v2,
        spatial_dims=3,
    )


def _after_monai_import(build: Callable) -> Callable:
    """``build``, run after :func:`~octopi.models.monai_import.import_monai` (MONAI without
    its import-everything start-up)."""

    @functools.wraps(build)
    def built(arch: ModelArchitecture, out_channels: int) -> torch.nn.Module:
        import_monai()
        return build(arch, out_channels)

    return built


BUILDERS: dict[str, Callable] = {
    name: _after_monai_import(build)
    for name, build in {
        "Unet": _unet,
        "AttentionUnet": _attention_unet,
        "SegResNet": _segresnet,
        "MedNeXt": _mednext,
        "DynUNet": _dynunet,
        "SwinUNETR": _swin_unetr,
    }.items()
}


def minimum_dim_in(architecture: ModelArchitecture) -> int:
    """The smallest crop edge (voxels) the network trains on: 16, a multiple of its
    downsampling; SwinUNETR's instance norms need a bottleneck of 2³ voxels or more (64)."""
    factor = architecture.downsampling_factor()
    if architecture.model_type == "SwinUNETR":
        return 2 * factor
    return max(16, factor)


def check_patch_size(card: ModelCard, dim_in: int | None = None) -> None:
    """Raise ``InputError`` unless the patch edge is a multiple of the network's downsampling
    (and, for SwinUNETR, at least :func:`minimum_dim_in`)."""
    edge = card.dim_in if dim_in is None else dim_in
    factor = card.architecture.downsampling_factor()
    if edge % factor:
        raise InputError(
            f"--dim-in {edge} is not divisible by {factor}, the {card.architecture.model_type}'s "
            f"total downsampling (product of the strides); use a multiple of {factor}"
        )
    if card.architecture.model_type == "SwinUNETR" and edge < minimum_dim_in(card.architecture):
        raise InputError(
            f"--dim-in {edge} is too small for SwinUNETR: its bottleneck would be one voxel; "
            f"use {minimum_dim_in(card.architecture)} or more"
        )


def build_model(card: ModelCard) -> torch.nn.Module:
    """A freshly initialised network for ``card`` (weights from torch's current RNG state)."""
    check_patch_size(card)
    return BUILDERS[card.architecture.model_type](card.architecture, card.out_channels)


def load_model(card: ModelCard, weights_path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """Build the network of ``card`` and load ``weights_path`` into it (strictly).

    Raises :class:`~octopi.errors.InputError` naming the file when it is missing, not a
    weights file, or holds the weights of another architecture.
    """
    weights_path = Path(weights_path)
    state = load_torch_file(weights_path, "model weights", map_location=device)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a full training checkpoint
    if not isinstance(state, dict) or not state:
        raise InputError(f"model weights {weights_path} hold no weights (a {type(state).__name__})")
    model = build_model(card)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        first_lines = "\n".join(str(error).splitlines()[:4])
        raise InputError(
            f"weights {weights_path} do not match the model config "
            f"({card.architecture.model_type}, {card.out_channels} output channels): {first_lines}"
        ) from error
    return model.to(device)
