"""`octopi model-explore` (plans and runs the Snakemake study) and `octopi install-profile`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from octopi.cli.cluster_cmds import prepare_cluster_run, study_heartbeat
from octopi.cli.local_trials import plan_local_trials
from octopi.cli.options import data_options, default_help, friendly_errors, split_csv
from octopi.config import (
    MODEL_TYPES,
    CopickSource,
    SearchConfig,
    TargetSpec,
    TrainingConfig,
    WorkflowConfig,
    canonical_model_type,
)
from octopi.input_files import absolute_path

DEFAULT_OUTPUT = "explore_results"


# CLI flag -> (config section, key, parse). Flags left out (None) keep the base config's value.
_FLAGS: dict[str, tuple[str, str, Any]] = {
    "voxel_size": ("data", "voxel_size_angstrom", None),
    "target_info": ("data", "target", lambda text: TargetSpec.parse(text).model_dump()),
    "tomo_alg": ("data", "tomo_algorithms", split_csv),
    "train_run_ids": ("data", "train_run_ids", split_csv),
    "validate_run_ids": ("data", "validate_run_ids", split_csv),
    "data_split": ("data", "data_split", None),
    "model_type": ("search", "model_type", canonical_model_type),
    "num_epochs": ("training", "num_epochs", None),
    "val_interval": ("training", "val_interval", None),
    "ncache_tomos": ("training", "ncache_tomos", None),
    "best_metric": ("training", "best_metric", None),
    "background_ratio": ("training", "background_ratio", None),
    "num_trials": ("search", "num_trials", None),
    "random_seed": ("search", "random_seed", None),
    "study_name": ("search", "study_name", None),
    "pruner": ("search", "pruner", None),
    "tracking_uri": ("tracking", "uri", None),
}


def _absolute_sources(sources: list[dict], base: Path) -> list[dict]:
    """Copick config paths made absolute against ``base`` (the study runs elsewhere)."""
    return [{**s, "path": str(absolute_path(s["path"], base))} for s in sources]


def _optional_config(command: click.Command) -> click.Command:
    """--config may be left out when the study (or --study-config) already names projects."""
    for param in command.params:
        if param.name == "configs":
            param.required = False
    return command


def build_study_config(
    base: WorkflowConfig | None, configs: tuple[str, ...], flags: dict[str, Any]
) -> WorkflowConfig:
    """``base`` (or the defaults) with every given flag applied; copick paths made absolute."""
    values = base.model_dump(mode="json") if base is not None else {}
    for section in ("data", "training", "search", "tracking"):
        values.setdefault(section, {})
    if configs:
        sources = [CopickSource.parse(text).model_dump(mode="json") for text in configs]
        values["data"]["configs"] = _absolute_sources(sources, Path.cwd())
    elif "configs" not in values["data"]:
        raise click.UsageError(
            "Missing option '--config': a new study needs the copick config file(s)."
        )
    for name, value in flags.items():
        if value is None:
            continue
        section, key, parse = _FLAGS[name]
        values[section][key] = parse(value) if parse else value
    return WorkflowConfig.model_validate(values)


def _check_copick_configs(config: WorkflowConfig) -> None:
    from octopi.workflow_runner import missing_copick_configs

    missing = missing_copick_configs(config)
    if missing:
        raise click.ClickException(
            f"copick config not found: {missing[0]}. Give the copick project's config "
            "JSON with --config (as path or session_name,path)."
        )


def _resolve_profile(profile: str | None) -> tuple[str | None, str | None]:
    """(profile folder or name for Snakemake, its executor; None: local).

    ``--profile slurm`` is the user's copy (``octopi install-profile``, where the site settings
    live) if there is one, else the packaged ``profiles/slurm``.
    """
    from octopi.snakemake_profiles import find_profile, profile_executor

    if profile is None:
        return None, None
    path = find_profile(profile)
    if path is None:
        return profile, None  # let Snakemake say what it cannot find
    executor = profile_executor(path)
    return str(path), None if executor in (None, "local") else executor


def _print_monitoring(study_dir: Path, config: WorkflowConfig, tracking: Any) -> None:
    journal = study_dir / "optuna.journal"
    click.echo(
        f"study {config.search.study_name!r}: {config.search.num_trials} trials of "
        f"{config.search.model_type} in {study_dir}\n"
        f"  Optuna study   {journal}\n"
        f"      optuna-dashboard {journal}      (pip install optuna-dashboard)\n"
        f"{tracking.describe()}\n"
        f"  logs           {study_dir / 'logs'}/<rule>/\n"
        f"  report         {study_dir / 'report.html'} (when the study has finished)\n"
        "  interrupted?   rerun the same command with --resume"
    )


def _interruption_hint(study_dir: Path) -> None:
    meta = study_dir / ".snakemake"
    if any((meta / "locks").glob("*")) or any((meta / "incomplete").glob("*")):
        click.echo(
            f"\nIf no other Snakemake runs in {study_dir}, an earlier run was interrupted: "
            "rerun the same command with --resume.",
            err=True,
        )


def _check_status(status: int, study_dir: Path) -> None:
    if status != 0:
        _interruption_hint(study_dir)
        raise click.ClickException(
            f"Snakemake stopped with status {status}; see the messages above and "
            f"{study_dir / 'logs'}"
        )


def _dry_run(
    study_dir: Path, config: WorkflowConfig, env: dict[str, str] | None, **snakemake: Any
) -> None:
    """Plan the study with ``config`` and change nothing: the config goes to a temporary file
    (the workflow reads it through ``PLANNED_CONFIG_ENV``), a study folder that did not exist
    is removed again (with any parent folder Snakemake made for it), and with --resume
    nothing is unlocked or cancelled."""
    from octopi import workflow_runner as runner

    new_folder = not study_dir.exists()
    made = study_dir  # the outermost folder that does not exist yet
    while not made.parent.exists():
        made = made.parent
    try:
        with tempfile.TemporaryDirectory(prefix="octopi-dry-run-") as planned_dir:
            runner.write_study_config(planned_dir, config)
            planned = Path(planned_dir) / runner.STUDY_CONFIG
            env = {**(os.environ if env is None else env), runner.PLANNED_CONFIG_ENV: str(planned)}
            args = runner.snakemake_args(study_dir, dry_run=True, config_path=planned, **snakemake)
            status = runner.run_snakemake(args, env)
    finally:
        if new_folder:
            shutil.rmtree(made, ignore_errors=True)
    _check_status(status, study_dir)
    click.echo(
        "dry run: nothing was run or written; the same command without --dry-run "
        + ("starts the study" if new_folder else "runs these jobs")
    )


def _recover(study_dir: Path, executor: str | None) -> None:
    """Before ``--resume``: refuse while the study's head still runs; on Slurm, cancel the jobs
    a killed head left behind (their trials resume from their checkpoints in the rerun)."""
    from octopi import workflow_runner as runner
    from octopi.slurm_jobs import cancel_study_jobs

    head = runner.running_head(study_dir)
    if head is not None and head["checked"]:
        raise click.ClickException(
            f"Snakemake (PID {head['pid']}) still runs this study; --resume is for a study "
            f"whose run was killed. Stop it first (kill -INT {head['pid']}: it cancels its "
            "jobs), or let it finish."
        )
    if head is not None:
        click.echo(
            f"note: a run started on {head['host']} (PID {head['pid']}) did not end cleanly; "
            "make sure it is gone (ps there) before resuming",
            err=True,
        )
    if executor != "slurm":
        return
    try:
        cancelled = cancel_study_jobs(study_dir)
    except RuntimeError as error:
        raise click.ClickException(f"could not cancel the study's Slurm jobs: {error}") from error
    if cancelled:
        listing = ", ".join(f"{job.job_id} ({job.comment}, {job.state})" for job in cancelled)
        click.echo(f"cancelled Slurm jobs left by the interrupted run: {listing}")


@_optional_config
@click.command("model-explore")
@data_options
@click.option(
    "--model-type",
    type=click.Choice(MODEL_TYPES, case_sensitive=False),
    help="Model family to explore." + default_help(SearchConfig, "model_type"),
)
@click.option(
    "--num-epochs", type=int, help="Epochs per trial." + default_help(TrainingConfig, "num_epochs")
)
@click.option(
    "--val-interval",
    type=int,
    help="Validate every N epochs." + default_help(TrainingConfig, "val_interval"),
)
@click.option(
    "--ncache-tomos",
    type=int,
    help="Tomograms cached per epoch." + default_help(TrainingConfig, "ncache_tomos"),
)
@click.option(
    "--best-metric",
    help="Checkpoint/trial metric: avg_f1 or fBetaN." + default_help(TrainingConfig, "best_metric"),
)
@click.option(
    "--background-ratio",
    type=float,
    help="Background/foreground crop ratio." + default_help(TrainingConfig, "background_ratio"),
)
@click.option(
    "--num-trials", type=int, help="Optuna trials." + default_help(SearchConfig, "num_trials")
)
@click.option(
    "--random-seed",
    type=int,
    help="Optuna sampler seed." + default_help(SearchConfig, "random_seed"),
)
@click.option(
    "--study-name",
    help="Optuna study / MLflow experiment." + default_help(SearchConfig, "study_name"),
)
@click.option(
    "--pruner",
    type=click.Choice(["median", "halving", "none"]),
    help="Stop unpromising trials early." + default_help(SearchConfig, "pruner"),
)
@click.option(
    "--output",
    default=DEFAULT_OUTPUT,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Study directory (Snakemake works there; rerun the command there to continue).",
)
@click.option(
    "--study-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from this workflow config YAML (see config/config.yaml); flags override it. "
    "Relative paths in it are relative to its folder.",
)
@click.option("--profile", help="Snakemake profile, e.g. slurm (the packaged one) or a folder.")
@click.option(
    "--tracking-uri",
    help="MLflow server (or store) the trials log to; 'none': off.  [default: the study's "
    "mlflow.db, through an MLflow server this command runs on a cluster]",
)
@click.option("--dry-run", is_flag=True, help="Plan the jobs, run nothing.")
@click.option("--jobs", type=int, help="Jobs at once (local: cores; cluster: submitted jobs).")
@click.option(
    "--gpus",
    type=int,
    help="Trials at once, one GPU each (local; 0: train on the CPU).  [default: every GPU]",
)
@click.option(
    "--cpu-trials",
    type=int,
    help="Trials at once where they train on the CPU (no GPU, or --gpus 0), each on its own "
    "share of the cores (local).  [default: 2, or 1 on a 1-core machine]",
)
@click.option(
    "--resume",
    is_flag=True,
    help="After a killed run: cancel its leftover Slurm jobs, unlock the study, rerun "
    "unfinished jobs (they resume from their checkpoints).",
)
@friendly_errors
def model_explore(
    configs, output, study_config, profile, dry_run, jobs, gpus, cpu_trials, resume, **flags
) -> None:
    """Search architectures and hyperparameters with Optuna: one Snakemake job per trial.

    Writes OUTPUT/config.yaml and runs the workflow there; rerunning the command continues
    the study (finished trials are kept; a larger --num-trials adds trials).
    """
    from octopi import workflow_runner as runner
    from octopi.study_settings import check_unchanged
    from octopi.study_tracking import StudyTracking

    if gpus is not None and gpus < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--gpus")
    if cpu_trials is not None and cpu_trials < 1:
        raise click.BadParameter("must be 1 or more", param_hint="--cpu-trials")
    study_dir = Path(output).expanduser().resolve()
    existing_path = study_dir / runner.STUDY_CONFIG
    existing = runner.load_study_config(existing_path) if existing_path.is_file() else None
    base = runner.load_study_config(study_config) if study_config is not None else existing
    config = build_study_config(base, configs, flags)
    check_unchanged(study_dir, config)  # a started study keeps its settings
    _check_copick_configs(config)
    profile_arg, executor = _resolve_profile(profile)
    gpu_slots, env, extra = plan_local_trials(gpus, cpu_trials, executor is not None)

    common = {"profile": profile_arg, "jobs": jobs, "gpu_slots": gpu_slots}
    tracking = StudyTracking(study_dir, config.tracking, executor is not None)
    if dry_run:
        _print_monitoring(study_dir, config, tracking)
        _dry_run(study_dir, config, env, rerun_incomplete=resume, extra=extra, **common)
        return
    cluster_args = prepare_cluster_run(profile_arg, executor)  # before anything is written
    study_dir.mkdir(parents=True, exist_ok=True)
    runner.write_study_config(study_dir, config)
    if resume:  # first: a killed head's jobs must not run on while the MLflow server starts
        _recover(study_dir, executor)
    tracking = click.get_current_context().with_resource(tracking)  # stopped when we exit
    _print_monitoring(study_dir, config, tracking)
    env = tracking.environment(env)
    if resume:
        runner.run_snakemake(runner.snakemake_args(study_dir, extra=["--unlock"]), env)
    args = runner.snakemake_args(
        study_dir, rerun_incomplete=resume, extra=[*extra, *cluster_args], **common
    )
    with study_heartbeat(study_dir, config, executor, profile_arg):
        status = runner.run_snakemake(args, env)
    _check_status(status, study_dir)
    report = study_dir / "report.html"
    report_args = runner.snakemake_args(study_dir, extra=["--report", str(report)], **common)
    if runner.run_snakemake(report_args, env) != 0:
        click.echo(f"warning: the HTML report could not be made ({report})", err=True)
    click.echo(f"study finished: best model in {study_dir / 'best'}, report {report}")


@click.command("install-profile")
@click.option(
    "--name", default="slurm", show_default=True, help="Profile name: snakemake --profile NAME."
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of Snakemake profiles.  [default: ~/.config/snakemake, where Snakemake looks]",
)
@click.option("--force", is_flag=True, help="Replace an edited copy (it is kept as a backup).")
def install_profile(name, dest, force) -> None:
    """Copy octopi's Slurm profile to where `snakemake --profile slurm` finds it.

    Then set your partition and account in DEST/NAME/config.yaml; `octopi model-explore
    --profile slurm` uses that copy too. Rerun after upgrading octopi: an unedited copy is
    updated, an edited one is kept unless --force.
    """
    from octopi.snakemake_profiles import ProfileModifiedError
    from octopi.snakemake_profiles import install_profile as install

    try:
        target, action = install(name, dest, force=force)
    except ProfileModifiedError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"profile {name}: {action} in {target}")
    if action != "up to date":
        click.echo(
            f"next: set slurm_partition / slurm_account in {target / 'config.yaml'}, then\n"
            f"  octopi model-explore ... --profile {name}      or  snakemake --profile {name} ..."
        )
