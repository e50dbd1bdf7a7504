"""`make demo`: a small study end to end on a synthetic copick project.

Run as ``python -m octopi.demo --output DIR``. Steps that already finished are not redone,
so rerunning after an interruption continues where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from octopi.config import CopickSource, SynthesizeConfig, TargetsConfig


@click.command()
@click.option("--output", default="demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--runs", default=6, show_default=True, help="Synthetic runs to make.")
@click.option("--seed", default=0, show_default=True)
def main(output: Path, runs: int, seed: int) -> None:
    """Synthesize a copick project and prepare its segmentation targets."""
    from octopi.data.synthetic import synthesize_project
    from octopi.data.targets import create_targets
    from octopi.io_utils import write_resolved_config

    project = output / "project"
    config_path = project / "copick.json"
    if not config_path.is_file():
        start = time.perf_counter()
        synth = SynthesizeConfig(output=project, runs=runs, seed=seed)
        summary = synthesize_project(synth)
        write_resolved_config(project, "synthesize", synth)
        click.echo(f"synthesized {len(summary.runs)} runs in {time.perf_counter() - start:.1f} s")
    else:
        click.echo(f"using the existing project {config_path}")

    targets = TargetsConfig(configs=[CopickSource(path=config_path)])
    start = time.perf_counter()
    counts = create_targets(targets)
    write_resolved_config(output, "create-targets", targets)
    click.echo(f"wrote targets {targets.target} in {time.perf_counter() - start:.1f} s")

    click.echo("\nproject summary (particles per run):")
    names = sorted({name for per_run in counts.values() for name in per_run})
    click.echo("  run      " + "".join(f"{name[:12]:>13}" for name in names))
    for run, per_run in counts.items():
        click.echo(f"  {run:<8} " + "".join(f"{per_run.get(name, 0):>13}" for name in names))
    click.echo(f"\ncopick config: {config_path.resolve()}")
    click.echo(
        "tomograms: wbp, denoised; ground-truth picks: curation/0; targets: targets,octopi,1"
    )


if __name__ == "__main__":
    main()
