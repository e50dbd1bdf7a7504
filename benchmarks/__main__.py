"""``python -m benchmarks run --suite quick|full``: head-to-head against octopi 1.7.0.

Run from the repository root with the interpreter of our venv (``.venv/bin/python``). The
published tool is installed once into ``benchmarks/.envs/octopi-1.7.0``. Results go to
``benchmarks/results/<suite>-<timestamp>.json`` and ``latest-<suite>.json``; the table to
``docs/benchmarks.md`` (between the suite's markers) and the plot to
``docs/img/f4_vs_training_time.png`` (``-full`` suffix for the full suite).

Other commands: ``install`` (only create the published venv), ``report`` (regenerate the docs
from a results file without measuring anything), ``dry-run`` (planning time of 200- and
1000-trial studies, :mod:`benchmarks.planning`; ``--report-only`` regenerates its table),
``trial-overhead`` (what a trial costs besides training, :mod:`benchmarks.trial_overhead`),
``inference-levers`` (seconds and F4 per inference setting, :mod:`benchmarks.inference_levers`),
``recipe`` (validation F4 of training recipes at 20 epochs, :mod:`benchmarks.recipe`),
``calibration`` (seconds of F-beta calibration, one process and workers,
:mod:`benchmarks.calibration`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import (
    calibration,
    inference_levers,
    measure,
    planning,
    published,
    recipe,
    report,
    trial_overhead,
)
from benchmarks.suites import SUITES, Suite

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
DOC = REPO / "docs" / "benchmarks.md"


def plot_path(suite: str) -> Path:
    name = "f4_vs_training_time.png" if suite == "quick" else f"f4_vs_training_time-{suite}.png"
    return REPO / "docs" / "img" / name


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def save_results(results: dict, stamp: str) -> Path:
    suite = results["suite"]
    path = RESULTS / f"{suite}-{stamp}.json"
    _write_json(path, results)
    _write_json(RESULTS / f"latest-{suite}.json", results)
    return path


def render(results: dict, doc: Path = DOC) -> None:
    """Plot, then regenerate the suite's block of ``doc``."""
    suite = results["suite"]
    plot = plot_path(suite)
    has_plot = report.plot_f4_vs_time(results, plot)
    relative = os.path.relpath(plot, doc.parent) if has_plot else None
    report.update_doc(doc, suite, report.markdown(results, plot=relative))


def measured_or_reported(
    name: str, args: argparse.Namespace, measure: Callable[[], dict], markdown: Callable
) -> int:
    """A stand-alone benchmark ``name`` (dry-run, trial-overhead, inference-levers): run
    ``measure`` and save its results (or, with ``--report-only``, read the latest), then
    regenerate its docs block (unless ``--no-docs``) and print the table."""
    latest = RESULTS / f"latest-{name}.json"
    if args.report_only:
        results = json.loads(latest.read_text())
    else:
        results = measure()
        path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        _write_json(path, results)
        _write_json(latest, results)
        print(f"results: {path}")
    table = markdown(results)
    if not args.no_docs:
        report.update_doc(DOC, name, table)
        print(f"table: {DOC}")
    print(table)
    return 0


def dry_run(args: argparse.Namespace) -> int:
    trials = tuple(int(n) for n in args.trials.split(",") if n)
    return measured_or_reported(
        "dry-run",
        args,
        lambda: planning.measure(args.work, trials, repeats=args.repeats),
        planning.markdown,
    )


def overhead(args: argparse.Namespace) -> int:
    return measured_or_reported(
        "trial-overhead",
        args,
        lambda: trial_overhead.measure(args.work, trials=args.trials),
        trial_overhead.markdown,
    )


def levers(args: argparse.Namespace) -> int:
    latest = RESULTS / "latest-inference-levers.json"
    earlier = json.loads(latest.read_text()) if latest.exists() else None
    return measured_or_reported(
        "inference-levers",
        args,
        lambda: inference_levers.measure(args, earlier),
        inference_levers.markdown,
    )


def recipes(args: argparse.Namespace) -> int:
    latest = RESULTS / "latest-recipe.json"
    earlier = json.loads(latest.read_text()) if latest.exists() else None
    return measured_or_reported(
        "recipe", args, lambda: recipe.measure(args, earlier), recipe.markdown
    )


