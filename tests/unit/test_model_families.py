"""DynUNet and SwinUNETR beside the four other families: built by name, a real forward pass
on a tiny crop, the meta-device memory trace against the tensors a real CPU forward saves."""

from __future__ import annotations

import pytest
import torch

from octopi.config import (
    MODEL_TYPES,
    DynUNetConfig,
    ModelArchitecture,
    SwinUNETRConfig,
    canonical_model_type,
)
from octopi.errors import InputError
from octopi.models import training_memory
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import build_model, check_patch_size

CLASSES = [
    ClassInfo(name="ribosome", label=1, radius_angstrom=150.0),
    ClassInfo(name="apo-ferritin", label=2, radius_angstrom=60.0),
]
SMALL: dict[str, tuple[ModelArchitecture, int]] = {
    "DynUNet": (DynUNetConfig(filters=[8, 16, 32], strides=[1, 2, 2], res_block=True), 32),
    "SwinUNETR": (SwinUNETRConfig(feature_size=12, window_size=4), 64),
}


def card(architecture: ModelArchitecture, dim_in: int) -> ModelCard:
    return ModelCard(
        architecture=architecture,
        dim_in=dim_in,
        classes=CLASSES,
        voxel_size_angstrom=10.0,
        tomo_algorithms=["wbp"],
    )


def saved_bytes_measured(model: torch.nn.Module, dim_in: int) -> int:
    """Bytes autograd saves for backward in a real CPU forward (deduplicated by storage),
    plus the output: what the meta-device trace estimates."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(torch.randn(1, 1, dim_in, dim_in, dim_in))
    return sum(saved.values()) + output.numel() * output.element_size()


def test_the_new_families_are_offered_by_name() -> None:
    assert {"DynUNet", "SwinUNETR"} <= set(MODEL_TYPES)
    assert canonical_model_type("dynunet") == "DynUNet"
    assert canonical_model_type("SWINUNETR") == "SwinUNETR"


@pytest.mark.parametrize("model_type", sorted(SMALL))
def test_forward_backward_on_a_tiny_crop(model_type: str) -> None:
    torch.manual_seed(0)
    architecture, dim_in = SMALL[model_type]
    model = build_model(card(architecture, dim_in))
    output = model(torch.randn(2, 1, dim_in, dim_in, dim_in))
    assert tuple(output.shape) == (2, 3, dim_in, dim_in, dim_in)
    output.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("model_type", sorted(SMALL))
def test_memory_trace_matches_a_measured_forward(model_type: str) -> None:
    torch.manual_seed(0)
    architecture, dim_in = SMALL[model_type]
    measured = saved_bytes_measured(build_model(card(architecture, dim_in)), dim_in)
    traced, parameters = training_memory._saved_bytes_per_sample(
        architecture.model_dump_json(), dim_in, 3
    )
    assert traced == pytest.approx(measured, rel=0.01)
    one = training_memory.estimate_training_bytes(architecture, dim_in, 1, 3)
    two = training_memory.estimate_training_bytes(architecture, dim_in, 2, 3)
    assert two - one == pytest.approx(training_memory.ACTIVATION_OVERHEAD * traced, abs=1)
    assert parameters == sum(
        p.numel() for p in build_model(card(architecture, dim_in)).parameters()
    )


def test_swin_unetr_needs_feature_size_a_multiple_of_12() -> None:
    with pytest.raises(ValueError, match="multiple of 12"):
        SwinUNETRConfig(feature_size=16)


def test_dynunet_needs_one_stride_per_level() -> None:
    with pytest.raises(ValueError, match="one stride per filter"):
        DynUNetConfig(filters=[8, 16, 32], strides=[1, 2])


@pytest.mark.parametrize(
    ("architecture", "dim_in", "message"),
    [
        (SwinUNETRConfig(feature_size=12), 48, "not divisible by 32"),
        (SwinUNETRConfig(feature_size=12), 32, "too small for SwinUNETR"),
        (DynUNetConfig(filters=[8, 16, 32], strides=[1, 2, 2]), 30, "not divisible by 4"),
    ],
)
def test_crops_the_network_cannot_take_are_refused(
    architecture: ModelArchitecture, dim_in: int, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        check_patch_size(card(architecture, dim_in))


@pytest.mark.parametrize("model_type", ["dynunet", "SwinUNETR"])
def test_train_builds_the_family_defaults(model_type: str) -> None:
    from octopi.cli.train_cmd import _architecture

    none = {"channels": None, "strides": None, "res_units": None}
    architecture = _architecture({"model_type": model_type, **none})
    assert (
        architecture
        == {"DynUNet": DynUNetConfig(), "SwinUNETR": SwinUNETRConfig()}[
            canonical_model_type(model_type)
        ]
    )
