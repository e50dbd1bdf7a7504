"""The CUDA branches of the code, run on a real GPU (skipped where CUDA is unavailable).

One test per branch that only a CUDA device takes: device and mixed-precision choice
(:mod:`octopi.runtime`), training steps under fp16 (with a ``GradScaler``) and bf16
(:mod:`octopi.training.loop`), the CUDA RNG state of checkpoints and an exact resume on the
GPU (:mod:`octopi.training.checkpoint`), pinned training batches (:mod:`octopi.data.patches`),
sliding-window inference on the GPU against the CPU (:mod:`octopi.inference.segment`),
calibration workers forked from a process that uses CUDA (:mod:`octopi.parallel`), one GPU per
local trial (:mod:`octopi.gpu_slots`) and the trial memory bound
(:mod:`octopi.search.trial_configs`). Sizes are those of the unit tests: the tiny project of
``tests/conftest.py`` (32 × 48 × 48 voxels), 16³ crops, a 3-level UNet.

Run them with ``pytest -m gpu tests/gpu`` on a machine with an NVIDIA GPU
(``benchmarks/gpu_check.sh`` does, and fails when they are all skipped).
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_patches import CountingLoader, keys, make_loader  # noqa: E402
from test_segment import random_volume, tiny_unet  # noqa: E402
from test_trainer import (  # noqa: E402
    SETTINGS,
    TINY_ARCH,
    states_equal,
    tiny_data,
    tiny_training,
)

from octopi.config import InferenceConfig, LocalizeConfig  # noqa: E402
from octopi.data.patches import TomogramCache  # noqa: E402
from octopi.gpu_slots import VISIBLE, claim_gpu, list_gpus  # noqa: E402
from octopi.inference.segment import segment_volume  # noqa: E402
from octopi.runtime import autocast, autocast_dtype, needs_grad_scaler, select_device  # noqa: E402
from octopi.search.trial_configs import device_memory_bytes  # noqa: E402
from octopi.training import loop as loop_module  # noqa: E402
from octopi.training.checkpoint import (  # noqa: E402
    capture_rng_state,
    cpu_state_dict,
    restore_rng_state,
    save_torch,
    seed_epoch,
)
from octopi.training.plan import plan_training  # noqa: E402
from octopi.training.trainer import TrainingInterrupted, train_model  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
NO_CALIBRATION = SETTINGS | {"localize": LocalizeConfig(calibrate=False)}


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def max_difference(a: dict, b: dict) -> float:
    """Largest absolute difference between two state dicts of the same keys."""
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# --------------------------------------------------------------------------- runtime


def test_cuda_is_the_default_device_and_amp_follows_its_bf16_support() -> None:
    device = select_device()
    assert device == torch.device("cuda") and select_device("cpu") == torch.device("cpu")
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype(device, "auto") == expected
    assert autocast_dtype(device, "off") is None
    assert needs_grad_scaler(device, torch.float16)
    assert not needs_grad_scaler(device, torch.bfloat16) and not needs_grad_scaler(device, None)
    layer = torch.nn.Conv3d(1, 2, kernel_size=3).to(device)
    with autocast(device, expected):
        out = layer(torch.randn(1, 1, 8, 8, 8, device=device))
    assert out.device.type == "cuda" and out.dtype == expected


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_training_steps_on_cuda_with_mixed_precision(
    amp: str, tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 epochs (3 steps each, batch 2, 16³ crops) on the GPU: finite losses, new weights,
    a GradScaler exactly for fp16, autocast to the chosen dtype, calibration on the GPU."""
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    seen: list[tuple[str, torch.dtype | None]] = []
    real_autocast = loop_module.autocast

    def spy(device: torch.device, dtype: torch.dtype | None):
        seen.append((device.type, dtype))
        return real_autocast(device, dtype)

    monkeypatch.setattr(loop_module, "autocast", spy)
    data, training = tiny_data(tiny_project), tiny_training(num_epochs=2, amp=amp)
    output = tmp_path / "run"
    settings = {k: v for k, v in SETTINGS.items() if k != "show_progress"}
    initial = cpu_state_dict(plan_training(data, training, TINY_ARCH, output, **settings).model)
    torch.cuda.reset_peak_memory_stats()
    result = train_model(
        data, training, TINY_ARCH, output, tracking_uri="none", device="cuda", **SETTINGS
    )
    assert torch.cuda.max_memory_allocated() > 0, "nothing was allocated on the GPU"
    assert result.epochs_completed == 2 and result.calibration
    assert seen and set(seen) == {("cuda", AMP_DTYPES[amp])}

    checkpoint = load(output / "checkpoint.pt")
    losses = [row["train_loss"] for row in checkpoint["history"]]
    assert len(losses) == 2 and all(np.isfinite(loss) and loss > 0 for loss in losses)
    weights = checkpoint["model"]
    assert not states_equal(initial, weights), "no optimizer step changed the weights"
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    if amp == "fp16":
        scaler = checkpoint["scaler"]
        assert scaler is not None and np.isfinite(scaler["scale"]) and scaler["scale"] > 0
    else:
        assert checkpoint["scaler"] is None