def with_preset(suite: Suite, preset: str) -> Suite:
    """``suite`` on data of another synthesize preset, named ``<suite>-<preset>``."""
    if preset == "default":
        return suite
    data = dataclasses.replace(suite.data, preset=preset)
    return dataclasses.replace(suite, name=f"{suite.name}-{preset}", data=data)


def _parser() -> argparse.ArgumentParser:
    """The command line: run, report, install, dry-run."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure both tools and write results and docs")
    run.add_argument("--suite", choices=sorted(SUITES), default="quick")
    run.add_argument(
        "--phases",
        default=",".join(measure.PHASES),
        help=f"comma-separated subset of {','.join(measure.PHASES)} (default: all)",
    )
    run.add_argument("--work", type=Path, help="work folder (default benchmarks/work/SUITE)")
    run.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    run.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="time each training-throughput run this many times, interleaved; keep the fastest "
        "(use 2-3 on a machine that other work shares)",
    )
    run.add_argument(
        "--ours-only",
        action="store_true",
        help="measure our tool alone (no octopi 1.7.0 environment needed; its columns stay empty)",
    )
    run.add_argument(
        "--time-limit",
        type=float,
        help="seconds for the whole run: a step still running then is cut, later phases skipped",
    )
    run.add_argument(
        "--preset",
        choices=["default", "hard"],
        default="default",
        help="octopi synthesize preset of the benchmark data; hard runs as suite SUITE-hard "
        "(own work folder, results and docs block)",
    )
    rep = sub.add_parser("report", help="regenerate docs from a results file")
    rep.add_argument("--suite", choices=sorted(SUITES), default="quick")
    rep.add_argument("--results", type=Path, help="default: benchmarks/results/latest-SUITE.json")
    sub.add_parser("install", help="create the octopi 1.7.0 venv (cached)")
    dry = sub.add_parser("dry-run", help="time the planning of 200- and 1000-trial studies")
    dry.add_argument("--trials", default="200,1000", help="comma-separated trial counts")
    dry.add_argument("--repeats", type=int, default=5, help="runs of each command (fastest kept)")
    dry.add_argument("--work", type=Path, default=BENCH_DIR / "work" / "dry-run")
    dry.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    dry.add_argument(
        "--report-only", action="store_true", help="regenerate the table from the latest results"
    )
    over = sub.add_parser("trial-overhead", help="time what a trial costs besides training")
    over.add_argument("--trials", type=int, default=3, help="trials of the study (one at a time)")
    over.add_argument("--work", type=Path, default=BENCH_DIR / "work" / "trial-overhead")
    over.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    over.add_argument(
        "--report-only", action="store_true", help="regenerate the table from the latest results"
    )
    inference_levers.add_parser(sub)
    recipe.add_parser(sub)
    calibration.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    if args.command == "dry-run":
        return dry_run(args)
    if args.command == "trial-overhead":
        return overhead(args)
    if args.command == "inference-levers":
        return levers(args)
    if args.command == "recipe":
        return recipes(args)
    if args.command == "calibration":
        return calibration.run(args)

    if args.command == "install":
        print(json.dumps(published.ensure_env(quiet=False)))
        return 0
    if args.command == "report":
        path = args.results or RESULTS / f"latest-{args.suite}.json"
        render(json.loads(path.read_text()))
        print(f"regenerated {DOC} from {path}")
        return 0

    return _run(parser, args)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``run``: measure the suite, save the results, regenerate the docs block."""
    phases = tuple(p for p in args.phases.split(",") if p)
    unknown = sorted(set(phases) - set(measure.PHASES))
    if unknown:
        parser.error(f"unknown phases {unknown}; choose from {', '.join(measure.PHASES)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    suite = with_preset(SUITES[args.suite], args.preset)
    if args.ours_only:
        suite = dataclasses.replace(suite, tools=("ours",))
    results = measure.run_suite(
        suite,
        phases=phases,
        work=args.work,
        on_progress=lambda partial: save_results(partial, stamp),
        repeats=args.repeats,
        time_limit_seconds=args.time_limit,
    )
    path = save_results(results, stamp)
    print(f"results: {path}")
    if not args.no_docs:
        render(results)
        print(f"table: {DOC}")
    print(report.markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
