"""Suite sizes: ``quick`` (a 2-core CPU machine, < 30 min), ``epochs20`` / ``epochs100``
(issue 13's pick-quality budget on a 2-core CPU), ``full`` (a GPU machine, hours)
and ``gpu`` (one GPU, a few minutes: ``benchmarks/gpu_check.sh``; ``gpu-dry`` is its CPU
rehearsal at toy sizes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from benchmarks.data import DataSpec


@dataclass(frozen=True)
class Suite:
    """Everything a suite run varies. Both tools get the same values."""

    name: str
    data: DataSpec
    batch_size: int  # crops per training step; both tools draw this many per tomogram per epoch
    throughput_dims: tuple[int, ...]  # --dim-in values timed for training throughput
    throughput_epochs: int  # epochs 2..N-1 are timed (≥ 3)
    quality_dim: int  # --dim-in of the pick-quality models
    quality_epochs: int  # the equal-epochs comparison
    quality_val_interval: int
    dry_run_trials: int = 200
    scheduler_jobs: int = 40
    step_timeout_seconds: int = 3600
    tools: tuple[str, ...] = ("published", "ours")  # `run --ours-only`: ("ours",)
    score_picks: bool = True  # False: inference is timed only (no localize, no F4)

    def to_dict(self) -> dict:
        return asdict(self)


# Sized for a 2-core CPU (run with --preset hard --phases quality,inference): 3 training runs
# and 1 validation run of 96×192×192 at 10 Å, 2 test runs of that size (another seed), crop 64,
# batch 4, 20 epochs validated every 5 (about 2 min for ours and 3–5 for octopi 1.7.0 here).
_EPOCHS20 = Suite(
    name="epochs20",
    data=DataSpec(train_runs=3, train_shape=(96, 192, 192), test_runs=2, test_shape=(96, 192, 192)),
    batch_size=4,
    throughput_dims=(64,),
    throughput_epochs=4,
    quality_dim=64,
    quality_epochs=20,
    quality_val_interval=5,
)

SUITES: dict[str, Suite] = {
    # Checks the harness end to end in a few minutes; its figures mean nothing.
    "smoke": Suite(
        name="smoke",
        data=DataSpec(train_runs=2, train_shape=(48, 96, 96), test_runs=2, test_shape=(48, 96, 96)),
        batch_size=2,
        throughput_dims=(32,),
        throughput_epochs=3,
        quality_dim=32,
        quality_epochs=3,
        quality_val_interval=3,
        dry_run_trials=200,
        scheduler_jobs=4,
        step_timeout_seconds=1200,
    ),
    # Small enough for a 2-core CPU: 2 training runs and 1 validation run of 96×160×160 (deep
    # enough for 96³ crops), 2 test runs of 64×160×160; batch 2, so one epoch is 4 crops.
    # Pick quality after so little training is a smoke test, not a verdict: the full suite is
    # the one that answers the quality goal.
    "quick": Suite(
        name="quick",
        data=DataSpec(
            train_runs=2, train_shape=(96, 160, 160), test_runs=2, test_shape=(64, 160, 160)
        ),
        batch_size=2,
        throughput_dims=(64, 96),
        throughput_epochs=8,  # 6 timed epochs: the progress bars have 1 s resolution
        quality_dim=64,
        quality_epochs=8,
        quality_val_interval=4,
    ),
    # Issue 13's pick-quality rows at the published tool's budget (_EPOCHS20, below) and the
    # same data and settings at 100 epochs.
    "epochs20": _EPOCHS20,
    "epochs100": replace(_EPOCHS20, name="epochs100", quality_epochs=100, quality_val_interval=10),
    # For a GPU machine: 8 training runs of moderate size, test tomograms of the CZII size
    # 184×630×630, the published default batch 16 and crop 96.
    "full": Suite(
        name="full",
        data=DataSpec(
            train_runs=8, train_shape=(128, 320, 320), test_runs=3, test_shape=(184, 630, 630)
        ),
        batch_size=16,
        throughput_dims=(64, 96),
        throughput_epochs=12,  # 10 timed epochs: the progress bars have 1 s resolution
        quality_dim=96,
        quality_epochs=200,
        quality_val_interval=20,
        step_timeout_seconds=4 * 3600,
    ),
    # benchmarks/gpu_check.sh on one GPU, a few minutes with --phases throughput,inference:
    # training patches/s at the published default crop 96 and batch 16 (4 training runs of
    # 128×320×320, 24 epochs of 4 steps, 22 timed: the bars tick in whole seconds), and
    # inference seconds per CZII-size tomogram (184×630×630) with those throughput models
    # (equal epochs, both tools), not scored.
    "gpu": Suite(
        name="gpu",
        data=DataSpec(
            train_runs=4, train_shape=(128, 320, 320), test_runs=1, test_shape=(184, 630, 630)
        ),
        batch_size=16,
        throughput_dims=(96,),
        throughput_epochs=24,
        quality_dim=96,
        quality_epochs=24,
        quality_val_interval=24,
        scheduler_jobs=4,
        step_timeout_seconds=300,
        score_picks=False,
    ),
    # The gpu suite's steps at toy sizes, for GPU_CHECK_DRY=1 on a CPU; its figures mean nothing.
    "gpu-dry": Suite(
        name="gpu-dry",
        data=DataSpec(train_runs=2, train_shape=(48, 96, 96), test_runs=1, test_shape=(48, 96, 96)),
        batch_size=2,
        throughput_dims=(32,),
        throughput_epochs=3,
        quality_dim=32,
        quality_epochs=3,
        quality_val_interval=3,
        scheduler_jobs=4,
        step_timeout_seconds=300,
        score_picks=False,
    ),
}
