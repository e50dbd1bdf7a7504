"""The Slurm jobs of a study: list them (``squeue``) and cancel them (``scancel``).

After the Snakemake head of a study was killed, its Slurm jobs run on; ``octopi model-explore
--resume`` cancels them (:func:`cancel_study_jobs`) before it reruns the study.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# States of ended Slurm jobs (squeue shows those only for MinJobAge, and only with -t all).
_ENDED_STATES = frozenset(
    {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL"}
    | {"OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}
)


@dataclass(frozen=True)
class SlurmJob:
    """A Slurm job of a study: squeue's id, state, comment (``rule_trial_wildcards_3``)."""

    job_id: str
    state: str
    comment: str


def study_slurm_jobs(study_dir: str | Path) -> list[SlurmJob]:
    """This user's active Slurm jobs that Snakemake's slurm executor submitted for the study.

    The executor runs every job in the study directory (``sbatch -D``) and names its rule in
    the job comment (``rule_<rule>...`` or ``group_<group>...``); its job names change with each
    Snakemake run, so the working directory is what identifies a study's jobs.
    """
    study_dir = os.path.realpath(study_dir)
    out = _slurm(["squeue", "--me", "--noheader", "--format=%i|%T|%Z|%k"])
    jobs = []
    for line in out.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) != 4 or parts[1] in _ENDED_STATES:
            continue
        job_id, state, work_dir, comment = parts
        if os.path.realpath(work_dir) == study_dir and comment.startswith(("rule_", "group_")):
            jobs.append(SlurmJob(job_id, state, comment))
    return jobs


def cancel_study_jobs(
    study_dir: str | Path, timeout_seconds: float = 180, poll_seconds: float = 1
) -> list[SlurmJob]:
    """``scancel`` the study's active Slurm jobs (orphans of a killed head) and wait until they
    have ended, so that no old job still writes to a trial that the rerun resumes. Returns the
    cancelled jobs; raises RuntimeError when some are still there after ``timeout_seconds``.
    """
    jobs = study_slurm_jobs(study_dir)
    if not jobs:
        return []
    ids = {job.job_id for job in jobs}
    _slurm(["scancel", *sorted(ids)])
    deadline = time.monotonic() + timeout_seconds
    while left := [job for job in study_slurm_jobs(study_dir) if job.job_id in ids]:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Slurm jobs {', '.join(j.job_id for j in left)} of {study_dir} were cancelled "
                f"but still run after {timeout_seconds:.0f} s (squeue: "
                f"{', '.join(j.state for j in left)}); run the command again once they are gone"
            )
        time.sleep(poll_seconds)
    return jobs


def _slurm(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as error:
        raise RuntimeError(
            f"{command[0]} not found: run this on a machine with the Slurm client tools "
            "(the login node the study was started from)"
        ) from error
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{' '.join(command)}: no answer from Slurm within 120 s") from error
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


def job_end_time(job_id: str) -> float | None:
    """When Slurm job ``job_id`` reaches its time limit (``time.time()`` seconds), from
    ``squeue -O EndTime``; None when it has none or squeue cannot tell."""
    from datetime import datetime

    try:
        text = _slurm(["squeue", "--noheader", "--jobs", job_id, "--Format=EndTime"]).strip()
        return datetime.fromisoformat(text).timestamp()
    except (RuntimeError, ValueError):  # no squeue here, N/A, Unknown
        return None
