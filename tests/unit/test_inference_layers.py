"""Stride-1 transposed convolutions swapped for plain ones in networks that only predict:
the same outputs, for every layer shape the swap accepts and for every model family, and
``load_ensemble`` hands out swapped networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from octopi.config import (
    AttentionUnetConfig,
    DynUNetConfig,
    MedNeXtConfig,
    SegResNetConfig,
    SwinUNETRConfig,
    UnetConfig,
)
from octopi.inference.ensemble import load_ensemble
from octopi.models.inference_layers import plain_convolution, swap_for_inference
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import build_model


def stride_one_transposed(model: nn.Module) -> int:
    return sum(1 for m in model.modules() if type(m) is nn.ConvTranspose3d and set(m.stride) == {1})


@pytest.mark.parametrize(
    ("kernel", "padding", "dilation", "bias"),
    [(3, 1, 1, True), (3, 0, 1, False), (3, 2, 1, True), (1, 0, 1, True), (5, 2, 1, True),
     ((3, 1, 5), (1, 0, 2), 1, True), (3, 2, 2, True), (3, 4, 2, False)],
)  # fmt: skip
def test_plain_convolution_computes_what_the_transposed_one_does(
    kernel, padding, dilation, bias
) -> None:
    torch.manual_seed(0)
    layer = nn.ConvTranspose3d(5, 3, kernel, padding=padding, dilation=dilation, bias=bias)
    x = torch.randn(2, 5, 9, 8, 10)
    conv = plain_convolution(layer)
    assert type(conv) is nn.Conv3d
    with torch.no_grad():
        expected, got = layer(x), conv(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layer",
    [
        nn.ConvTranspose3d(4, 4, 3, stride=2, padding=1, output_padding=1),
        nn.ConvTranspose3d(4, 4, 3, stride=(1, 2, 1), padding=1),
        nn.ConvTranspose3d(4, 4, 3, padding=1, groups=2),
        nn.ConvTranspose3d(4, 4, 3, padding=3),  # wider than the kernel: crops the output
    ],
)
def test_layers_without_a_plain_equivalent_are_left_alone(layer: nn.ConvTranspose3d) -> None:
    assert plain_convolution(layer) is None
    model = nn.Sequential(layer)
    assert swap_for_inference(model) == 0
    assert model[0] is layer


FAMILIES = {
    "Unet (default shape)": (UnetConfig(), 16),
    "Unet, two stride-1 levels": (UnetConfig(channels=[4, 8, 8, 8], strides=[2, 1, 1]), 16),
    "AttentionUnet": (AttentionUnetConfig(channels=[4, 8, 16], strides=[2, 1]), 16),
    "SegResNet": (SegResNetConfig(init_filters=8), 16),
    "MedNeXt": (MedNeXtConfig(init_filters=4), 32),
    "DynUNet": (DynUNetConfig(filters=[4, 8, 16], strides=[1, 2, 2]), 16),
    "SwinUNETR": (SwinUNETRConfig(feature_size=12, window_size=4), 64),
}


def card(architecture, dim_in: int) -> ModelCard:
    return ModelCard(
        architecture=architecture,
        dim_in=dim_in,
        classes=[ClassInfo(name="ribosome", label=1, radius_angstrom=150.0)],
        voxel_size_angstrom=10.0,
        tomo_algorithms=["wbp"],
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_predicts_the_same_after_the_swap(family: str) -> None:
    architecture, dim_in = FAMILIES[family]
    torch.manual_seed(0)
    model = build_model(card(architecture, dim_in)).eval()
    x = torch.randn(1, 1, dim_in, dim_in, dim_in)
    with torch.no_grad():
        expected = model(x)
        had = stride_one_transposed(model)
        assert swap_for_inference(model) == had
        got = model(x)
    assert stride_one_transposed(model) == 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    if family.startswith("Unet"):
        assert had == {"Unet (default shape)": 1, "Unet, two stride-1 levels": 2}[family]


def test_load_ensemble_hands_out_swapped_networks(tmp_path) -> None:
    model_card = card(UnetConfig(channels=[4, 8, 16], strides=[2, 1]), 16)
    model_card.save(tmp_path / "model_config.yaml")
    torch.manual_seed(0)
    reference = build_model(model_card).eval()
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    _, (model,) = load_ensemble([tmp_path / "model_config.yaml"], [tmp_path / "weights.pth"])
    assert stride_one_transposed(reference) == 1
    assert stride_one_transposed(model) == 0
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)
