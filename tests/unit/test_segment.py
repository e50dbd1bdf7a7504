"""Tests for octopi.inference.segment: streamed sliding-window segmentation and ensembles."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from octopi.config import InferenceConfig, UnetConfig
from octopi.inference import segment as segment_module
from octopi.inference.ensemble import load_ensemble, tta_transforms
from octopi.inference.segment import ProbabilityVolume, segment_volume, window_starts
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import build_model

EXACT = InferenceConfig(amp="off")


def tiny_card(**changes) -> ModelCard:
    """A small Unet card: 3 classes, crop 16, channels [4, 8, 16], strides [2, 2]."""
    values = {
        "architecture": UnetConfig(channels=[4, 8, 16], strides=[2, 2], num_res_units=0),
        "dim_in": 16,
        "classes": [
            ClassInfo(name="apo-ferritin", label=1, radius_angstrom=60.0),
            ClassInfo(name="ribosome", label=2, radius_angstrom=150.0),
            ClassInfo(name="thyroglobulin", label=3, radius_angstrom=130.0),
        ],
        "voxel_size_angstrom": 10.0,
        "tomo_algorithms": ["wbp"],
    }
    return ModelCard(**(values | changes))


def tiny_unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(tiny_card()).eval()


def pointwise_net(channels: int = 4, seed: int = 0) -> torch.nn.Module:
    """A 1×1×1 convolution: exactly equivariant to flips and rotations."""
    torch.manual_seed(seed)
    return torch.nn.Conv3d(1, channels, kernel_size=1).eval()


def random_volume(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def monai_reference(model, volume, window, overlap, batch=4):
    """Whole-volume MONAI sliding window (Gaussian) on softmax outputs: (C, Z, Y, X)."""
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        return sliding_window_inference(
            torch.from_numpy(volume)[None, None],
            window,
            batch,
            lambda x: torch.softmax(model(x), dim=1),
            overlap=overlap,
            mode="gaussian",
        )[0].numpy()


# --------------------------------------------------------------------------- shapes and grid


@pytest.mark.parametrize(
    "shape",
    [(23, 19, 29), (10, 12, 14), (5, 30, 3), (16, 16, 16)],
    ids=["odd", "smaller-than-window", "thin", "exactly-window"],
)
def test_output_shape_and_dtype(shape):
    result = segment_volume([tiny_unet()], random_volume(shape), 16, EXACT)
    assert result.labels.shape == shape
    assert result.confidence.shape == shape
    assert result.labels.dtype == np.uint8
    assert result.confidence.dtype in (np.float16, np.float32)
    assert result.labels.max() < 4
    # The winning class of 4 always has probability ≥ 1/4.
    assert result.confidence.min() >= 0.25 - 1e-3
    assert result.confidence.max() <= 1.0 + 1e-3


@pytest.mark.parametrize(
    ("length", "window", "overlap"),
    [(100, 32, 0.25), (32, 32, 0.5), (33, 32, 0.25), (200, 96, 0.25), (50, 16, 0.9)],
)
def test_window_grid_is_monais(length, window, overlap):
    from monai.data.utils import dense_patch_slices

    interval = window if window == length else max(1, int(window * (1 - overlap)))
    expected = sorted({s[0].start for s in dense_patch_slices((length,), (window,), (interval,))})
    assert window_starts(length, window, overlap) == expected


def test_slabbed_result_equals_whole_volume_monai():
    """Z holds six window positions, so planes are flushed many times; blending must match."""
    model = tiny_unet()
    volume = random_volume((56, 19, 25), seed=1)
    settings = InferenceConfig(amp="off", overlap=0.5, window_batch_size=3)
    result = segment_volume([model], volume, 16, settings)
    reference = monai_reference(model, volume, 16, 0.5, batch=3)
    assert np.mean(result.labels == reference.argmax(axis=0)) > 0.999
    np.testing.assert_allclose(result.confidence, reference.max(axis=0), atol=2e-3)


class RecordingSink:
    """Records the Z ranges it is given, and keeps the planes."""

    def __init__(self, shape_zyx):
        self.volume = ProbabilityVolume(shape_zyx)
        self.ranges: list[tuple[int, int]] = []

    def write(self, z_start, planes):
        assert planes.dtype == np.float16 and planes.ndim == 4
        self.ranges.append((z_start, z_start + planes.shape[1]))
        self.volume.write(z_start, planes)


@pytest.mark.parametrize("shape", [(56, 19, 25), (10, 40, 12)], ids=["slabbed", "padded-z"])
def test_probability_sink_gets_every_plane_once_and_equals_monai(shape):
    model = tiny_unet()
    volume = random_volume(shape, seed=6)
    settings = InferenceConfig(amp="off", overlap=0.5, window_batch_size=3)
    sink = RecordingSink(shape)
    result = segment_volume([model], volume, 16, settings, probability_sink=sink)
    covered = [z for start, stop in sink.ranges for z in range(start, stop)]
    assert covered == list(range(shape[0]))  # increasing Z, each plane once
    probabilities = sink.volume.array
    assert probabilities.shape == (4, *shape) and probabilities.dtype == np.float16
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(axis=0), 1.0, atol=3e-3)
    reference = monai_reference(model, volume, 16, 0.5, batch=3)
    np.testing.assert_allclose(probabilities, reference, atol=2e-3)
    np.testing.assert_array_equal(probabilities.max(axis=0), result.confidence)
    # The label's probability is the largest (float16 rounding may tie it with another).
    of_label = np.take_along_axis(probabilities, result.labels[None].astype(np.intp), axis=0)
    np.testing.assert_array_equal(of_label[0], result.confidence)


@pytest.mark.parametrize(
    ("shape", "window", "overlap", "tiles"),
    [
        ((32, 32, 48), 16, 0.0, True),
        ((16, 16, 16), 16, 0.25, True),  # one window: nothing overlaps
        ((32, 32, 40), 16, 0.0, False),  # 40 = 16 + 16 + 8: the last X window overlaps
        ((32, 32, 48), 16, 0.25, False),
        ((10, 32, 32), 16, 0.0, True),  # Z padded to one window
    ],
)
def test_windows_tile_only_when_every_voxel_is_predicted_once(shape, window, overlap, tiles):
    padded = [max(n, window) for n in shape]
    starts = [window_starts(n, window, overlap) for n in padded]
    assert segment_module._tiles(starts, window, padded) is tiles


@pytest.mark.parametrize("shape", [(32, 32, 48), (10, 32, 16)], ids=["tiled", "padded-z"])
def test_tiling_windows_skip_the_blend_and_equal_monai(monkeypatch, shape):
    """With overlap 0 and a volume a whole number of windows long, no Gaussian map is built,
    nothing is weighed, and labels, confidence and probabilities equal MONAI's."""

    def no_blending(*args, **kwargs):
        raise AssertionError("tiling windows need no importance map")

    monkeypatch.setattr(segment_module, "_gaussian_importance", no_blending)
    model = tiny_unet()
    volume = random_volume(shape, seed=3)
    settings = InferenceConfig(amp="off", overlap=0.0, window_batch_size=2)
    sink = RecordingSink(shape)
    result = segment_volume([model], volume, 16, settings, probability_sink=sink)
    reference = monai_reference(model, volume, 16, 0.0, batch=2)
    np.testing.assert_allclose(sink.volume.array, reference, atol=1e-3)
    np.testing.assert_array_equal(result.labels, reference.argmax(axis=0))
    np.testing.assert_allclose(result.confidence, reference.max(axis=0), atol=1e-3)


