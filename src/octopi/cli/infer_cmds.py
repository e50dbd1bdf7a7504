"""Inference subcommands: segment, localize, evaluate (thin wrappers over the stage functions)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from octopi.cli.options import build, config_option, default_help, friendly_errors, split_csv
from octopi.config import (
    CopickSource,
    EvaluationConfig,
    InferenceConfig,
    LocalizeConfig,
    PickSpec,
    TargetSpec,
)
from octopi.io_utils import write_resolved_config

if TYPE_CHECKING:
    from octopi.inference.stages import SegmentSummary


def _sources(configs: tuple[str, ...]) -> list[CopickSource]:
    return [CopickSource.parse(text) for text in configs]


def _paths(text: str, option: str) -> list[Path]:
    paths = [Path(part) for part in split_csv(text) or []]
    if not paths:
        raise click.BadParameter("give at least one file", param_hint=option)
    return paths


def _name_values(what: str) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A click callback: ``name=x,name=y`` → {name: x, name: y} (floats), ``what`` naming x."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        values = {}
        for item in split_csv(value) or []:
            name, sep, number = item.partition("=")
            try:
                values[name.strip()] = float(number)
            except ValueError:
                sep = ""
            if not sep or not name.strip():
                raise click.BadParameter(f"expected name={what} pairs, got {item!r}")
        return values

    return parse


@click.command()
@config_option
@click.option("--model-config", required=True, help="model_config.yaml(s), or an ensemble folder.")
@click.option("--model-weights", help="Weight file(s), one per config (none for a folder).")
@click.option("--voxel-size", type=float, help="Voxel size (Å).  [default: the model's]")
@click.option("--tomo-alg", help="Tomogram algorithm.  [default: the model's first]")
@click.option("--run-ids", help="Runs to segment, comma-separated.  [default: all]")
@click.option(
    "--seg-info",
    help="Segmentation to write: name or name,user_id,session_id.  [default: predict,octopi,1]",
)
@click.option(
    "--window-size", type=int, help="Sliding-window edge (voxels).  [default: the model's dim_in]"
)
@click.option(
    "--overlap", type=float, help="Window overlap." + default_help(InferenceConfig, "overlap")
)
@click.option(
    "--window-batch-size",
    type=int,
    help="Windows per forward pass." + default_help(InferenceConfig, "window_batch_size"),
)
@click.option(
    "--tta",
    type=click.Choice(["none", "flips", "rot90"]),
    help="Test-time augmentation in the XY plane." + default_help(InferenceConfig, "tta"),
)
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "fp16", "off"]),
    help="Mixed precision." + default_help(InferenceConfig, "amp"),
)
@click.option(
    "--probabilities/--no-probabilities",
    default=None,
    help="Also write the class probabilities (float16) for localize's thresholds."
    + default_help(InferenceConfig, "save_probabilities"),
)
@click.option("--device", help="torch device, e.g. cpu or cuda:1.  [default: cuda if available]")
@click.option(
    "--output", type=click.Path(path_type=Path), help="Folder for the resolved config and timings."
)
@friendly_errors
def segment(
    configs,
    model_config,
    model_weights,
    voxel_size,
    tomo_alg,
    run_ids,
    seg_info,
    window_size,
    overlap,
    window_batch_size,
    tta,
    amp,
    probabilities,
    device,
    output,
):
    """Segment tomograms with a trained model (or an ensemble) into copick label volumes, with
    the class probabilities beside them (for localize's thresholds)."""
    from octopi.config import DEFAULT_SEGMENTATION_TARGET
    from octopi.inference.stages import segment_runs

    settings = build(
        InferenceConfig,
        window_size=window_size,
        overlap=overlap,
        window_batch_size=window_batch_size,
        tta=tta,
        amp=amp,
        save_probabilities=probabilities,
    )
    sources = _sources(configs)
    seg_target = TargetSpec.parse(seg_info) if seg_info else DEFAULT_SEGMENTATION_TARGET
    model_configs = _paths(model_config, "--model-config")
    weights = _paths(model_weights, "--model-weights") if model_weights else []
    summary = segment_runs(
        sources,
        split_csv(run_ids),
        model_configs,
        weights,
        seg_target=seg_target,
        settings=settings,
        voxel_size_angstrom=voxel_size,
        tomo_algorithm=tomo_alg,
        device=device,
        show_progress=True,
    )
    _report_segment(
        output, summary, settings, configs=sources, model_configs=model_configs,
        model_weights=weights, seg_target=seg_target,
    )  # fmt: skip


def _report_segment(
    output: Path | None, summary: SegmentSummary, settings: InferenceConfig, **parts: Any
) -> None:
    """Print what segment did; with ``output``, record its resolved config (``parts`` and the
    settings it resolved) and timings."""
    from octopi.io_utils import atomic_write_json

    if output is not None:
        write_resolved_config(
            output,
            "segment",
            **parts,
            run_ids=list(summary.runs),
            voxel_size_angstrom=summary.voxel_size_angstrom,
            tomo_algorithm=summary.tomo_algorithm,
            device=summary.device,
            inference=settings.model_copy(update={"window_size": summary.window_size}),
        )
        atomic_write_json(Path(output) / "segment.json", summary.to_dict())
    for key, run in summary.runs.items():
        click.echo(f"{key}: {tuple(run.shape_zyx)} in {run.seconds:.1f} s")
    click.echo(
        f"wrote segmentation {summary.seg_target}"
        f"{' with class probabilities' * summary.probabilities} "
        f"for {len(summary.runs)} runs ({summary.tomo_algorithm} at "
        f"{summary.voxel_size_angstrom:g} Å, {summary.device})"
    )


@click.command()
@config_option
@click.option(
    "--seg-info",
    help="Segmentation to read: name or name,user_id,session_id.  [default: predict,octopi,1]",
)
@click.option("--pick-info", help="Picks to write: user_id,session_id.  [default: octopi,1]")
@click.option(
    "--voxel-size", type=float, help="Voxel size (Å).  [default: that of the segmentation]"
)
@click.option("--run-ids", help="Runs to process, comma-separated.  [default: all]")
@click.option(
    "--method",
    type=click.Choice(["peaks", "components"]),
    help="Split touching particles at distance peaks, or one pick per component."
    + default_help(LocalizeConfig, "method"),
)
@click.option(
    "--source",
    type=click.Choice(["auto", "probabilities", "labels"]),
    help="Localize the class probabilities segment wrote, or the argmax labels; auto: "
    "probabilities where written." + default_help(LocalizeConfig, "source"),
)
@click.option(
    "--threshold",
    type=float,
    help="Probability a voxel needs to count for a class (probabilities only)."
    + default_help(LocalizeConfig, "score_threshold"),
)
@click.option(
    "--class-thresholds",
    callback=_name_values("threshold"),
    help="name=threshold,… per class, overriding --threshold (probabilities only)."
    + default_help(LocalizeConfig, "per_class_threshold"),
)
@click.option(
    "--min-size-fraction",
    type=float,
    help="Smallest region kept, × particle sphere volume."
    + default_help(LocalizeConfig, "min_size_fraction"),
)
@click.option(
    "--min-separation-fraction",
    type=float,
    help="Closest two picks of a class, × particle radius."
    + default_help(LocalizeConfig, "min_separation_fraction"),
)
@click.option("--objects", help="Objects to localize, comma-separated.  [default: every particle]")
@click.option(
    "--output", type=click.Path(path_type=Path), help="Folder for the resolved config and counts."
)
@friendly_errors
def localize(
    configs,
    seg_info,
    pick_info,
    voxel_size,
    run_ids,
    method,
    source,
    threshold,
    class_thresholds,
    min_size_fraction,
    min_separation_fraction,
    objects,
    output,
):
    """Turn segmentations into particle picks (one pick set per object) in copick: voxels of
    a class are those whose class probability reaches its threshold, or (labels) its label."""
    from octopi.config import DEFAULT_PREDICTED_PICKS, DEFAULT_SEGMENTATION_TARGET
    from octopi.inference.localize_stages import plan_localize, run_localize
    from octopi.io_utils import atomic_write_json

    settings = build(
        LocalizeConfig,
        method=method,
        source=_source_for(source, threshold is not None or class_thresholds is not None),
        score_threshold=threshold,
        per_class_threshold=class_thresholds,
        min_size_fraction=min_size_fraction,
        min_separation_fraction=min_separation_fraction,
    )
    sources = _sources(configs)
    seg_target = TargetSpec.parse(seg_info) if seg_info else DEFAULT_SEGMENTATION_TARGET
    picks_out = PickSpec.parse(pick_info) if pick_info else DEFAULT_PREDICTED_PICKS
    plan = plan_localize(
        sources,
        split_csv(run_ids),
        seg_target=seg_target,
        settings=settings,
        voxel_size_angstrom=voxel_size,
        objects=split_csv(objects),
    )
    counts = run_localize(plan, picks_out, show_progress=True)
    if output is not None:
        write_resolved_config(
            output,
            "localize",
            configs=sources,
            run_ids=list(counts),
            seg_target=seg_target,
            picks=picks_out,
            voxel_size_angstrom=voxel_size,
            objects=split_csv(objects),
            localize=settings,
            localized_from=plan.source,
        )
        atomic_write_json(Path(output) / "picks.json", counts)
    _print_picks(counts, picks_out, plan.describe())


def _print_picks(counts: dict[str, dict[str, int]], picks_out: PickSpec, source: str) -> None:
    """Picks per run and object, then the total and what they were localized from."""
    for key, per_object in counts.items():
        click.echo(f"{key}: " + ", ".join(f"{name} {n}" for name, n in per_object.items()))
    total = sum(sum(per_object.values()) for per_object in counts.values())
    click.echo(
        f"wrote {total} picks as {picks_out.user_id},{picks_out.session_id} for {len(counts)} runs"
        f", from {source}"
    )


def _source_for(source: str | None, thresholds_given: bool) -> str | None:
    """--source; ``probabilities`` when a threshold is given (it must act), refused with labels."""
    if not thresholds_given:
        return source
    if source == "labels":
        raise click.BadParameter(
            "thresholds act on class probabilities; with --source labels they would do "
            "nothing. Drop --source labels or the thresholds.",
            param_hint="--threshold/--class-thresholds",
        )
    return "probabilities"


@click.command()
@config_option
@click.option("--pred-info", help="Predicted picks: user_id,session_id.  [default: octopi,1]")
@click.option(
    "--gt-info",
    help="Ground-truth picks: user_id,session_id."
    + f"  [default: {PickSpec().user_id},{PickSpec().session_id}]",
)
@click.option(
    "--run-ids", help="Runs to score, comma-separated.  [default: runs with ground truth]"
)
@click.option(
    "--distance-fraction",
    type=float,
    help="A hit lies within this × particle radius."
    + default_help(EvaluationConfig, "distance_fraction"),
)
@click.option("--beta", type=float, help="F-beta's beta." + default_help(EvaluationConfig, "beta"))
@click.option(
    "--class-weights",
    callback=_name_values("weight"),
    help="name=weight,… (classes not listed weigh 1)."
    + default_help(EvaluationConfig, "class_weights"),
)
@click.option("--objects", help="Objects to score, comma-separated.  [default: every particle]")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="metrics.json to write (the resolved config goes beside it).",
)
@friendly_errors
def evaluate(
    configs, pred_info, gt_info, run_ids, distance_fraction, beta, class_weights, objects, output
):
    """Score predicted picks against ground-truth picks (CZII particle-level F-beta)."""
    from octopi.config import DEFAULT_PREDICTED_PICKS
    from octopi.evaluation.stages import evaluate_runs
    from octopi.io_utils import atomic_write_json

    settings = build(
        EvaluationConfig,
        distance_fraction=distance_fraction,
        beta=beta,
        class_weights=class_weights,
    )
    sources = _sources(configs)
    predicted = PickSpec.parse(pred_info) if pred_info else DEFAULT_PREDICTED_PICKS
    ground_truth = PickSpec.parse(gt_info) if gt_info else PickSpec()
    report = evaluate_runs(
        sources,
        split_csv(run_ids),
        predicted=predicted,
        ground_truth=ground_truth,
        settings=settings,
        objects=split_csv(objects),
    )
    click.echo(report.format_table())
    if output is not None:
        output = Path(output)
        atomic_write_json(output, report.to_dict())
        write_resolved_config(
            output.parent,
            "evaluate",
            configs=sources,
            run_ids=list(report.per_run),
            predicted=predicted,
            ground_truth=ground_truth,
            objects=split_csv(objects),
            evaluation=settings,
        )
        click.echo(f"metrics → {output}")
