"""``octopi explore-trial`` (one trial slot of a study), ``octopi select-best`` and
``octopi evaluate-test``.

Thin wrappers over :func:`octopi.search.slots.run_trial_slot`,
:func:`octopi.search.select.select_best` and :func:`octopi.search.evaluate_test.evaluate_test`;
the Snakemake rules ``trial``, ``select_best`` and ``evaluate_test`` call them with the study
folder as working directory.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from octopi.cli.options import exit_without_teardown, friendly_errors, stop_on_signals_then_exit

if TYPE_CHECKING:  # the slot machinery imports optuna: load it only where a command needs it
    from octopi.search.slot_results import SlotResult

_STUDY_DIR = click.option(
    "--study-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The study folder (optuna.journal, trials/, mlflow.db).",
)
_STUDY_CONFIG = click.option(
    "--study-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Workflow config (YAML) of the study.  [default: STUDY_DIR/config.yaml]",
)
_TRACKING_URI = click.option(
    "--tracking-uri",
    envvar="OCTOPI_TRACKING_URI",  # octopi.study_tracking.TRACKING_URI_ENV
    help="MLflow tracking URI; 'none' turns tracking off.  [default: $OCTOPI_TRACKING_URI (the "
    "study's MLflow server, set by model-explore), else tracking.uri of the study config, else "
    "sqlite:///STUDY_DIR/mlflow.db]",
)


def load_workflow(study_dir: Path, study_config: Path | None):
    """The study's :class:`~octopi.config.WorkflowConfig` (``study_config``, default
    STUDY_DIR/config.yaml); refused when it differs from the settings the study started with
    (:func:`octopi.study_settings.check_unchanged`), e.g. after an edit while the study runs."""
    from octopi.study_settings import check_unchanged
    from octopi.workflow_runner import STUDY_CONFIG, load_study_config

    workflow = load_study_config(study_config or study_dir / STUDY_CONFIG)
    check_unchanged(study_dir, workflow)
    return workflow


def load_split(path: Path):
    """The :class:`~octopi.data.split.RunSplit` of a ``split.json`` from ``octopi split-runs``."""
    from octopi.data.split import read_split

    return read_split(path)


@click.command("explore-trial")
@_STUDY_DIR
@click.option("--slot", required=True, type=int, help="Trial slot to run, 0..num_trials-1.")
@_STUDY_CONFIG
@click.option(
    "--split",
    "split_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="split.json from split-runs.  [default: STUDY_DIR/split.json]",
)
@_TRACKING_URI
@click.option(
    "--search-space",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML narrowing the search space.  [default: STUDY_DIR/search_space.yaml if present]",
)
@click.option("--device", help="torch device, e.g. cuda:1.  [default: first GPU, else CPU]")
@click.option("--progress/--no-progress", default=False, help="Show a training progress bar.")
@click.option(
    "--fast-exit",
    is_flag=True,
    hidden=True,
    help="End the process without Python's teardown (about 2 s with torch loaded) once the "
    "trial is done and reported; the workflow's trial rule runs it so.",
)
@friendly_errors
def explore_trial(
    study_dir, slot, study_config, split_path, tracking_uri, search_space, device, progress,
    fast_exit,
):  # fmt: skip
    """Run one trial slot of a model-exploration study (resumes; a finished slot is a no-op)."""
    start = time.perf_counter()
    from octopi.cpu_slots import claim_cpu_share
    from octopi.errors import MissingInputError
    from octopi.gpu_slots import claim_gpu
    from octopi.models.search_spaces import load_overrides
    from octopi.search.slots import SlotBusyError, run_trial_slot

    workflow = load_workflow(study_dir, study_config)
    split = load_split(split_path or study_dir / "split.json")
    overrides = None
    if search_space is not None:
        if not search_space.is_file():
            raise MissingInputError(f"--search-space {search_space} not found")
        overrides = load_overrides(search_space)
    # Locally each running trial takes its own GPU (under Slurm the job already has one); on
    # the CPU, with several trials at once, its own share of the cores.
    gpu_claim = claim_gpu() if device is None else nullcontext()
    warning_seconds = workflow.trial_resources.warning_seconds
    try:
        with gpu_claim, claim_cpu_share(), stop_on_signals_then_exit(warning_seconds):
            result = run_trial_slot(
                study_dir,
                slot,
                workflow,
                split,
                tracking_uri=tracking_uri,
                show_progress=progress,
                search_space_overrides=overrides,
                device=device,
            )
    except SlotBusyError as error:
        raise click.ClickException(str(error)) from error
    _report_trial(result, time.perf_counter() - start)
    if fast_exit:
        exit_without_teardown(0)


def _report_trial(result: SlotResult, command_seconds: float) -> None:
    """What explore-trial prints: the slot's outcome, where its seconds went, its result."""
    metric = "none" if result.best_metric is None else f"{result.best_metric:.4f}"
    slot = result.slot
    if result.reused:
        trial = result.trial_number
        click.echo(f"slot {slot}: already {result.state} (trial {trial}); nothing run")
    else:
        click.echo(
            f"slot {slot}: {result.state}, trial {result.trial_number}, {result.metric_name} "
            f"{metric} at epoch {result.best_epoch}, {result.epochs_completed} epochs"
            + (
                f" (resumed after epoch {result.resumed_from_epoch})"
                if result.resumed_from_epoch
                else ""
            )
        )
        cpu = result.cpu_seconds_phases
        cpu_training = cpu.get("training", 0.0)
        click.echo(
            f"seconds: {result.seconds_total:.1f} in the slot ({result.seconds_training:.1f} "
            f"training, {result.seconds_overhead:.1f} overhead), "
            f"{command_seconds:.1f} in the command; CPU seconds: "
            f"{cpu_training:.1f} training, {sum(cpu.values()) - cpu_training:.1f} other"
        )
        click.echo(
            "phases (wall / CPU s): "
            + ", ".join(
                f"{k} {v:.1f}/{cpu.get(k, 0.0):.1f}" for k, v in result.seconds_phases.items()
            )
        )
    _report_calibration(Path(result.trial_dir) / "model_config.yaml")
    click.echo(f"result: {Path(result.trial_dir) / 'result.json'}")