# --------------------------------------------------------------------------- ensembles and TTA


@pytest.mark.parametrize("tta", ["flips", "rot90"])
def test_tta_of_an_equivariant_net_changes_nothing(tta):
    model = pointwise_net()
    volume = random_volume((20, 24, 24), seed=2)
    plain = segment_volume([model], volume, 16, EXACT)
    augmented = segment_volume([model], volume, 16, EXACT.model_copy(update={"tta": tta}))
    np.testing.assert_array_equal(augmented.labels, plain.labels)
    np.testing.assert_allclose(augmented.confidence, plain.confidence, atol=1e-3)


@pytest.mark.parametrize("tta", ["flips", "rot90"])
def test_tta_inverses_undo_their_transforms(tta):
    x = torch.arange(2 * 3 * 4 * 5 * 5, dtype=torch.float32).reshape(2, 3, 4, 5, 5)
    pairs = tta_transforms(tta)
    assert len(pairs) == 4
    for forward, inverse in pairs:
        torch.testing.assert_close(inverse(forward(x)), x)
    assert len({tuple(forward(x).flatten().tolist()) for forward, _ in pairs}) == 4


def test_ensemble_of_identical_models_equals_one():
    model = tiny_unet()
    volume = random_volume((24, 20, 30), seed=3)
    one = segment_volume([model], volume, 16, EXACT)
    two = segment_volume([model, copy.deepcopy(model)], volume, 16, EXACT)
    np.testing.assert_array_equal(two.labels, one.labels)
    np.testing.assert_array_equal(two.confidence, one.confidence)


def test_ensemble_averages_probabilities_not_logits():
    """Pointwise nets predict every voxel alike in every window, so blending is a no-op and the
    result must be the per-voxel mean of the members' softmax."""
    members = [pointwise_net(seed=1), pointwise_net(seed=2)]
    volume = random_volume((18, 20, 17), seed=4)
    result = segment_volume(members, volume, 16, EXACT)
    with torch.inference_mode():
        x = torch.from_numpy(volume)[None, None]
        mean = sum(torch.softmax(m(x), dim=1) for m in members)[0].numpy() / 2
    assert np.mean(result.labels == mean.argmax(axis=0)) > 0.999
    np.testing.assert_allclose(result.confidence, mean.max(axis=0), atol=1e-3)


def test_bf16_autocast_stays_close_to_fp32():
    model = tiny_unet()
    volume = random_volume((20, 20, 20), seed=5)
    exact = segment_volume([model], volume, 16, EXACT)
    fast = segment_volume([model], volume, 16, InferenceConfig(amp="bf16"), show_progress=True)
    assert np.mean(fast.labels == exact.labels) > 0.9