@contextlib.contextmanager
def deterministic_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Deterministic cuDNN kernels; yields the warnings of non-deterministic ops that ran
    (``torch.use_deterministic_algorithms(warn_only=True)``), for the failure message."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        try:
            yield messages
        finally:
            messages.extend(sorted({str(w.message)[:200] for w in caught}))
            torch.use_deterministic_algorithms(before, warn_only=warn_only)


@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_a_run_stopped_and_resumed_on_cuda_ends_with_identical_weights(
    amp: str, tiny_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the CPU test in test_trainer.py, on the GPU with deterministic kernels: the CUDA
    RNG state (and, for fp16, the GradScaler) go into the checkpoint and come back."""
    args = (tiny_data(tiny_project), tiny_training(num_epochs=2, amp=amp), TINY_ARCH)
    run = {"tracking_uri": "none", "device": "cuda", **NO_CALIBRATION}

    def stop_after_epoch_1(epoch: int, metrics: dict) -> None:
        if epoch == 1:
            raise TrainingInterrupted("simulated kill")

    with deterministic_cuda(monkeypatch) as nondeterministic:
        whole = train_model(*args, tmp_path / "whole", **run)
        with pytest.raises(TrainingInterrupted):
            train_model(*args, tmp_path / "resumed", on_validation=stop_after_epoch_1, **run)
        stopped = load(tmp_path / "resumed" / "checkpoint.pt")
        resumed = train_model(*args, tmp_path / "resumed", **run)
    assert stopped["epoch"] == 1 and len(stopped["rng"]["cuda"]) == torch.cuda.device_count()
    assert (stopped["scaler"] is not None) == (amp == "fp16")
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_completed == 2
    ours = load(tmp_path / "resumed" / "checkpoint.pt")
    theirs = load(whole.output_dir / "checkpoint.pt")
    assert states_equal(ours["model"], theirs["model"]), (
        f"resumed weights differ by up to {max_difference(ours['model'], theirs['model']):.3g}; "
        f"non-deterministic ops seen: {nondeterministic or 'none'}"
    )
    assert states_equal(ours["ema"]["module"], theirs["ema"]["module"])
    assert [r["train_loss"] for r in ours["history"]] == [
        r["train_loss"] for r in theirs["history"]
    ]


def test_cuda_rng_state_is_saved_and_restored(tmp_path: Path) -> None:
    """Every GPU's generator is captured, survives a checkpoint file and is restored; the
    per-epoch seeding reseeds the GPU generator too."""
    torch.cuda.manual_seed_all(3)
    save_torch(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    state = load(tmp_path / "rng.pt")["rng"]
    assert len(state["cuda"]) == torch.cuda.device_count()
    drawn = torch.rand(16, device="cuda")
    assert not torch.equal(drawn, torch.rand(16, device="cuda")), "the generator did not move"
    restore_rng_state(state)
    assert torch.equal(torch.rand(16, device="cuda"), drawn)

    seed_epoch(7, 2)
    first = torch.rand(16, device="cuda")
    seed_epoch(7, 3)
    other = torch.rand(16, device="cuda")
    seed_epoch(7, 2)
    assert torch.equal(torch.rand(16, device="cuda"), first)
    assert not torch.equal(first, other)


# --------------------------------------------------------------------------- data


def test_training_batches_are_pinned_when_cuda_is_available() -> None:
    """``pin_memory=None`` (the trainer's default) pins; the copy to the GPU is exact."""
    with TomogramCache(keys(3), CountingLoader(), capacity=3, seed=0) as cache:
        pinned = list(make_loader(cache, pin_memory=None).epoch(0))
        plain = list(make_loader(cache, pin_memory=False).epoch(0))
    assert len(pinned) == len(plain) == 3
    for (images, labels), (plain_images, plain_labels) in zip(pinned, plain, strict=True):
        assert images.is_pinned() and labels.is_pinned()
        assert not plain_images.is_pinned() and not plain_labels.is_pinned()
        on_gpu = (images.to("cuda", non_blocking=True), labels.to("cuda", non_blocking=True))
        torch.cuda.synchronize()
        assert torch.equal(on_gpu[0].cpu(), plain_images)
        assert torch.equal(on_gpu[1].cpu(), plain_labels)


# --------------------------------------------------------------------------- inference


@pytest.mark.parametrize(("amp", "min_agreement"), [("off", 0.995), ("auto", 0.98)])
def test_segmentation_on_cuda_agrees_with_the_cpu(amp: str, min_agreement: float) -> None:
    """The tiny UNet on a (40, 56, 48) volume, windows of 16: GPU labels against CPU fp32
    labels. On a CPU, bf16 autocast agrees on 99.7 % of the voxels and fp16 on 99.96 %;
    the GPU adds TF32 convolutions (amp off) and its own kernels."""
    model = tiny_unet()
    volume = random_volume((40, 56, 48))
    reference = segment_volume([model], volume, 16, InferenceConfig(amp="off"), device="cpu")
    torch.cuda.reset_peak_memory_stats()
    result = segment_volume(
        [copy.deepcopy(model).cuda()], volume, 16, InferenceConfig(amp=amp), device="cuda"
    )
    assert torch.cuda.max_memory_allocated() > 0, "nothing was allocated on the GPU"
    assert len(np.unique(reference.labels)) == 4  # every class wins somewhere: a real test
    agreement = float((result.labels == reference.labels).mean())
    assert agreement >= min_agreement, f"labels agree on {agreement:.2%} of the voxels"
    confidence = np.abs(result.confidence.astype(np.float32) - reference.confidence)
    assert float(confidence.max()) <= 0.05


def test_calibration_workers_fork_from_a_process_that_uses_cuda() -> None:
    """Validation calibrates in the training process, which holds a CUDA context and torch
    threads; its workers are forked from it and must give the one-process result."""
    from test_calibration import CLASS, EVALUATION, VOXEL, constructed_volume
    from test_calibration import SETTINGS as GRID

    from octopi.evaluation.calibration import calibrate_with_report

    torch.ones(1, device="cuda").sum().item()  # the CUDA context exists
    probabilities, truth = constructed_volume()
    runs = {"a": probabilities, "b": probabilities[:, ::-1].copy()}
    truths = {"a": truth, "b": truth}
    one = calibrate_with_report(runs, truths, [CLASS], VOXEL, GRID, EVALUATION, workers=1)
    forked = calibrate_with_report(runs, truths, [CLASS], VOXEL, GRID, EVALUATION, workers=4)
    assert forked[0] == one[0] and forked[1].per_class == one[1].per_class
    assert torch.ones(1, device="cuda").sum().item() == 1.0  # the parent's CUDA still works


# --------------------------------------------------------------------------- trials


def local_environ() -> dict[str, str]:
    """This process's environment as a local (non-Slurm) trial sees it."""
    return {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}


def test_each_local_trial_claims_its_own_gpu(tmp_path: Path) -> None:
    """As many claims as GPUs each get a different one; one more waits (and times out)."""
    gpus = list_gpus(local_environ())
    assert len(gpus) == torch.cuda.device_count(), f"nvidia-smi/{VISIBLE} list {gpus}"
    with contextlib.ExitStack() as stack:
        claimed = [stack.enter_context(claim_gpu(tmp_path, environ=local_environ())) for _ in gpus]
        assert sorted(claimed) == sorted(gpus)
        extra = claim_gpu(tmp_path, environ=local_environ(), poll_seconds=0.05, timeout_seconds=0.2)
        with pytest.raises(TimeoutError), extra:
            pass


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 or more GPUs")
def test_two_local_trials_run_on_two_different_gpus(tmp_path: Path) -> None:
    """Two claims, two processes: each sees one GPU, and they are different devices."""
    code = (
        "import torch; print(torch.cuda.device_count(), torch.cuda.get_device_properties(0).uuid)"
    )
    first, second = local_environ(), local_environ()
    with claim_gpu(tmp_path, environ=first) as a, claim_gpu(tmp_path, environ=second) as b:
        seen = [
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True,
                timeout=300, check=True,
            ).stdout.split()
            for env in (first, second)
        ]  # fmt: skip
    assert a is not None and b is not None and a != b
    assert seen[0][0] == seen[1][0] == "1"
    assert seen[0][1] != seen[1][1], f"GPUs {a} and {b} are the same device {seen[0][1]}"


def test_the_trial_memory_bound_is_the_gpu_total() -> None:
    total = torch.cuda.get_device_properties(0).total_memory
    assert device_memory_bytes() == total and device_memory_bytes("cuda") == total
