"""`octopi calibrate`: per-class thresholds and minimum sizes of a model, chosen for F-beta on
runs with ground-truth picks, written into its model_config.yaml."""

from __future__ import annotations

from pathlib import Path

import click

from octopi.cli.options import (
    build,
    config_option,
    csv_numbers,
    default_help,
    friendly_errors,
    split_csv,
)
from octopi.config import (
    CopickSource,
    EvaluationConfig,
    InferenceConfig,
    LocalizeConfig,
    PickSpec,
)


@click.command()
@config_option
@click.option(
    "--model-config",
    required=True,
    type=click.Path(path_type=Path),
    help="The model's model_config.yaml, or an ensemble folder (its calibration is replaced).",
)
@click.option(
    "--model-weights",
    type=click.Path(path_type=Path),
    help="The model's weights (best_model_weights.pth; none for an ensemble folder).",
)
@click.option("--voxel-size", type=float, help="Voxel size (Å).  [default: the model's]")
@click.option("--tomo-alg", help="Tomogram algorithm.  [default: the model's first]")
@click.option(
    "--run-ids",
    help="Runs to calibrate on, comma-separated.  [default: every run with ground-truth picks]",
)
@click.option(
    "--gt-info",
    help="Ground-truth picks: user_id,session_id."
    + f"  [default: {PickSpec().user_id},{PickSpec().session_id}]",
)
@click.option("--beta", type=float, help="F-beta's beta." + default_help(EvaluationConfig, "beta"))
@click.option(
    "--thresholds",
    callback=csv_numbers(float),
    help="Probability thresholds to choose from, comma-separated."
    + default_help(LocalizeConfig, "calibration_thresholds"),
)
@click.option(
    "--min-size-fractions",
    callback=csv_numbers(float),
    help="Minimum region sizes (× sphere volume) to choose from, comma-separated."
    + default_help(LocalizeConfig, "calibration_min_size_fractions"),
)
@click.option("--device", help="torch device, e.g. cpu or cuda:1.  [default: cuda if available]")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="Write the calibrated model_config.yaml here instead of replacing --model-config.",
)
@friendly_errors
def calibrate(
    configs, model_config, model_weights, voxel_size, tomo_alg, run_ids, gt_info, beta,
    thresholds, min_size_fractions, device, output,
):  # fmt: skip
    """Calibrate a trained model's picking on runs with ground-truth picks (e.g. a few
    hand-picked runs of a new data set): for each class, the probability threshold and the
    smallest kept region that maximise that class's F-beta, written into model_config.yaml;
    `octopi segment` stores them with the probabilities and `octopi localize` uses them."""
    from octopi.evaluation.calibrate_runs import calibrate_model_on_runs
    from octopi.inference.ensemble_folder import EnsembleCard, ensemble_file

    evaluation = build(EvaluationConfig, beta=beta)
    settings = build(
        LocalizeConfig,
        calibration_thresholds=thresholds,
        calibration_min_size_fractions=min_size_fractions,
    )
    card, calibration = calibrate_model_on_runs(
        [CopickSource.parse(text) for text in configs],
        split_csv(run_ids),
        [model_config],
        [model_weights] if model_weights else [],
        ground_truth=PickSpec.parse(gt_info) if gt_info else PickSpec(),
        localize_settings=settings,
        evaluation=evaluation,
        inference=InferenceConfig(),
        device=device,
        voxel_size_angstrom=voxel_size,
        tomo_algorithm=tomo_alg,
    )
    ensemble = ensemble_file(model_config)
    if ensemble is not None:  # the ensemble's own card: its members' cards stay as they are
        target = Path(output or ensemble)
        EnsembleCard.load(ensemble).model_copy(update={"calibration": calibration}).save(target)
    else:
        target = Path(output or model_config)
        card.model_copy(update={"calibration": calibration}).save(target)
    click.echo(format_calibration(calibration))
    click.echo(f"calibration → {target}")


def format_calibration(calibration) -> str:
    """A table: per class the chosen threshold (or argmax) and minimum size, F-beta before
    (argmax labels) and after, precision and recall; then the class-weighted F-beta before
    and after."""
    beta = f"{calibration.beta:g}"
    lines = [
        f"{'class':<22} {'threshold':>9} {'min size':>8} {'F' + beta + ' labels':>10} "
        f"{'F' + beta:>6} {'precision':>9} {'recall':>6}"
    ]
    for name, c in calibration.classes.items():
        threshold = "argmax" if c.threshold is None else f"{c.threshold:.2f}"
        lines.append(
            f"{name:<22} {threshold:>9} {c.min_size_fraction:>8.2f} {c.fbeta_labels:>10.3f} "
            f"{c.fbeta:>6.3f} {c.precision:>9.3f} {c.recall:>6.3f}"
        )
    weighted = calibration.weighted_fbeta
    lines.append(
        f"weighted F{beta} on {len(calibration.run_ids)} run(s): labels "
        f"{weighted.get('labels', 0.0):.3f} → calibrated {weighted.get('calibrated', 0.0):.3f}"
    )
    return "\n".join(lines)