# --------------------------------------------------------------------------- memory


def test_accumulator_is_one_window_deep(monkeypatch):
    shapes = []
    original = segment_module._allocate_accumulator

    def spy(channels, depth, height, width, device, weighted):
        shapes.append((channels, depth, height, width))
        return original(channels, depth, height, width, device, weighted)

    monkeypatch.setattr(segment_module, "_allocate_accumulator", spy)
    segment_volume([pointwise_net(channels=5)], random_volume((100, 20, 24)), 16, EXACT)
    assert shapes == [(5, 16, 20, 24)]


PEAK_SCRIPT = textwrap.dedent(
    """
    import re, sys
    import numpy as np, torch
    from octopi.config import InferenceConfig
    from octopi.inference.segment import segment_volume

    def peak_kib():
        return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 16, kernel_size=1).eval()
    settings = InferenceConfig(amp="off", overlap=0.0)
    segment_volume([model], np.zeros((40, 64, 64), np.float32), 32, settings)  # warm-up
    volume = np.random.default_rng(0).standard_normal((512, 64, 64), dtype=np.float32)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak to the current resident size
    before = peak_kib()
    segment_volume([model], volume, 32, settings)
    print((peak_kib() - before) * 1024)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset"
)
def test_peak_memory_stays_far_below_full_probability_volume():
    full_probabilities_bytes = 16 * 512 * 64 * 64 * 4  # (C, Z, Y, X) float32: 134 MB
    try:
        done = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT],
            capture_output=True,
            text=True,
            timeout=300,
            # Fixed mmap threshold: freed buffers go back to the OS instead of lingering in the
            # heap, so the peak resident size measures live memory (±30 MB noise otherwise).
            env=os.environ | {"MALLOC_MMAP_THRESHOLD_": "131072"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail("peak-memory script timed out")
    if done.returncode != 0 and "clear_refs" in done.stderr:
        pytest.skip("cannot reset the peak resident size here")
    assert done.returncode == 0, done.stderr
    growth_bytes = int(done.stdout.strip().splitlines()[-1])
    # Measured ~40 MB: outputs (uint8 + float16, 6.3 MB), the ring buffer (16 × 32 × 64 × 64
    # floats, 8.4 MB) and one batch of windows; a whole-volume approach needs > 134 MB.
    assert growth_bytes < full_probabilities_bytes / 2, growth_bytes


# --------------------------------------------------------------------------- load_ensemble


def save_model(directory: Path, card: ModelCard, seed: int = 0) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    card.save(directory / "model_config.yaml")
    torch.save(build_model(card).state_dict(), directory / "best_model_weights.pth")
    return directory / "model_config.yaml", directory / "best_model_weights.pth"


def test_load_ensemble_returns_eval_models(tmp_path):
    a = save_model(tmp_path / "a", tiny_card(), seed=0)
    b = save_model(tmp_path / "b", tiny_card(), seed=1)
    card, models = load_ensemble([a[0], b[0]], [a[1], b[1]], "cpu")
    assert card == tiny_card()
    assert len(models) == 2
    assert not any(m.training for m in models)


def test_load_ensemble_rejects_count_mismatch(tmp_path):
    config, weights = save_model(tmp_path / "a", tiny_card())
    with pytest.raises(ValueError, match="one --model-weights file per --model-config"):
        load_ensemble([config, config], [weights], "cpu")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"classes": [ClassInfo(name="apo-ferritin", label=2, radius_angstrom=60.0)]},
            "disagree on classes",
        ),
        ({"voxel_size_angstrom": 7.5}, "disagree on voxel size"),
    ],
)
def test_load_ensemble_rejects_disagreeing_cards(tmp_path, changes, message):
    a = save_model(tmp_path / "a", tiny_card())
    b = save_model(tmp_path / "b", tiny_card(**changes))
    with pytest.raises(ValueError, match=message):
        load_ensemble([a[0], b[0]], [a[1], b[1]], "cpu")


def test_load_ensemble_rejects_weights_of_another_architecture(tmp_path):
    config, _ = save_model(tmp_path / "a", tiny_card())
    other = tiny_card(architecture=UnetConfig(channels=[4, 8, 32], strides=[2, 2]))
    _, other_weights = save_model(tmp_path / "b", other)
    with pytest.raises(ValueError, match="do not match the model config"):
        load_ensemble([config], [other_weights], "cpu")


def test_models_in_training_mode_are_evaluated_in_eval_mode_and_restored():
    card = tiny_card(
        architecture=UnetConfig(channels=[4, 8, 16], strides=[2, 2], num_res_units=0, dropout=0.5)
    )
    torch.manual_seed(0)
    model = build_model(card)
    volume = random_volume((16, 20, 20), seed=6)
    model.train()
    in_training = segment_volume([model], volume, 16, EXACT)
    assert model.training
    model.eval()
    in_eval = segment_volume([model], volume, 16, EXACT)
    np.testing.assert_array_equal(in_training.confidence, in_eval.confidence)
