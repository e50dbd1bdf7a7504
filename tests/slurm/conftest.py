"""Fixtures of the Slurm tests: the throw-away cluster of .ci/slurm, the profile, job clean-up.

The tests need the cluster from ``.ci/slurm/start.sh`` (one node, partition ``debug``, 2 fake
GPUs) and the executor plugin; ``.ci/slurm/run_tests.sh`` sets up both. Without them every test
is skipped, saying what is missing. The plugin is found either in this environment or in
``<venv>/slurm-plugin`` (``OCTOPI_SLURM_PLUGIN_DIR``), where run_tests.sh installs it so that
other Snakemake runs of the venv never load it (see docs/hpc-slurm.md, "start-up trap").
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from octopi.workflow_runner import workflow_root

HERE = Path(__file__).resolve().parent
CI_PROFILE = HERE / "profile" / "config.yaml"
PLUGIN = "snakemake_executor_plugin_slurm"
PLUGIN_DIR = Path(os.environ.get("OCTOPI_SLURM_PLUGIN_DIR", Path(sys.prefix) / "slurm-plugin"))
TOOLS = ("sinfo", "sbatch", "squeue", "scontrol", "scancel")
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL"} | {
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}


def _run(*command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _cluster_problem() -> str | None:
    """Why the Slurm tests cannot run here (None: they can)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"Slurm client tools missing ({', '.join(missing)}): run .ci/slurm/install.sh"
    try:
        ping = _run("scontrol", "ping", timeout=20)
    except subprocess.TimeoutExpired:
        ping = None
    if ping is None or ping.returncode != 0 or "UP" not in ping.stdout:
        return "no Slurm controller answers (scontrol ping): start .ci/slurm/start.sh"
    gres = _run("sinfo", "--noheader", "--partition=debug", "--format=%G").stdout
    if "gpu:2" not in gres:
        return f"not the octopi test cluster (partition debug with gpu:2; sinfo: {gres.strip()!r})"
    if importlib.util.find_spec(PLUGIN) is None and not (PLUGIN_DIR / PLUGIN).is_dir():
        return (
            f"snakemake-executor-plugin-slurm is not installed (here or in {PLUGIN_DIR}): "
            "run .ci/slurm/run_tests.sh, or pip install snakemake-executor-plugin-slurm"
        )
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip unless the test cluster and the executor plugin are there."""
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def slurm_profile(slurm_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """profiles/slurm with tests/slurm/profile layered over it: a key of the CI profile replaces
    the key of profiles/slurm, mappings (default-resources, ...) are merged one level deep."""
    profile = yaml.safe_load((workflow_root() / "profiles" / "slurm" / "config.yaml").read_text())
    for key, value in yaml.safe_load(CI_PROFILE.read_text()).items():
        if isinstance(value, dict) and isinstance(profile.get(key), dict):
            profile[key] = {**profile[key], **value}
        else:
            profile[key] = value
    folder = tmp_path_factory.mktemp("slurm-profile")
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


@dataclass
class SlurmRun:
    """What a test started: head processes (own process groups) and its folder; the
    finalizer kills the heads and cancels every Slurm job that runs in the folder."""

    root: Path
    heads: list[subprocess.Popen]
    ended_states = frozenset(ENDED)

    def start(self, command: list[str], log: Path) -> subprocess.Popen:
        """Start a Snakemake head (or model-explore) in its own process group."""
        with open(log, "w") as handle:
            process = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.heads.append(process)
        return process

    def jobs(self, folder: Path) -> list[JobRecord]:
        return job_records(folder)


@pytest.fixture
def slurm_run(
    slurm_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SlurmRun]:
    """The test's environment for Snakemake on Slurm, and its clean-up (also on failure)."""
    if importlib.util.find_spec(PLUGIN) is None:
        # sbatch --export=ALL passes PYTHONPATH on to the jobs (their Snakemake needs the
        # slurm-jobstep plugin, installed next to the slurm one)
        path = os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")]))
        monkeypatch.setenv("PYTHONPATH", path)
    run = SlurmRun(root=tmp_path, heads=[])
    yield run
    for process in run.heads:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    left = cancel_jobs_under(tmp_path)
    assert not left, f"Slurm jobs of the test still there after scancel: {left}"


@dataclass(frozen=True)
class JobRecord:
    """One Slurm job as squeue shows it (finished ones stay for MinJobAge=600 s)."""

    job_id: str
    state: str
    work_dir: str
    comment: str
    submit: float
    start: float | None
    end: float | None
    tres_per_job: str


def _timestamp(text: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:  # N/A, Unknown
        return None


def job_records(folder: Path) -> list[JobRecord]:
    """This user's Slurm jobs, also finished ones, whose working directory is under folder."""
    fields = ("JobID", "State", "WorkDir", "Comment", "SubmitTime", "StartTime", "EndTime")
    fields += ("tres-per-job",)
    out = _run(
        "squeue",
        "--me",
        "--states=all",
        "--noheader",
        "--Format=" + ",".join(f + ":|" for f in fields),
    )
    records = []
    for line in out.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 8 or not parts[2].startswith(str(folder)):
            continue
        job_id, state, work_dir, comment, submit, start, end, tres = parts[:8]
        records.append(
            JobRecord(
                job_id,
                state,
                work_dir,
                comment.strip(),
                _timestamp(submit) or 0.0,
                _timestamp(start),
                _timestamp(end),
                tres.strip(),
            )
        )
    return records


def cancel_jobs_under(folder: Path, timeout: float = 90) -> list[str]:
    """scancel every active job of this user that runs under folder; wait until they ended.
    Returns the IDs still active after ``timeout`` seconds."""
    active = [r.job_id for r in job_records(folder) if r.state not in ENDED]
    if active:
        _run("scancel", *active)
    deadline = time.monotonic() + timeout
    while active and time.monotonic() < deadline:
        time.sleep(0.5)
        active = [r.job_id for r in job_records(folder) if r.state not in ENDED]
    return active
