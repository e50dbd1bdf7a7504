"""Data-preparation subcommands: synthesize, import, create-targets, discover-runs, split-runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from octopi.cli.options import (
    build,
    build_data_config,
    config_option,
    csv_numbers,
    data_options,
    default_help,
    friendly_errors,
    split_csv,
)
from octopi.config import (
    CopickSource,
    DataConfig,
    ImportConfig,
    PickSpec,
    SynthesizeConfig,
    TargetsConfig,
    TargetSpec,
    WorkflowConfig,
    workflow_json_schema,
)

# --------------------------------------------------------------------------- --study-config


def study_config_option(command: click.Command) -> click.Command:
    """Add ``--study-config FILE`` and make ``--config`` optional (one of them is needed).

    Apply above ``@click.command``: the Snakemake workflow calls these commands with the
    study's config.yaml, so that they read exactly the settings of the study.
    """
    for param in command.params:
        if param.name == "configs":
            param.required = False
    command.params.append(
        click.Option(
            ["--study-config"],
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Read the settings from this workflow config (a study's config.yaml) "
            "instead of the flags.",
        )
    )
    return command


def _from_study_config(study_config: Path | None, flag_values: dict) -> WorkflowConfig | None:
    """The study's WorkflowConfig, or None when the flags give the settings.

    ``--study-config`` replaces the settings flags; giving both is an error, and so is neither.
    """
    given = [name for name, value in flag_values.items() if value not in (None, ())]
    if study_config is None:
        if not flag_values.get("configs"):
            raise click.UsageError("Missing option '--config' (or give --study-config FILE).")
        return None
    if given:
        context = click.get_current_context()
        flags = [p.opts[0] for p in context.command.params if p.name in given]
        raise click.UsageError(f"--study-config gives every setting; leave out {', '.join(flags)}")
    from octopi.workflow_runner import load_study_config

    return load_study_config(study_config)


@click.command()
@click.option(
    "--output", required=True, type=click.Path(path_type=Path), help="New project folder."
)
@click.option("--runs", type=int, help="Number of runs." + default_help(SynthesizeConfig, "runs"))
@click.option(
    "--shape",
    callback=csv_numbers(int),
    help="Tomogram shape Z,Y,X." + default_help(SynthesizeConfig, "shape_zyx"),
)
@click.option(
    "--voxel-size",
    type=float,
    help="Voxel size (Å)." + default_help(SynthesizeConfig, "voxel_size_angstrom"),
)
@click.option(
    "--seed",
    type=int,
    help="Random seed; same seed, same project." + default_help(SynthesizeConfig, "seed"),
)
@click.option("--pick-info", help="Ground-truth picks user_id,session_id.  [default: curation,0]")
@click.option(
    "--preset",
    type=click.Choice(["default", "hard"]),
    help="default: the original generator; hard: CTF, lower SNR, crowding, look-alike "
    "distractors, vesicles, gold beads (docs/benchmarks.md)."
    + default_help(SynthesizeConfig, "preset"),
)
@friendly_errors
def synthesize(output, runs, shape, voxel_size, seed, pick_info, preset):
    """Make a synthetic copick project (six CZII particle classes, wbp and denoised tomograms)."""
    import time

    from octopi.data.synthetic import synthesize_project
    from octopi.io_utils import write_resolved_config

    if shape is not None and len(shape) != 3:
        raise click.BadParameter("expected three values Z,Y,X", param_hint="--shape")
    config = build(
        SynthesizeConfig,
        output=output,
        runs=runs,
        shape_zyx=tuple(shape) if shape else None,
        voxel_size_angstrom=voxel_size,
        seed=seed,
        picks=PickSpec.parse(pick_info) if pick_info else None,
        preset=preset,
    )
    start = time.perf_counter()
    summary = synthesize_project(config)
    write_resolved_config(config.output, "synthesize", config)
    seconds = time.perf_counter() - start
    total = sum(sum(counts.values()) for counts in summary.runs.values())
    click.echo(
        f"wrote {len(summary.runs)} runs of shape {summary.shape_zyx} at "
        f"{summary.voxel_size_angstrom:g} Å ({config.preset} preset), {total} particles, "
        f"in {seconds:.1f} s"
    )
    click.echo(f"copick config: {summary.config_path}")


@study_config_option
@click.command("create-targets")
@config_option
@click.option(
    "--voxel-size",
    type=float,
    help="Voxel size (Å)." + default_help(TargetsConfig, "voxel_size_angstrom"),
)
@click.option(
    "--target-info",
    help="Segmentation to write: name,user_id,session_id.  [default: targets,octopi,1]",
)
@click.option("--pick-info", help="Picks to read: user_id,session_id.  [default: curation,0]")
@click.option("--objects", help="Objects to include, comma-separated.  [default: every particle]")
@click.option(
    "--radius-fraction",
    "--radius-scale",
    "radius_fraction",
    type=float,
    help="Ball radius / particle radius." + default_help(TargetsConfig, "radius_fraction"),
)
@click.option("--run-ids", help="Runs to process, comma-separated.  [default: all]")
@click.option(
    "--output", type=click.Path(path_type=Path), help="Folder for the resolved config and summary."
)
@friendly_errors
def create_targets(output, study_config, **values):
    """Turn particle picks into multi-class label volumes (segmentation targets) in copick."""
    from octopi.data.targets import create_targets as run_create_targets
    from octopi.io_utils import atomic_write_json, write_resolved_config

    study = _from_study_config(study_config, values)
    if study is not None:
        if study.create_targets is None:
            raise click.UsageError(f"{study_config} has no create_targets section")
        config = study.create_targets
    else:
        config = build(
            TargetsConfig,
            configs=[CopickSource.parse(text) for text in values["configs"]],
            voxel_size_angstrom=values["voxel_size"],
            target=TargetSpec.parse(values["target_info"]) if values["target_info"] else None,
            picks=PickSpec.parse(values["pick_info"]) if values["pick_info"] else None,
            objects=split_csv(values["objects"]),
            radius_fraction=values["radius_fraction"],
            run_ids=split_csv(values["run_ids"]),
        )
    summary = run_create_targets(config)
    if output is not None:
        write_resolved_config(output, "create-targets", config)
        atomic_write_json(Path(output) / "targets.json", summary)
    for run, counts in summary.items():
        click.echo(f"{run}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    click.echo(f"wrote target segmentation {config.target} for {len(summary)} runs")


@click.command("import")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="copick config file.",
)
@click.option(
    "--input",
    "input_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of .mrc/.rec files.",
)
@click.option(
    "--tomo-alg",
    help="Tomogram algorithm name to write." + default_help(ImportConfig, "tomo_algorithm"),
)
@click.option(
    "--output-voxel-size",
    type=float,
    help="Resample to this voxel size (Å).  [default: as in the header]",
)
@click.option("--overwrite", is_flag=True, default=None, help="Replace existing tomograms.")
@friendly_errors
def import_mrc(config_path, input_dir, tomo_alg, output_voxel_size, overwrite):
    """Import MRC tomograms into a copick project (run names from file names)."""
    from octopi.data.mrc_import import import_mrc_tomograms

    config = build(
        ImportConfig,
        config=config_path,
        input_dir=input_dir,
        tomo_algorithm=tomo_alg,
        output_voxel_size_angstrom=output_voxel_size,
        overwrite=overwrite,
    )
    for item in import_mrc_tomograms(config):
        z, y, x = item.source_voxel_size_zyx_angstrom
        header = f"{x:g} Å" if z == y == x else f"{z:g} × {y:g} × {x:g} Å, Z × Y × X"
        click.echo(
            f"{item.run_name}: {item.source.name} {item.shape_zyx} at "
            f"{item.voxel_size_angstrom:g} Å (header {header})"
        )


@study_config_option
@click.command("discover-runs")
@data_options
@click.option(
    "--output", required=True, type=click.Path(path_type=Path), help="runs.json to write."
)
@friendly_errors
def discover_runs(output, study_config, **data_values):
    """List the runs that have the requested tomograms and targets (runs.json)."""
    from octopi.data.copick_io import CopickProjects
    from octopi.data.split import discover_runs as run_discovery
    from octopi.io_utils import atomic_write_json

    study = _from_study_config(study_config, data_values)
    data = study.data if study is not None else build_data_config(**data_values)
    discovery = run_discovery(CopickProjects(data.configs), data)
    atomic_write_json(output, {"data": data.model_dump(mode="json"), **discovery.to_dict()})
    click.echo(f"{len(discovery.usable)} usable runs, {len(discovery.skipped)} skipped → {output}")
    for key, why in discovery.skipped.items():
        click.echo(f"  skipped {key}: {why}")


@study_config_option
@click.command("split-runs")
@data_options
@click.option(
    "--seed",
    "split_seed",
    type=int,
    help="Seed of the split." + default_help(DataConfig, "split_seed"),
)
@click.option(
    "--runs-file",
    type=click.Path(exists=True, path_type=Path),
    help="runs.json from discover-runs (else discover now).",
)
@click.option(
    "--output", required=True, type=click.Path(path_type=Path), help="split.json to write."
)
@friendly_errors
def split_runs(output, runs_file, study_config, **data_values):
    """Split usable runs into train / validation (/ test) sets (split.json)."""
    from octopi.data.copick_io import CopickProjects
    from octopi.data.split import discover_runs as run_discovery
    from octopi.data.split import split_runs as run_split
    from octopi.io_utils import atomic_write_json

    study = _from_study_config(study_config, data_values)
    data = study.data if study is not None else build_data_config(**data_values)
    projects = CopickProjects(data.configs)
    if runs_file is not None:
        usable = _usable_runs(Path(runs_file))
    else:
        usable = run_discovery(projects, data).usable
    split = run_split(usable, data, projects)
    atomic_write_json(output, {"data": data.model_dump(mode="json"), **split.to_dict()})
    click.echo(
        f"train {len(split.train)}, validation {len(split.validate)}, test {len(split.test)} "
        f"→ {output}"
    )


def _usable_runs(runs_file: Path) -> list[str]:
    """The usable runs recorded in a ``runs.json`` of ``octopi discover-runs``."""
    from octopi.errors import InputError
    from octopi.input_files import read_json_file

    records = read_json_file(runs_file, "run list")
    usable = records.get("usable") if isinstance(records, dict) else None
    if not isinstance(usable, list):
        raise InputError(f"{runs_file} lists no usable runs: not a runs.json of discover-runs")
    return usable


@click.command()
@click.option("--output", type=click.Path(path_type=Path), help="Write here instead of stdout.")
def schema(output):
    """Print the JSON schema of the workflow config (workflow/schemas/config.schema.json)."""
    from octopi.io_utils import atomic_write_text

    text = json.dumps(workflow_json_schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        atomic_write_text(output, text)
