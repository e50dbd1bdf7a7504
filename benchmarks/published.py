"""The published octopi 1.7.0 (PyPI ``octopi==1.7.0``), installed in its own venv.

Our package imports as ``octopi`` too, so the two can never share an environment. This module
creates (once, cached) ``benchmarks/.envs/octopi-1.7.0`` with ``torch==2.13.0`` first (the CPU
wheel here; an unpinned torch would pull a multi-GB CUDA build) and then ``octopi==1.7.0`` from
PyPI, and builds the command lines of its CLI (``benchmarks/.envs/octopi-1.7.0/bin/octopi``).

The flags are those of the 1.7.0 source, which differ from its older training guide:
``--tomo-uri wbp@10.0`` instead of ``--voxel-size/--tomo-alg``, ``--target-uri
targets:octopi/1`` instead of ``--target-info``, ``--seg-uri`` for segmentations. Its
``segment`` refuses to run without a GPU; without one, :func:`octopi` routes it through
:mod:`benchmarks.published_cpu_launcher` (which documents exactly what it patches).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PUBLISHED_VERSION = "1.7.0"
TORCH_VERSION = "2.13.0"
BENCH_DIR = Path(__file__).resolve().parent
ENV_DIR = BENCH_DIR / ".envs" / f"octopi-{PUBLISHED_VERSION}"
STAMP = ENV_DIR / ".installed.json"
CPU_LAUNCHER = BENCH_DIR / "published_cpu_launcher.py"
TOMO_URI = "wbp@10.0"


# The published venv must not see our checkout: a PYTHONPATH that puts our src/ first (as
# GPU_CHECK_PYTHON setups do) would make its ``octopi`` import ours. Every command run in it
# starts with this.
CLEAN_ENV = ["env", "-u", "PYTHONPATH"]


def env_python() -> Path:
    return ENV_DIR / "bin" / "python"


def ensure_env(*, quiet: bool = True) -> dict:
    """Create the venv if needed; return ``{"install_seconds": s, "cached": bool, ...}``."""
    if STAMP.exists():
        info = json.loads(STAMP.read_text())
        info["cached"] = True
        return info
    start = time.perf_counter()
    if not env_python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(ENV_DIR)], check=True)
    pip = [*CLEAN_ENV, str(env_python()), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("--quiet")
    subprocess.run([*pip, f"torch=={TORCH_VERSION}"], check=True)
    subprocess.run([*pip, f"octopi=={PUBLISHED_VERSION}"], check=True)
    info = {"install_seconds": round(time.perf_counter() - start, 1), "python": sys.version}
    STAMP.write_text(json.dumps(info))
    info["cached"] = False
    return info


def versions() -> dict[str, str]:
    """Versions of octopi, torch, monai and copick inside the published venv."""
    code = (
        "import json, importlib.metadata as m; "
        "print(json.dumps({p: m.version(p) for p in ('octopi', 'torch', 'monai', 'copick')}))"
    )
    proc = subprocess.run(
        [*CLEAN_ENV, str(env_python()), "-c", code], capture_output=True, text=True
    )
    return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-500:]}


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible (then the published CLI runs unmodified)."""
    if shutil.which("nvidia-smi") is None:
        return False
    proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return proc.returncode == 0 and "GPU" in proc.stdout


def octopi(*, needs_gpu: bool = False) -> list[str]:
    """The published CLI; with ``needs_gpu`` and no GPU here, through the CPU launcher.

    ``segment`` (and ``model-explore``) of octopi 1.7.0 refuse to run without a GPU; see
    :mod:`benchmarks.published_cpu_launcher` for exactly what the launcher changes.
    """
    if needs_gpu and not gpu_present():
        return [*CLEAN_ENV, str(env_python()), str(CPU_LAUNCHER)]
    return [*CLEAN_ENV, str(ENV_DIR / "bin" / "octopi")]


def create_targets(config: Path) -> list[str]:
    """Its targets from the ground-truth picks, session 2 (ours use session 1)."""
    return [
        *octopi(), "create-targets", "--config", str(config), "--tomo-uri", TOMO_URI,
        "--picks-user-id", "curation", "--picks-session-id", "0",
        "--target-uri", "targets:octopi/2",
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
    """``octopi train`` of 1.7.0: ``--tomo-uri alg@voxel`` and ``--target-uri name:user/session``
    replace the ``--voxel-size/--tomo-alg/--target-info`` of its older docs."""
    return [
        *octopi(), "train", "--config", str(config), "--tomo-uri", TOMO_URI,
        "--target-uri", "targets:octopi/2",
        "--trainRunIDs", ",".join(train_run_ids), "--validateRunIDs", ",".join(validate_run_ids),
        "--num-epochs", str(num_epochs), "--val-interval", str(val_interval),
        "--batch-size", str(batch_size), "--dim-in", str(dim_in),
        "--channels", channels, "--strides", strides, "--res-units", str(res_units),
        "--output", str(output),
    ]  # fmt: skip


def weights_file(train_output: Path) -> Path:
    return train_output / "best_model.pth"


def segment(config: Path, model_dir: Path, run_ids: list[str], seg_uri: str) -> list[str]:
    """Its inference with its defaults (window = training crop, overlap 0.5, window batch 4,
    4 test-time augmentations)."""
    return [
        *octopi(needs_gpu=True), "segment", "--config", str(config), "--tomo-uri", TOMO_URI,
        "--model-config", str(model_dir / "model_config.yaml"),
        "--model-weights", str(weights_file(model_dir)),
        "--seg-uri", seg_uri, "--run-ids", ",".join(run_ids),
    ]  # fmt: skip


def localize(
    config: Path, run_ids: list[str], seg_uri: str, pick_user: str, pick_session: str
) -> list[str]:
    """Its localization with its defaults (watershed, 8 processes)."""
    return [
        *octopi(), "localize", "--config", str(config), "--seg-uri", seg_uri,
        "--voxel-size", "10", "--runIDs", ",".join(run_ids),
        "--pick-user-id", pick_user, "--pick-session-id", pick_session,
    ]  # fmt: skip


def evaluate(
    config: Path, run_ids: list[str], pick_user: str, pick_session: str, output: Path
) -> list[str]:
    """Its own scoring (F4, distance 0.8 × radius, no one-to-one matching), for reference."""
    return [
        *octopi(), "evaluate", "--config", str(config),
        "--ground-truth-user-id", "curation", "--ground-truth-session-id", "0",
        "--predict-user-id", pick_user, "--predict-session-id", pick_session,
        "--run-ids", ",".join(run_ids), "--output", str(output),
    ]  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(ensure_env(quiet=os.environ.get("VERBOSE") is None)))
