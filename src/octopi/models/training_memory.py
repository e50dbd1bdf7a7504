"""Memory bound on crop × batch: the estimated peak device memory of one training step.

:func:`estimate_training_bytes` traces the network on PyTorch's ``meta`` device (shapes only,
no memory, ~0.1 s) and sums the tensors autograd keeps for the backward pass.
:func:`largest_batch` turns that into the largest batch of ``dim_in³`` crops that fits
:data:`MEMORY_FRACTION` of a device's memory; :func:`octopi.models.trial_sampling.suggest`
uses it to lower a trial's batch. All sizes are bytes; crops are cubes of ``dim_in`` voxels
with one input channel.
"""

from __future__ import annotations

import functools

from octopi.config import ModelArchitecture

MEMORY_FRACTION = 0.7
"""Share of the device memory a trial may plan to use (the rest: CUDA context, caches)."""
ACTIVATION_OVERHEAD = 1.5
"""Peak / saved activations: gradient buffers in flight, cuDNN workspace, fragmentation."""
BYTES_PER_WEIGHT = 20
"""fp32 weight, gradient, AdamW's two moments and the EMA copy."""
DEFAULT_OUT_CHANNELS = 7
"""Background + the six CZII classes, when the trial does not know the project's classes."""

# Calibration. The tensors autograd saves for backward (fp32, deduplicated by storage) were
# measured on the CPU with torch.autograd.graph.saved_tensors_hooks during a real forward pass
# (torch 2.13, MONAI 1.6, 7 output channels) and compared with the meta-device trace below:
#   family         architecture                                 crop³×batch  CPU B/voxel  meta
#   Unet (default) ch 32,64,96,96 strides 2,2,1 res 1            64³×1        375.2        375.2
#   Unet           ch 16,32,64,64 strides 2,2,1 res 2            64³×1        307.7        307.7
#   Unet           ch 8..64 (6 levels) strides 2,2,2,1,1 res 1   64³×1        190.9        189.7
#   AttentionUnet  ch 16,32,64,64 strides 2,2,1                  64³×1        1121.1       1121.1
#   SegResNet      16 filters, blocks 1,2,2,4                    64³×1        1104.7       1104.7
#   MedNeXt        16 filters, blocks 2,2,2,2, expansion 2       64³×1        3624.5       3624.5
#   DynUNet        filters 32,64,128,256 strides 1,2,2,2 res    64³×1        1976.2       1976.2
#   DynUNet        filters 16..256 (5 levels), plain blocks      64³×1        969.2        969.2
#   SwinUNETR      feature 24, depths 2,2,2,2, window 7          64³×1        4568.2       4568.2
#   SwinUNETR      feature 12, depths 2,2,6,2, window 4          64³×1        1347.8       1347.8
# Bytes per voxel are flat in crop size (Unet default: 427 at 32³×2, 375 at 64³, 358 at
# 160³×48) and linear in batch, so one trace at batch 1 gives every batch size. A
# channels-per-voxel formula fitted to 25 random architectures per family was off by up to
# 34 % for the U-Net; the trace is exact for any architecture, hence its use.


_BUILT_ON_CPU = frozenset({"SwinUNETR"})
"""Families whose constructor reads tensor values (``Tensor.item()``), which the meta device
cannot: built on the CPU (about a second) and moved to the meta device for the trace."""


@functools.lru_cache(maxsize=64)
def _saved_bytes_per_sample(
    architecture_json: str, dim_in: int, out_channels: int
) -> tuple[int, int]:
    """(bytes autograd saves for one crop, number of parameters), traced on the meta device."""
    import torch
    from pydantic import TypeAdapter

    from octopi.models.registry import BUILDERS

    architecture = TypeAdapter(ModelArchitecture).validate_json(architecture_json)
    if architecture.model_type in _BUILT_ON_CPU:
        model = BUILDERS[architecture.model_type](architecture, out_channels).to("meta")
    with torch.device("meta"):
        if architecture.model_type not in _BUILT_ON_CPU:
            model = BUILDERS[architecture.model_type](architecture, out_channels)
        image = torch.empty(1, 1, dim_in, dim_in, dim_in)
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        base = tensor._base if tensor._base is not None else tensor
        saved[id(base)] = base.numel() * base.element_size()
        return tensor

    # The graph (alive while ``output`` is) holds every saved tensor, so ids stay unique.
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(image)
    output_bytes = output.numel() * output.element_size()
    parameters = sum(p.numel() for p in model.parameters())
    return sum(saved.values()) + output_bytes, parameters


def estimate_training_bytes(
    architecture: ModelArchitecture,
    dim_in: int,
    batch_size: int,
    out_channels: int = DEFAULT_OUT_CHANNELS,
) -> int:
    """Estimated peak device memory (bytes) of one fp32 training step.

    ``ACTIVATION_OVERHEAD`` × saved activations (traced on the meta device, see the
    calibration note above) × ``batch_size`` + ``BYTES_PER_WEIGHT`` × parameters. Mixed
    precision roughly halves the activations, so the estimate errs on the safe side.
    """
    per_sample, parameters = _saved_bytes_per_sample(
        architecture.model_dump_json(), int(dim_in), int(out_channels)
    )
    return int(ACTIVATION_OVERHEAD * per_sample * batch_size + BYTES_PER_WEIGHT * parameters)


def largest_batch(
    architecture: ModelArchitecture,
    dim_in: int,
    device_memory_bytes: int,
    out_channels: int = DEFAULT_OUT_CHANNELS,
) -> int:
    """The largest batch whose :func:`estimate_training_bytes` fits ``MEMORY_FRACTION`` of
    ``device_memory_bytes`` (0 when not even one crop fits)."""
    one = estimate_training_bytes(architecture, dim_in, 1, out_channels)
    fixed = estimate_training_bytes(architecture, dim_in, 0, out_channels)
    per_crop = max(one - fixed, 1)
    return max(0, int((MEMORY_FRACTION * device_memory_bytes - fixed) // per_crop))
