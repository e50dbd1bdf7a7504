"""Helpers of the workflow tests (test_workflow.py, test_resume.py): tiny studies, Snakemake.

Trials are kept tiny with the study's ``search_space.yaml`` (16³ crops, batch 2, an 8-channel
3-level U-Net): see :mod:`octopi.models.search_spaces`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from octopi.workflow_runner import workflow_root

OCTOPI = str(Path(sys.executable).with_name("octopi"))
TINY_SEARCH_SPACE: dict[str, Any] = {
    "dim_in": 16,
    "batch_size": 2,
    "base_channel": 8,
    "num_layers": 3,
    "hidden_layers": 1,
    "num_res_units": 1,
}


def tiny_config(copick_config: Path, voxel_size: float, **sections: dict) -> dict[str, Any]:
    """A study config for quick CPU trials; ``sections`` update its sections."""
    config: dict[str, Any] = {
        "data": {"configs": [{"path": str(copick_config)}], "voxel_size_angstrom": voxel_size},
        "training": {"num_epochs": 2, "val_interval": 1, "ncache_tomos": 4, "warmup_epochs": 0},
        "search": {"num_trials": 2, "study_name": "tiny"},
        "trial_resources": {"gpu": 1, "threads": 2, "mem_mb": 2000, "retries": 0},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


def write_study(study_dir: Path, config: dict[str, Any]) -> Path:
    """Make ``study_dir`` with ``config.yaml`` and the tiny ``search_space.yaml``."""
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (study_dir / "search_space.yaml").write_text(yaml.safe_dump(TINY_SEARCH_SPACE))
    return study_dir


def snakemake(study_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m snakemake`` on the workflow, in ``study_dir``; stdout and stderr in
    ``.stdout`` (Snakemake prints errors to either)."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--directory",
        str(study_dir),
        "--snakefile",
        str(workflow_root() / "Snakefile"),
        *args,
    ]
    return subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )


def job_counts(output: str) -> dict[str, int]:
    """The first 'Job stats' table (the plan) of a Snakemake run or dry run: rule → jobs."""
    counts: dict[str, int] = {}
    blocks = output.split("Job stats:")
    for line in blocks[1].splitlines()[3:] if len(blocks) > 1 else []:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts
