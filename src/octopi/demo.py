"""`make demo`: a small model-exploration study end to end on a synthetic copick project.

Run as ``python -m octopi.demo --output DIR``: it synthesizes a copick project, makes the
segmentation targets, then runs ``octopi model-explore`` (the Snakemake workflow: discovery,
split, 4 Optuna trials, best-model selection, evaluation on the held-out test run, report) with
a search space narrowed so that it finishes in minutes on a laptop CPU. Steps that already
finished are not redone: rerunning after an interruption continues where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import yaml

from octopi.config import CopickSource, SynthesizeConfig, TargetsConfig

# Small, quick networks for a CPU: the full ranges are in octopi.models.search_spaces.
DEMO_SEARCH_SPACE = {
    "dim_in": 48,
    "batch_size": 8,
    "base_channel": 16,
    "num_layers": 3,
    "hidden_layers": 1,
    "num_res_units": 1,
    "lr": {"low": 0.001, "high": 0.003},
    "loss": ["tversky", "focal_tversky", "dice_ce"],
}


def _prepare_project(output: Path, runs: int, seed: int) -> Path:
    from octopi.data.synthetic import synthesize_project
    from octopi.data.targets import create_targets
    from octopi.io_utils import write_resolved_config

    project = output / "project"
    config_path = project / "copick.json"
    if config_path.is_file():
        click.echo(f"using the existing project {config_path}")
        return config_path
    start = time.perf_counter()
    synth = SynthesizeConfig(output=project, runs=runs, seed=seed)
    summary = synthesize_project(synth)
    write_resolved_config(project, "synthesize", synth)
    targets = TargetsConfig(configs=[CopickSource(path=config_path)])
    counts = create_targets(targets)
    write_resolved_config(project, "create-targets", targets)
    click.echo(
        f"synthesized {len(summary.runs)} runs of {summary.shape_zyx} voxels and their targets "
        f"in {time.perf_counter() - start:.1f} s; particles per run:"
    )
    names = sorted({name for per_run in counts.values() for name in per_run})
    click.echo("  run      " + "".join(f"{name[:12]:>13}" for name in names))
    for run, per_run in counts.items():
        click.echo(f"  {run:<8} " + "".join(f"{per_run.get(name, 0):>13}" for name in names))
    return config_path


@click.command()
@click.option("--output", default="demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--runs", default=6, show_default=True, help="Synthetic runs to make.")
@click.option("--trials", default=4, show_default=True, help="Optuna trials.")
@click.option("--epochs", default=16, show_default=True, help="Epochs per trial.")
@click.option("--seed", default=0, show_default=True)
def main(output: Path, runs: int, trials: int, epochs: int, seed: int) -> None:
    """Synthesize a copick project and run a small model-exploration study on it."""
    from octopi.cli import main as octopi_cli

    output = output.resolve()
    config_path = _prepare_project(output, runs, seed)
    study = output / "study"
    study.mkdir(parents=True, exist_ok=True)
    (study / "search_space.yaml").write_text(yaml.safe_dump(DEMO_SEARCH_SPACE, sort_keys=False))
    args = [
        "model-explore",
        "--config", str(config_path),
        "--tomo-alg", "denoised",
        "--data-split", "0.67,0.17",
        "--num-trials", str(trials),
        "--num-epochs", str(epochs),
        # Two validations (half-way and last): each calibrates the network on the validation
        # run, about 5 s here; four of them cost ~30 s of the study and chose the same epoch.
        "--val-interval", str(max(1, epochs // 2)),
        "--best-metric", "fBeta4",
        "--study-name", "demo",
        # Every trial runs to the end: which trials the median pruner stops depends on the
        # order the jobs happen to start in, and the top-3 ensemble needs complete trials.
        "--pruner", "none",
        "--output", str(study),
    ]  # fmt: skip
    start = time.perf_counter()
    octopi_cli.main(args, standalone_mode=False)
    click.echo(f"\nstudy finished in {time.perf_counter() - start:.0f} s")

    metrics_path = study / "test" / "metrics.json"
    best = json.loads((study / "best" / "summary.json").read_text())
    click.echo(
        f"best trial: slot {best['slot']} ({best['metric_name']} {best['best_metric']:.3f} "
        "on the validation run)"
    )
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        click.echo(f"test F4 (CZII weights) of the best model: {metrics['weighted_fbeta']:.3f}")
        ensemble = metrics.get("ensemble")
        if ensemble:
            members = len(best.get("ensemble", {}).get("slots", []))
            click.echo(
                f"test F4 (CZII weights) of the top-{members} ensemble: "
                f"{ensemble['weighted_fbeta']:.3f}"
            )
    click.echo(f"study directory: {study}")


if __name__ == "__main__":
    main()
