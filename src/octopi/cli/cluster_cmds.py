"""`octopi check-cluster`, and the cluster side of `octopi model-explore`: the up-front check of
how job states will be learnt (:mod:`octopi.cluster_check`) and the heartbeat of a running
study (:mod:`octopi.study_monitor`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from octopi.config import WorkflowConfig


def _plan(profile_path: str):
    from octopi.cluster_check import gather_facts, plan_status, read_profile

    facts = gather_facts()
    return facts, plan_status(facts, read_profile(profile_path), profile_path)


def prepare_cluster_run(profile_path: str | None, executor: str | None) -> list[str]:
    """Before a study runs on Slurm: the Snakemake arguments the check adds (e.g.
    ``--slurm-status-command squeue``), with one line per choice; ClickException, before
    anything is submitted, when job states could not be learnt. Nothing for local runs."""
    if executor != "slurm" or profile_path is None:
        return []
    _, plan = _plan(profile_path)
    if plan.problem:
        raise click.ClickException(
            f"this study cannot run on Slurm as set up: {plan.problem}. "
            f"`octopi check-cluster --profile {profile_path}` shows what the cluster says."
        )
    for note in plan.notes:
        click.echo(f"cluster: {note}")
    return plan.extra_args


@contextlib.contextmanager
def study_heartbeat(
    study_dir: Path, config: WorkflowConfig, executor: str | None, profile: str | None
) -> Iterator[None]:
    """While the block runs a cluster study, print its heartbeat (see StudyMonitor)."""
    if executor != "slurm":
        yield
        return
    from octopi.slurm_jobs import study_slurm_jobs
    from octopi.study_monitor import StudyMonitor

    def slurm_states() -> list[str]:
        return [job.state for job in study_slurm_jobs(study_dir)]

    monitor = StudyMonitor(
        study_dir,
        config.search.num_trials,
        heartbeat_seconds=config.monitor.heartbeat_minutes * 60,
        stall_seconds=config.monitor.stall_minutes * 60,
        slurm_states=slurm_states,
        profile=profile,
    )
    with monitor:
        yield


@click.command("check-cluster")
@click.option(
    "--profile",
    default="slurm",
    show_default=True,
    help="Snakemake profile the study will use: a name (your installed copy, else octopi's) "
    "or a folder.",
)
def check_cluster(profile: str) -> None:
    """Say what a Slurm study needs from this cluster and what it found: partitions, GPUs per
    node, accounting (sacct), MinJobAge, the executor plugin, and how job states will be
    learnt. Exits with status 1 when a study could not run as set up."""
    from octopi.cli.explore_cmds import _resolve_profile
    from octopi.cluster_check import describe

    profile_path, executor = _resolve_profile(profile)
    if executor != "slurm":
        raise click.ClickException(
            f"profile {profile!r} ({profile_path}) does not use the Slurm executor "
            "(executor: slurm in its config.yaml)"
        )
    facts, plan = _plan(profile_path)
    for line in describe(facts, plan, profile_path):
        click.echo(line)
    if plan.problem:
        raise SystemExit(1)
