"""What a Slurm study needs from the cluster, checked before anything is submitted.

Snakemake's slurm executor learns that a job ended from ``sacct`` (the default wherever the
command exists) or ``squeue``. On a cluster without accounting (no slurmdbd) ``sacct`` exists
but answers nothing, and a study waits forever for jobs that ended long ago; ``squeue`` works
only while Slurm still lists ended jobs (MinJobAge) when the executor first asks
(``slurm-init-seconds-before-status-checks``, default 40 s; the executor wants MinJobAge at
least 3 times that). :func:`gather_facts` asks the cluster, :func:`plan_status` decides:
keep the profile's settings, choose the status command that works (one line says so), or stop
with a message that names the profile key to set. ``octopi check-cluster`` prints the same.
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

PLUGIN = "snakemake-executor-plugin-slurm"
# The executor's defaults (snakemake-executor-plugin-slurm 2.x).
DEFAULT_INIT_SECONDS = 40
MIN_JOB_AGE_FACTOR = 3


@dataclass(frozen=True)
class Partition:
    """One line of ``sinfo``: name (``*``: the default), availability, nodes, GRES, limit."""

    name: str
    available: str
    nodes: str
    gres: str
    time_limit: str


@dataclass(frozen=True)
class ClusterFacts:
    """What the Slurm client tools of this machine say (None: they could not tell)."""

    slurm_version: str | None
    cluster_name: str | None
    partitions: list[Partition]
    accounting: bool  # sacct answers for this user
    sacct_message: str  # sacct's error, when it does not answer
    accounting_enforce: str | None
    user_accounts: list[str]
    min_job_age_seconds: int | None
    plugin_version: str | None
    problems: list[str] = field(default_factory=list)  # the tools themselves are missing


@dataclass(frozen=True)
class StatusPlan:
    """How the study's head will learn job states: Snakemake arguments to add, what to tell
    the user (one line each), and why the study cannot start (None: it can)."""

    status_command: str | None
    extra_args: list[str]
    notes: list[str]
    problem: str | None


def _run(*command: str) -> tuple[int, str, str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return 127, "", f"{command[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{' '.join(command)}: no answer within 60 s"
    return done.returncode, done.stdout, done.stderr.strip()


def _slurm_config(text: str) -> dict[str, str]:
    """``scontrol show config`` → {key: value}."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def parse_seconds(text: str | None) -> int | None:
    """``300 sec``, ``1h``, ``600`` → seconds (None when unreadable)."""
    match = re.match(r"^(\d+)\s*([a-zA-Z]*)", (text or "").strip())
    if not match:
        return None
    value, unit = int(match.group(1)), match.group(2).lower()
    return value * 3600 if unit in ("h", "hour", "hours") else value


def _plugin_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PLUGIN)
    except PackageNotFoundError:
        return None


def gather_facts() -> ClusterFacts:
    """Ask sinfo, scontrol, sacct and sacctmgr of this machine (the login node)."""
    missing = [tool for tool in ("sinfo", "squeue", "sbatch", "scontrol") if not shutil.which(tool)]
    problems = [f"Slurm client tools not found: {', '.join(missing)}"] if missing else []
    _, config_text, _ = _run("scontrol", "show", "config")
    config = _slurm_config(config_text)
    _, sinfo, _ = _run("sinfo", "--noheader", "--format=%P|%a|%D|%G|%l")
    partitions = [Partition(*line.split("|")[:5]) for line in sinfo.splitlines() if "|" in line]
    # the query the executor makes, for a job name nobody uses
    start = f"{datetime.now() - timedelta(days=2):%Y-%m-%dT%H:00}"
    code, _, sacct_error = _run(
        *("sacct", "-X", "--parsable2", "--noheader", "--format=JobIdRaw,State"),
        *("--starttime", start, "--endtime", "now", "--name", "octopi-check-cluster"),
    )
    user = getpass.getuser()
    _, accounts, _ = _run("sacctmgr", "-n", "-s", "list", "user", user, "format=account%256")
    return ClusterFacts(
        slurm_version=config.get("SLURM_VERSION"),
        cluster_name=config.get("ClusterName"),
        partitions=partitions,
        accounting=code == 0,
        sacct_message=" ".join(sacct_error.split()) if code else "",
        accounting_enforce=config.get("AccountingStorageEnforce"),
        user_accounts=sorted({a.strip() for a in accounts.split() if a.strip()}),
        min_job_age_seconds=parse_seconds(config.get("MinJobAge")),
        plugin_version=_plugin_version(),
        problems=problems,
    )


def read_profile(profile: str | Path) -> dict[str, Any]:
    """The settings of a Snakemake profile folder (its config.yaml)."""
    for name in ("config.yaml", "config.v8+.yaml", "profile.yaml"):
        path = Path(profile) / name
        if path.is_file():
            return yaml.safe_load(path.read_text()) or {}
    return {}