def _report_calibration(model_config: Path) -> None:
    """One line: the validation F-beta of the trial's model from labels and calibrated."""
    from octopi.models.model_card import ModelCard

    calibration = ModelCard.load(model_config).calibration if model_config.is_file() else None
    if calibration is not None:
        weighted = calibration.weighted_fbeta
        click.echo(
            f"calibrated picking (validation weighted F{calibration.beta:g}): labels "
            f"{weighted['labels']:.4f} → calibrated {weighted['calibrated']:.4f}"
        )


@click.command("select-best")
@_STUDY_DIR
@_STUDY_CONFIG
@_TRACKING_URI
@friendly_errors
def select_best(study_dir, study_config, tracking_uri):
    """Pick the study's best trial: best/, trials.csv and plots/ in the study folder."""
    from octopi.search.select import select_best as run_select_best

    workflow = load_workflow(study_dir, study_config)
    summary = run_select_best(study_dir, workflow, tracking_uri=tracking_uri)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary.trial_counts.items()))
    click.echo(
        f"best: slot {summary.slot} (trial {summary.trial_number}), {summary.metric_name} "
        f"{summary.best_metric:.4f}; trials: {counts}"
    )
    click.echo(f"model: {summary.best_dir}; table: {summary.trials_csv}")
    for name, outcome in summary.plots.items():
        click.echo(f"plot {name}: {outcome}")
    if summary.ensemble is not None:
        ensemble = summary.ensemble
        weighted = ensemble["validation_weighted_fbeta"]
        calibrated = f"; calibrated validation F {weighted['calibrated']:.4f}" if weighted else ""
        click.echo(
            f"ensemble of slots {', '.join(map(str, ensemble['slots']))}: "
            f"{ensemble['folder']}{calibrated}"
        )


@click.command("evaluate-test")
@click.option(
    "--study-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Study directory holding best/.",
)
@click.option(
    "--study-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Workflow config.  [default: STUDY_DIR/config.yaml]",
)
@click.option(
    "--split",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="split.json with the test runs.  [default: STUDY_DIR/split.json]",
)
@friendly_errors
def evaluate_test(study_dir, study_config, split) -> None:
    """Score the study's best model on its test runs (STUDY_DIR/test/metrics.json)."""
    from octopi.gpu_slots import claim_gpu

    workflow = load_workflow(study_dir, study_config)
    run_split = load_split(split or study_dir / "split.json")
    with claim_gpu():
        from octopi.search.evaluate_test import METRICS_PATH
        from octopi.search.evaluate_test import evaluate_test as run_evaluation

        metrics = run_evaluation(study_dir, workflow, run_split)
    click.echo(
        f"test runs {', '.join(metrics['test_runs'])}: {metrics['best_metric']} = "
        f"{metrics['best_metric_value']:.4f}, weighted F{metrics['beta']:g} = "
        f"{metrics['weighted_fbeta']:.4f} → {study_dir / METRICS_PATH}"
    )
    if metrics.get("ensemble"):
        ensemble = metrics["ensemble"]
        click.echo(
            f"ensemble: {ensemble['best_metric']} = {ensemble['best_metric_value']:.4f}, "
            f"weighted F{ensemble['beta']:g} = {ensemble['weighted_fbeta']:.4f}"
        )
