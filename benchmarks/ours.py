"""Command lines of OUR ``octopi`` (this repository, run with the interpreter running the suite).

Each function returns an argv list; :mod:`benchmarks.measure` runs it in a fresh subprocess.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def octopi() -> list[str]:
    """Our CLI: the ``octopi`` script beside this interpreter, else ``python -m octopi.cli``."""
    script = Path(sys.executable).with_name("octopi")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from octopi.cli import main; sys.exit(main())"]


def has_command(name: str) -> tuple[bool, str]:
    """Whether ``octopi NAME --help`` works here (our CLI is built in parallel with this)."""
    proc = subprocess.run([*octopi(), name, "--help"], capture_output=True, text=True)
    if proc.returncode == 0:
        return True, ""
    last = (proc.stderr or proc.stdout).strip().splitlines()
    return False, last[-1] if last else f"exit {proc.returncode}"


def has_snakemake() -> bool:
    return Path(sys.executable).with_name("snakemake").exists() or bool(shutil.which("snakemake"))


def synthesize(output: Path, runs: int, shape: str, seed: int) -> list[str]:
    return [
        *octopi(), "synthesize", "--output", str(output), "--runs", str(runs),
        "--shape", shape, "--voxel-size", "10", "--seed", str(seed),
    ]  # fmt: skip


def create_targets(config: Path) -> list[str]:
    return [
        *octopi(), "create-targets", "--config", str(config), "--voxel-size", "10",
        "--pick-info", "curation,0", "--target-info", "targets,octopi,1",
    ]  # fmt: skip


def train(
    config: Path,
    output: Path,
    *,
    train_run_ids: list[str],
    validate_run_ids: list[str],
    num_epochs: int,
    val_interval: int,
    batch_size: int,
    dim_in: int,
    channels: str = "32,64,96,96",
    strides: str = "2,2,1",
    res_units: int = 1,
) -> list[str]:
    return [
        *octopi(), "train", "--config", str(config), "--voxel-size", "10", "--tomo-alg", "wbp",
        "--target-info", "targets,octopi,1",
        "--trainRunIDs", ",".join(train_run_ids), "--validateRunIDs", ",".join(validate_run_ids),
        "--num-epochs", str(num_epochs), "--val-interval", str(val_interval),
        "--batch-size", str(batch_size), "--dim-in", str(dim_in),
        "--channels", channels, "--strides", strides, "--res-units", str(res_units),
        "--output", str(output),
    ]  # fmt: skip


def weights_file(train_output: Path) -> Path:
    return train_output / "best_model_weights.pth"


def segment(
    config: Path, model_dir: Path, run_ids: list[str], seg_info: str, output: Path
) -> list[str]:
    """Our inference with its defaults (window = training crop, overlap 0.25, no TTA)."""
    return [
        *octopi(), "segment", "--config", str(config),
        "--model-config", str(model_dir / "model_config.yaml"),
        "--model-weights", str(weights_file(model_dir)),
        "--run-ids", ",".join(run_ids), "--seg-info", seg_info, "--output", str(output),
    ]  # fmt: skip


def localize(
    config: Path, run_ids: list[str], seg_info: str, pick_info: str, output: Path
) -> list[str]:
    return [
        *octopi(), "localize", "--config", str(config), "--seg-info", seg_info,
        "--pick-info", pick_info, "--run-ids", ",".join(run_ids), "--output", str(output),
    ]  # fmt: skip


def evaluate(config: Path, run_ids: list[str], pred_info: str, output: Path) -> list[str]:
    """CZII scoring (F4, class weights, one-to-one matching within 0.5 × radius)."""
    return [
        *octopi(), "evaluate", "--config", str(config), "--pred-info", pred_info,
        "--gt-info", "curation,0", "--run-ids", ",".join(run_ids), "--output", str(output),
    ]  # fmt: skip
