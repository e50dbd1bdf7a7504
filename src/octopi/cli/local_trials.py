"""Where the trials of a local `octopi model-explore` run: one per GPU, or CPU shares."""

from __future__ import annotations

import os

import click


def plan_local_trials(
    gpus: int | None, cpu_trials: int | None, cluster: bool
) -> tuple[int | None, dict[str, str] | None, list[str]]:
    """(``--resources gpu=N`` value, environment for Snakemake, more Snakemake arguments) of
    a local run: one trial per GPU, or on the CPU (no GPU, or ``--gpus 0``) ``--cpu-trials``
    trials at once, each on its share of the cores (:mod:`octopi.cpu_slots`)."""
    from octopi.cpu_slots import CPU_TRIALS_ENV, default_cpu_trials
    from octopi.gpu_slots import list_gpus
    from octopi.parallel import usable_cpus

    if cluster:
        for flag, value in (("--gpus", gpus), ("--cpu-trials", cpu_trials)):
            if value is not None:
                click.echo(f"note: {flag} applies to local runs; the cluster assigns devices")
        return None, None, []
    present = list_gpus()
    if gpus is not None and gpus > len(present):
        raise click.ClickException(
            f"--gpus {gpus}: this machine has {len(present)} GPU(s) "
            f"({', '.join(present) or 'nvidia-smi lists none'}); give at most {len(present)}"
            + (" or 0 to train on the CPU" if not present else "")
        )
    if present and gpus != 0:
        if cpu_trials is not None:
            click.echo("note: --cpu-trials applies where trials train on the CPU (--gpus 0)")
        return (len(present) if gpus is None else gpus), None, []
    cores = usable_cpus()
    trials = max(1, min(cores, default_cpu_trials(cores) if cpu_trials is None else cpu_trials))
    env = {**os.environ, CPU_TRIALS_ENV: str(trials)}
    if gpus == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return trials, env, ["--set-threads", f"trial={max(1, cores // trials)}"]