def plan_status(facts: ClusterFacts, profile: dict[str, Any], profile_path: str) -> StatusPlan:
    """Decide how job states are queried (see the module docstring)."""
    if facts.problems:
        return StatusPlan(None, [], [], "; ".join(facts.problems))
    if facts.plugin_version is None:
        return StatusPlan(
            None,
            [],
            [],
            f"the Slurm executor plugin is not installed: pip install {PLUGIN} "
            "(or octopi-workflow[slurm]) into this environment",
        )
    init = int(profile.get("slurm-init-seconds-before-status-checks") or DEFAULT_INIT_SECONDS)
    chosen = profile.get("slurm-status-command")
    squeue_ok, squeue_why = _squeue_usable(facts.min_job_age_seconds, init)
    key = f"slurm-status-command in {profile_path}/config.yaml"
    if chosen == "sacct" and not facts.accounting:
        fix = "set it to squeue" if squeue_ok else f"ask for accounting ({squeue_why})"
        problem = f"{key} is sacct, but sacct does not answer ({facts.sacct_message}): {fix}"
        return StatusPlan(None, [], [], problem)
    if chosen == "squeue" and not squeue_ok:
        problem = (
            f"{key} is squeue, but {squeue_why}"
            + (": set it to sacct" if facts.accounting else "")
            + ", or lower slurm-init-seconds-before-status-checks"
        )
        return StatusPlan(None, [], [], problem)
    notes, args = [], []
    if chosen:
        notes.append(f"job status from {chosen} ({key})")
    elif facts.accounting:
        chosen = "sacct"
        notes.append("job status from sacct (Slurm accounting answers)")
    elif squeue_ok:
        chosen, args = "squeue", ["--slurm-status-command", "squeue"]
        notes.append(
            f"job status from squeue: sacct does not answer ({facts.sacct_message}); {squeue_why}"
        )
    else:
        problem = (
            f"no way to learn when jobs end: sacct does not answer ({facts.sacct_message}) and "
            f"{squeue_why}. Ask the admins for Slurm accounting or a longer MinJobAge, or lower "
            f"slurm-init-seconds-before-status-checks in {profile_path}/config.yaml"
        )
        return StatusPlan(None, [], [], problem)
    account_args, account_note = _account_plan(facts, profile)
    return StatusPlan(chosen, args + account_args, notes + account_note, None)


def _squeue_usable(min_job_age: int | None, init_seconds: int) -> tuple[bool, str]:
    needed = MIN_JOB_AGE_FACTOR * init_seconds
    if min_job_age is None:
        return False, "MinJobAge is unknown (scontrol show config did not say)"
    verdict = "≥" if min_job_age >= needed else "<"
    text = (
        f"MinJobAge {min_job_age} s {verdict} {MIN_JOB_AGE_FACTOR} × "
        f"slurm-init-seconds-before-status-checks {init_seconds} s"
    )
    return min_job_age >= needed, text


def _account_plan(facts: ClusterFacts, profile: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Without accounting no account is needed. The executor (2.8) still tries to guess one
    with sacct for every submission and warns twice when it cannot; its
    ``--slurm-no-account`` is declared but not used, so octopi says what to make of it."""
    resources = profile.get("default-resources") or {}
    has_account = isinstance(resources, dict) and resources.get("slurm_account")
    if facts.accounting or has_account:
        return [], []
    note = (
        "no Slurm account needed (no accounting): the executor's warnings 'Unable to guess "
        "SLURM account. Trying to proceed without.' are harmless"
    )
    return [], [note]


def describe(facts: ClusterFacts, plan: StatusPlan, profile_path: str) -> list[str]:
    """The report of ``octopi check-cluster``, one line per fact."""
    lines = [
        f"Slurm {facts.slurm_version or '?'}, cluster {facts.cluster_name or '?'}",
        "partitions (* default):",
        *(
            f"  {p.name}: {p.available}, {p.nodes} node(s), gres {p.gres}, time limit "
            f"{p.time_limit}"
            for p in facts.partitions
        ),
        "accounting: "
        + ("on (sacct answers)" if facts.accounting else f"off ({facts.sacct_message})")
        + f", enforce {facts.accounting_enforce or '?'}, accounts of "
        + f"{getpass.getuser()}: {', '.join(facts.user_accounts) or 'none'}",
        f"MinJobAge: {facts.min_job_age_seconds if facts.min_job_age_seconds is not None else '?'}"
        " s (how long squeue lists ended jobs)",
        f"executor plugin: {PLUGIN} {facts.plugin_version or 'NOT INSTALLED'}",
        f"profile: {profile_path}",
        *(f"→ {note}" for note in plan.notes),
    ]
    if plan.problem:
        lines.append(f"PROBLEM: {plan.problem}")
    return lines
