"""Layers swapped for faster equivalents in a network that only predicts.

A transposed convolution of stride 1 computes exactly a plain convolution whose kernel is
flipped along every spatial axis and whose two channel axes are swapped. oneDNN runs the
plain one faster: MONAI's UNet has one in its innermost up-sampling block, and on a 2-core
CPU (bf16, a batch of four 64³ windows, the default UNet) it takes 24 ms there instead of
35 ms (``docs/benchmarks.md``, "Inference levers"). Transposed convolutions that up-sample
(stride 2) stay: their plain-convolution equivalents were slower.

The swap changes the model's ``state_dict`` (the kernel's axes), so it is for networks that
are neither trained nor saved afterwards: :func:`octopi.inference.ensemble.load_ensemble`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["plain_convolution", "swap_for_inference"]


def plain_convolution(layer: nn.ConvTranspose3d) -> nn.Conv3d | None:
    """The :class:`~torch.nn.Conv3d` that computes exactly what ``layer`` computes, with the
    same dtype and device; None where there is none here: a stride other than 1, an output
    padding, grouped channels, a padding mode other than zeros, or a padding wider than the
    (dilated) kernel."""
    if layer.groups != 1 or layer.padding_mode != "zeros":
        return None
    if any(s != 1 for s in layer.stride) or any(p != 0 for p in layer.output_padding):
        return None
    if isinstance(layer.padding, str):
        return None
    padding = tuple(
        d * (k - 1) - p
        for k, d, p in zip(layer.kernel_size, layer.dilation, layer.padding, strict=True)
    )
    if any(p < 0 for p in padding):
        return None
    weight = layer.weight.detach()
    conv = nn.Conv3d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        padding=padding,
        dilation=layer.dilation,
        bias=layer.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        # (in, out, kz, ky, kx) → (out, in, kz, ky, kx), every spatial axis reversed
        conv.weight.copy_(weight.transpose(0, 1).flip(2, 3, 4))
        if layer.bias is not None:
            conv.bias.copy_(layer.bias.detach())
    conv.train(layer.training)
    return conv


def swap_for_inference(model: nn.Module) -> int:
    """Replace, in place, every stride-1 ``ConvTranspose3d`` of ``model`` by its
    :func:`plain_convolution`; returns how many were replaced. The outputs stay the same
    (to float rounding); the ``state_dict`` does not, so never train or save ``model`` after."""
    swaps = [
        (parent, name, conv)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.ConvTranspose3d and (conv := plain_convolution(child)) is not None
    ]
    for parent, name, conv in swaps:
        setattr(parent, name, conv)
    return len(swaps)
