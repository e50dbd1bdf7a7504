"""``python -m benchmarks calibration``: what F-beta calibration costs, on one core and on several.

Every validation of a trial calibrates the network on the validation runs (per class, a grid
of thresholds × minimum sizes, each pass labelling, splitting and scoring the class's blobs),
and ``octopi calibrate`` does the same once. This times it on the probabilities of one model
(a default UNet trained a few epochs, or ``--model FOLDER``; the same model and test tomograms
as ``inference-levers``) for each tomogram size, with each worker count of ``--workers``
(``calibrate_with_report``'s ``workers``), and checks that every worker count chooses exactly the
same settings with the same counts. The tasks' own seconds (one process) give the time the grid
would take on more cores than this machine has: each task handed to the first free core in
order, as the worker pool does.

Results: ``benchmarks/results/calibration-<timestamp>.json`` and ``latest-calibration.json``;
the table goes into ``docs/benchmarks.md`` between the ``calibration`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks import data, inference_levers, ours, report

RESULTS = Path(__file__).resolve().parent / "results"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
PROJECTED_CORES = (4, 8, 16, 32)


def projected_seconds(task_seconds: list[float], cores: int) -> float:
    """Wall seconds of tasks handed out in order, each to the first free of ``cores``."""
    free_at = [0.0] * cores
    for seconds in task_seconds:
        first = free_at.index(min(free_at))
        free_at[first] += seconds
    return max(free_at)


def _probabilities(model_dir: Path, tomogram: inference_levers.Tomogram):
    """(C, Z, Y, X) float16 probabilities of the model on the tomogram, as calibrate makes
    them, the ground truth (class → (M, 3) Å x, y, z), the classes and the card."""
    from octopi.config import CopickSource, InferenceConfig, PickSpec
    from octopi.data.copick_io import CopickProjects
    from octopi.data.normalise import normalise_tomogram
    from octopi.inference.ensemble import load_ensemble
    from octopi.inference.localize import LocalizeClass
    from octopi.inference.segment import ProbabilityVolume, segment_volume

    card, models = load_ensemble(
        [model_dir / "model_config.yaml"], [ours.weights_file(model_dir)], "cpu"
    )
    projects = CopickProjects([CopickSource(path=tomogram.config)])
    ref = projects.resolve(tomogram.run)
    volume = normalise_tomogram(
        projects.load_tomogram(ref, data.VOXEL_SIZE, data.TOMO_ALG), card.normalisation
    )
    sink = ProbabilityVolume(volume.shape)
    segment_volume(models, volume, card.dim_in, InferenceConfig(), "cpu", probability_sink=sink)
    truth = {c.name: projects.load_picks_angstrom(ref, c.name, PickSpec()) for c in card.classes}
    classes = [LocalizeClass(c.name, c.label, c.radius_angstrom) for c in card.classes]
    return sink.array, truth, classes, card


def measure_size(model_dir: Path, tomogram, workers: list[int]) -> dict:
    """One tomogram: seconds per worker count, the task seconds of one process, identity."""
    import octopi.evaluation.calibration as calibration
    from octopi.config import EvaluationConfig, LocalizeConfig

    probabilities, truth, classes, card = _probabilities(model_dir, tomogram)
    run = {tomogram.run: probabilities}
    task_seconds: list[float] = []
    timed_task = calibration._task_counts

    def timing(grid, task):  # runs in this process only with one worker
        start = time.perf_counter()
        result = timed_task(grid, task)
        task_seconds.append(time.perf_counter() - start)
        return result

    row: dict = {"size": tomogram.size, "shape_zyx": list(tomogram.shape_zyx), "passes": []}
    chosen = None
    for count in workers:
        calibration._task_counts = timing if count == 1 else timed_task
        start = time.perf_counter()
        try:
            result, report_ = calibration.calibrate_with_report(
                run, {tomogram.run: truth}, classes, card.voxel_size_angstrom, LocalizeConfig(),
                EvaluationConfig(), workers=count,
            )  # fmt: skip
        finally:
            calibration._task_counts = timed_task
        seconds = time.perf_counter() - start
        counts = {n: vars(c) for n, c in report_.per_class.items()}
        same = chosen is None or (result, counts) == chosen
        chosen = chosen or (result, counts)
        row["passes"].append({"workers": count, "seconds": round(seconds, 2), "same": same,
                              "load_1min": round(os.getloadavg()[0], 2)})  # fmt: skip
        print(f"{tomogram.size} workers {count}: {seconds:.1f} s, same result: {same}", flush=True)
    row["weighted_fbeta"] = chosen[0].weighted_fbeta if chosen else None
    if task_seconds:
        row["tasks"] = len(task_seconds)
        row["longest_task_seconds"] = round(max(task_seconds), 2)
        row["projected_seconds"] = {
            str(n): round(projected_seconds(task_seconds, n), 1) for n in PROJECTED_CORES
        }
    return row


def measure(args: argparse.Namespace) -> dict:
    sizes = [s for s in args.sizes.split(",") if s]
    workers = [int(n) for n in args.workers.split(",")]
    model_dir, tomograms = inference_levers.prepare(args.work, args.model, sizes, args.epochs)
    results = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "cores": os.cpu_count(),
        "model": str(model_dir), "workers": workers, "rows": [],
    }  # fmt: skip
    for tomogram in tomograms:
        results["rows"].append(measure_size(model_dir, tomogram, workers))
    return results


def markdown(results: dict) -> str:
    lines = [
        f"Generated by `python -m benchmarks calibration` ({results['timestamp']}, "
        f"{results['cores']} cores): `calibrate_with_report` with the default grid (11 "
        "thresholds × 5 minimum sizes, and the argmax) on one test tomogram's probabilities of "
        f"`{Path(results['model']).name}`, one process and forked workers; projected: the "
        "tasks' one-process seconds handed out in order to that many cores.",
        "",
        "| size | workers: seconds | same choice | tasks (longest s) | projected 4 / 8 / 16 / "
        "32 cores | weighted F4 labels → calibrated |",
        "| --- | --- | --- | ---: | --- | --- |",
    ]
    for row in results["rows"]:
        zyx = "×".join(map(str, row["shape_zyx"]))
        passes = ", ".join(f"{p['workers']}: {p['seconds']:.1f}" for p in row["passes"])
        same = "yes" if all(p["same"] for p in row["passes"]) else "**no**"
        projected = " / ".join(
            f"{row.get('projected_seconds', {}).get(str(n), float('nan')):.1f}"
            for n in PROJECTED_CORES
        )
        fbeta = row.get("weighted_fbeta") or {}
        score = f"{fbeta.get('labels', float('nan')):.3f} → {fbeta.get('calibrated', 0):.3f}"
        lines.append(
            f"| {row['size']} ({zyx}) | {passes} | {same} | {row.get('tasks', '—')} "
            f"({row.get('longest_task_seconds', '—')}) | {projected} | {score} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    latest = RESULTS / "latest-calibration.json"
    if args.report_only:
        results = json.loads(latest.read_text())
    else:
        results = measure(args)
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = results["timestamp"].replace(":", "")
        for path in (RESULTS / f"calibration-{stamp}.json", latest):
            path.write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_docs:
        report.update_doc(DOC, "calibration", markdown(results))
    print(markdown(results))
    return 0


def add_parser(sub) -> None:
    """The ``calibration`` subcommand's options."""
    bench = Path(__file__).resolve().parent
    cmd = sub.add_parser("calibration", help="time F-beta calibration, one process and workers")
    cmd.add_argument("--model", type=Path, help="trained model folder (default: train one)")
    cmd.add_argument("--epochs", type=int, default=40, help="epochs of the model trained here")
    cmd.add_argument("--sizes", default="quick,czii", help="subset of quick,issue,czii")
    cmd.add_argument("--workers", default="1,2", help="worker counts to time, comma-separated")
    cmd.add_argument("--work", type=Path, default=bench / "work" / "inference-levers")
    cmd.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    cmd.add_argument(
        "--report-only", action="store_true", help="regenerate the table from the latest results"
    )
