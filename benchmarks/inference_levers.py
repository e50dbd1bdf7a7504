"""``python -m benchmarks inference-levers``: what each inference setting buys, and costs in F4.

One trained model (a default UNet trained a few epochs on a synthetic project, or
``--model FOLDER``) is loaded once; one test tomogram per size (``quick`` 64×160×160, ``issue``
96×192×192, ``czii`` 184×630×630, each a 1-run ``octopi synthesize`` project with ground-truth
picks) is segmented with a ladder of :class:`~octopi.config.InferenceConfig` settings. Each row
goes through the code path of ``octopi segment`` for one run (load the tomogram, normalise,
sliding-window segmentation, write labels and, with ``save_probabilities``, probabilities) and
is timed by it (seconds per tomogram, model loading excluded). The network's forward passes are
timed separately, so the rest (windows cut, blended, flushed and written) shows too.

Rows: the baseline (fp32, overlap 0.25, one window per pass, the training crop as window, no
TTA, probabilities saved); each lever alone on the baseline; the levers added one by one; and
TTA on today's defaults. Repeats are interleaved (round by round, every row once per round)
after an untimed warm-up round; min and median are kept with the 1-minute load average of each
pass. The last pass of a row is localized and scored as ``octopi localize`` + ``octopi
evaluate`` do (CZII F4), so a lever that loses pick quality shows it. The ``czii`` size runs only
the rows in ``CZII_ROWS``, once each, without warm-up.

Results: ``benchmarks/results/inference-levers-<timestamp>.json`` and
``latest-inference-levers.json``; the table goes into ``docs/benchmarks.md`` between the
``inference-levers`` markers.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import data, logparse, ours, published
from benchmarks.procs import run_measured, tail

SIZES: dict[str, tuple[int, int, int]] = {
    "quick": (64, 160, 160),
    "issue": (96, 192, 192),
    "czii": (184, 630, 630),
}
# octopi 1.7.0 with its defaults, seconds per tomogram on this machine (docs/benchmarks.md,
# suite quick-hard; issue 14 for 96×192×192), where a run has no figure of its own
# (``--published-model`` times it on the same tomogram).
REFERENCE_SECONDS = {"quick": 6.0, "issue": 23.7}
SPEEDUP_GOAL = 20.0
# F4 within this of today's defaults counts as equal (picks of one synthetic tomogram).
F4_TOLERANCE = 0.01
TRAIN_SPEC = data.DataSpec(
    train_runs=2, train_shape=(96, 160, 160), test_runs=1, test_shape=(64, 160, 160)
)
TEST_SEEDS = {"issue": 21, "czii": 31}
SEG_TARGET = ("levers", "octopi", "1")


@dataclass(frozen=True)
class Lever:
    """One row: ``name``, its ``group`` (baseline, alone, cumulative, on defaults) and the
    :class:`~octopi.config.InferenceConfig` fields it sets."""

    name: str
    group: str
    settings: dict = field(default_factory=dict)


BASELINE = {
    "amp": "off",
    "overlap": 0.25,
    "window_batch_size": 1,
    "window_size": None,
    "tta": "none",
    "save_probabilities": True,
}
DEFAULTS = BASELINE | {"amp": "bf16", "window_batch_size": 4}  # today's InferenceConfig (CPU)
_ALONE = [
    ("bf16 autocast", {"amp": "bf16"}),
    ("overlap 0.5", {"overlap": 0.5}),
    ("overlap 0.125", {"overlap": 0.125}),
    ("overlap 0", {"overlap": 0.0}),
    ("batch 4", {"window_batch_size": 4}),
    ("batch 8", {"window_batch_size": 8}),
    ("window 96", {"window_size": 96}),
    ("window 128", {"window_size": 128}),
    ("probabilities not saved (picks from labels)", {"save_probabilities": False}),
]
_CUMULATIVE = [
    ("+ bf16", {"amp": "bf16"}),
    ("+ batch 4 (= today's defaults)", {"window_batch_size": 4}),
    ("+ batch 8", {"window_batch_size": 8}),
    ("+ overlap 0.125", {"overlap": 0.125}),
    ("+ window 96", {"window_size": 96}),
    ("+ overlap 0", {"overlap": 0.0}),
    ("+ probabilities not saved", {"save_probabilities": False}),
]
_ON_DEFAULTS = [
    ("defaults + TTA flips", {"tta": "flips"}),
    ("defaults + TTA rot90", {"tta": "rot90"}),
]
CZII_ROWS = ("+ batch 4 (= today's defaults)", "+ window 96", "+ overlap 0")


def ladder() -> list[Lever]:
    """The rows, in table order: baseline, alone, cumulative, on defaults."""
    rows = [Lever("baseline (fp32, overlap 0.25, batch 1, crop window, no TTA)", "baseline")]
    rows += [Lever(name, "alone", BASELINE | change) for name, change in _ALONE]
    cumulative = dict(BASELINE)
    for name, change in _CUMULATIVE:
        cumulative = cumulative | change
        rows.append(Lever(name, "cumulative", dict(cumulative)))
    rows += [Lever(name, "on defaults", DEFAULTS | change) for name, change in _ON_DEFAULTS]
    return [Lever(r.name, r.group, r.settings or dict(BASELINE)) for r in rows]


def window_count(shape_zyx: tuple[int, ...], window: int, overlap: float) -> int:
    """Windows of edge ``window`` voxels that segment lays over a (Z, Y, X) volume."""
    from octopi.inference.segment import window_starts

    return math.prod(len(window_starts(max(n, window), window, overlap)) for n in shape_zyx)


# --------------------------------------------------------------------------- data and model


@dataclass(frozen=True)
class Tomogram:
    """One test tomogram: its size name, (Z, Y, X) shape, copick config and run name."""

    size: str
    shape_zyx: tuple[int, int, int]
    config: Path
    run: str


def _check(result, what: str) -> None:
    if not result.ok:
        raise RuntimeError(f"{what} failed; log {result.log}:\n{tail(result.log)}")


def prepare(work: Path, model: Path | None, sizes: list[str], epochs: int) -> tuple[Path, list]:
    """The model folder (trained here unless ``model``) and one test tomogram per size, all
    built once under ``work`` and reused."""
    logs = work / "logs"
    built = data.build(TRAIN_SPEC, work / "data", log_dir=logs, published_targets=False)
    if model is None:
        model = work / "model"
        if not ours.weights_file(model).is_file():
            argv = ours.train(
                built.train_config, model, train_run_ids=built.train_run_ids,
                validate_run_ids=built.validate_run_ids, num_epochs=epochs,
                val_interval=max(1, epochs // 4), batch_size=2, dim_in=64,
            )  # fmt: skip
            _check(run_measured(argv, log_path=logs / "train.log"), "training")
    tomograms = []
    for size in sizes:
        shape = SIZES[size]
        if shape == TRAIN_SPEC.test_shape:
            tomograms.append(Tomogram(size, shape, built.test_config, built.test_run_ids[0]))
            continue
        config = work / f"test-{size}" / "copick.json"
        if not config.is_file():
            argv = ours.synthesize(config.parent, 1, ",".join(map(str, shape)), TEST_SEEDS[size])
            _check(run_measured(argv, log_path=logs / f"synthesize-{size}.log"), "synthesize")
        tomograms.append(Tomogram(size, shape, config, "TS_0"))
    return model, tomograms


# --------------------------------------------------------------------------- measuring


def _timed_network(net):
    """``net`` wrapped so that the seconds spent in its forward passes add up in ``.seconds``."""
    import torch

    class TimedNet(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner, self.seconds = inner, 0.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            start = time.perf_counter()
            out = self.inner(x)
            self.seconds += time.perf_counter() - start
            return out

    return TimedNet(net)


class Runner:
    """The model, loaded once, and the copick targets of one test tomogram."""

    def __init__(self, model_dir: Path, tomogram: Tomogram):
        from octopi.config import CopickSource, TargetSpec
        from octopi.data.copick_io import CopickProjects
        from octopi.inference.ensemble import load_ensemble
        from octopi.inference.stages import _SegmentTarget

        self.card, models = load_ensemble(
            [model_dir / "model_config.yaml"], [ours.weights_file(model_dir)], "cpu"
        )
        self.net = _timed_network(models[0])
        self.tomogram = tomogram
        self.sources = [CopickSource(path=tomogram.config)]
        projects = CopickProjects(self.sources)
        self.ref = projects.resolve(tomogram.run)
        self.target = TargetSpec(name=SEG_TARGET[0], user_id=SEG_TARGET[1], session_id="1")
        self.where = _SegmentTarget(projects, data.VOXEL_SIZE, data.TOMO_ALG, self.target)

    def segment(self, settings: dict) -> dict:
        """One pass of ``octopi segment``'s per-run code: seconds (tool's own timer), network
        seconds and the 1-minute load average after it."""
        from octopi.config import InferenceConfig
        from octopi.inference.stages import _segment_run, _Segmenter

        config = InferenceConfig(**settings)
        window = config.window_size or self.card.dim_in
        segmenter = _Segmenter(self.card, [self.net], window, config, "cpu", False)  # type: ignore[arg-type]
        self.net.seconds = 0.0
        run = _segment_run(segmenter, self.where, self.ref)
        return {
            "seconds": run.seconds,
            "network_seconds": round(self.net.seconds, 3),
            "load_1min": round(os.getloadavg()[0], 2),
        }

    def score(self, session: str) -> dict:
        """Localize the last segmentation and score the picks (``octopi localize`` then
        ``octopi evaluate``, default settings): weighted F4 and the number of picks."""
        from octopi.config import PickSpec
        from octopi.evaluation.stages import evaluate_runs
        from octopi.inference.localize_stages import localize_runs

        picks = PickSpec(user_id="levers", session_id=session)
        counts = localize_runs(self.sources, [self.tomogram.run], self.target, picks)
        report = evaluate_runs(self.sources, [self.tomogram.run], predicted=picks)
        found = sum(n for run in counts.values() for n in run.values())
        return {"f4": round(report.weighted_fbeta, 4), "picks": found}


def measure_size(runner: Runner, levers: list[Lever], repeats: int, warmup: bool) -> list[dict]:
    """Rows for one tomogram: ``repeats`` interleaved rounds after an untimed warm-up round;
    the last round's output of each row is scored."""
    shape = runner.tomogram.shape_zyx
    rows = []
    for lever in levers:
        window = lever.settings.get("window_size") or runner.card.dim_in
        windows = window_count(shape, window, lever.settings["overlap"])
        rows.append({"size": runner.tomogram.size, "shape_zyx": list(shape), "name": lever.name,
                     "group": lever.group, "settings": lever.settings, "windows": windows,
                     "passes": []})  # fmt: skip
    for round_index in range(-1 if warmup else 0, repeats):
        for index, (lever, row) in enumerate(zip(levers, rows, strict=True)):
            result = runner.segment(lever.settings)
            if round_index < 0:
                row["warmup_seconds"] = result["seconds"]
                continue
            row["passes"].append(result)
            if round_index == repeats - 1:
                row |= runner.score(f"{runner.tomogram.size}{index}")
            print(f"{row['size']} {lever.name}: {result}", flush=True)
    for row in rows:
        seconds = [p["seconds"] for p in row["passes"]]
        row["seconds_min"], row["seconds_median"] = min(seconds), statistics.median(seconds)
        row["network_seconds_min"] = min(p["network_seconds"] for p in row["passes"])
    return rows


def published_segment(tomogram: Tomogram, model_dir: Path, logs: Path) -> dict:
    """octopi 1.7.0's ``segment`` with its defaults on ``tomogram`` (``model_dir``: a model it
    trained): seconds per tomogram from its own progress bar, and the process's wall time,
    peak memory and log."""
    seg_uri = "predict:published/levers"
    argv = published.segment(tomogram.config, model_dir, [tomogram.run], seg_uri)
    result = run_measured(argv, log_path=logs / f"published-segment-{tomogram.size}.log")
    _check(result, f"octopi 1.7.0 segment ({tomogram.size})")
    return {
        "seconds": logparse.published_seconds_per_tomogram(result.log, 1),
        "wall_seconds": round(result.wall_seconds, 2),
        "peak_rss_mb": result.peak_rss_mb,
        "model": str(model_dir),
        "log": result.log,
    }


def merged(results: dict, earlier: dict | None) -> dict:
    """``results`` with the sizes it did not measure carried over from ``earlier`` (the
    latest results): their rows and octopi 1.7.0 figures, each row marked with the time of
    the run that measured it. Sizes stay in :data:`SIZES` order."""
    if not earlier:
        return results
    carried = [s for s in earlier.get("sizes", {}) if s not in results["sizes"]]
    for size in carried:
        for row in earlier["rows"]:
            if row["size"] == size:
                results["rows"].append({"measured_at": earlier["timestamp"], **row})
        if size in earlier.get("published", {}):
            results.setdefault("published", {})[size] = earlier["published"][size]
    every = results["sizes"] | {s: earlier["sizes"][s] for s in carried}
    results["sizes"] = {s: every[s] for s in SIZES if s in every}
    return results


def measure(args: argparse.Namespace, earlier: dict | None = None) -> dict:
    """Prepare the data and model, then measure every size (and, with
    ``args.published_model``, octopi 1.7.0's ``segment`` on the same tomograms); sizes not
    measured now are carried over from ``earlier``. The results as JSON types."""
    import torch

    sizes = [s for s in args.sizes.split(",") if s]
    model_dir, tomograms = prepare(args.work, args.model, sizes, args.epochs)
    load_start = os.getloadavg()
    results = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "cores": os.cpu_count(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": str(model_dir), "repeats": args.repeats, "sizes": {s: SIZES[s] for s in sizes},
        "reference_seconds": REFERENCE_SECONDS, "rows": [],
    }  # fmt: skip
    for tomogram in tomograms:
        runner = Runner(model_dir, tomogram)
        levers = ladder()
        results["dim_in"] = runner.card.dim_in
        if tomogram.size == "czii":
            chosen = [lever for lever in levers if lever.name in CZII_ROWS]
            results["rows"] += measure_size(runner, chosen, 1, warmup=False)
        else:
            results["rows"] += measure_size(runner, levers, args.repeats, warmup=True)
        if args.published_model:
            published_figures = results.setdefault("published", {})
            published_figures[tomogram.size] = published_segment(
                tomogram, args.published_model, args.work / "logs"
            )
    results["load_average"] = {"start": load_start, "end": os.getloadavg()}
    return merged(results, earlier)


# --------------------------------------------------------------------------- report


def _settings_text(settings: dict, dim_in: int) -> str:
    """``bf16, overlap 0.25, batch 4, window 64, TTA none, probabilities`` for a row."""
    amp = "fp32" if settings["amp"] == "off" else settings["amp"]
    window = settings.get("window_size") or dim_in
    probabilities = "probabilities" if settings["save_probabilities"] else "labels only"
    return (
        f"{amp}, overlap {settings['overlap']:g}, batch {settings['window_batch_size']}, "
        f"window {window}, TTA {settings['tta']}, {probabilities}"
    )


def best_row(rows: list[dict]) -> dict | None:
    """The fastest row (min seconds) whose F4 is at least today's defaults' F4 minus
    :data:`F4_TOLERANCE`; None without a defaults row."""
    defaults = [r for r in rows if r["settings"] == DEFAULTS and r.get("f4") is not None]
    if not defaults:
        return None
    floor = defaults[0]["f4"] - F4_TOLERANCE
    equal = [r for r in rows if r.get("f4") is not None and r["f4"] >= floor]
    return min(equal, key=lambda r: r["seconds_min"])


def reference_seconds(results: dict, size: str) -> float | None:
    """octopi 1.7.0's seconds per tomogram of ``size``: timed in the run where it was
    (``--published-model``), else :data:`REFERENCE_SECONDS`; None where neither has one."""
    timed = results.get("published", {}).get(size, {}).get("seconds")
    return timed if timed is not None else REFERENCE_SECONDS.get(size)


def _size_table(size: str, rows: list[dict], dim_in: int, reference: float | None) -> list[str]:
    """Markdown lines of one size: one row per lever."""
    defaults = next((r for r in rows if r["settings"] == DEFAULTS), None)
    lines = [
        "| lever | group | settings | windows | s/tomogram min (median) | network s | F4 | "
        "picks | vs defaults | vs octopi 1.7.0 | 1-min load |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        seconds = row["seconds_min"]
        loads = [p["load_1min"] for p in row["passes"]]
        vs_defaults = f"{defaults['seconds_min'] / seconds:.2f}×" if defaults else "—"
        vs_octopi = f"{reference / seconds:.1f}×" if reference else "—"
        f4 = "—" if row.get("f4") is None else f"{row['f4']:.3f}"
        lines.append(
            f"| {row['name']} | {row['group']} | {_settings_text(row['settings'], dim_in)} | "
            f"{row['windows']} | {seconds:.2f} ({row['seconds_median']:.2f}) | "
            f"{row['network_seconds_min']:.2f} | {f4} | {row.get('picks', '—')} | "
            f"{vs_defaults} | {vs_octopi} | {min(loads):.1f}–{max(loads):.1f} |"
        )
    return lines


def _summary(rows: list[dict], reference: float | None) -> str:
    """One sentence: the fastest row at equal F4 and how far it is from the 20× goal."""
    best = best_row(rows)
    if best is None:
        return "No row with today's defaults and an F4: no verdict."
    text = f"Fastest at equal F4 (≥ defaults − {F4_TOLERANCE:g}): **{best['name']}**, "
    text += f"{best['seconds_min']:.2f} s, F4 {best['f4']:.3f}"
    if reference:
        speedup = reference / best["seconds_min"]
        verdict = "met" if speedup >= SPEEDUP_GOAL else "not met"
        text += (
            f": {speedup:.1f}× octopi 1.7.0's {reference:g} s (goal {SPEEDUP_GOAL:g}×, "
            f"{reference / SPEEDUP_GOAL:.2f} s: {verdict})"
        )
    return text + "."


def markdown(results: dict) -> str:
    """The generated block: a header line, then per size a summary and the table."""
    load = results.get("load_average", {})
    start, end = (load.get(k, [float("nan")])[0] for k in ("start", "end"))
    lines = [
        f"Generated by `python -m benchmarks inference-levers` ({results['timestamp']}, "
        f"{results['cores']} cores, torch {results['torch']} with {results['threads']} threads; "
        f"1-min load {start:.1f} at start, {end:.1f} at end). Seconds per tomogram: fastest of "
        f"{results['repeats']} interleaved passes after a warm-up (median in brackets), the "
        "time `octopi segment` reports per run (load, normalise, segment, write); F4: the "
        "last pass localized and scored as `octopi localize` + `octopi evaluate` do.",
    ]
    dim_in = results.get("dim_in", 64)
    for size, shape in results["sizes"].items():
        rows = [r for r in results["rows"] if r["size"] == size]
        if not rows:
            continue
        zyx = "×".join(str(n) for n in shape)
        reference = reference_seconds(results, size)
        lines += ["", f"**{size}** ({zyx}): {_summary(rows, reference)}"]
        if rows[0].get("measured_at"):
            lines.append(f"Rows of the run of {rows[0]['measured_at']}.")
        timed = results.get("published", {}).get(size)
        if timed:
            lines.append(
                f"octopi 1.7.0 timed on the same tomogram with its defaults (window = its "
                f"training crop, overlap 0.5, 4 test-time augmentations): {timed['seconds']:.1f} s "
                f"per tomogram by its own progress bar, {timed['wall_seconds']:.0f} s process "
                f"wall, peak {timed['peak_rss_mb'] / 1024:.1f} GB."
            )
        lines.append("")
        lines += _size_table(size, rows, dim_in, reference)
    return "\n".join(lines)


def add_parser(sub) -> None:
    """The ``inference-levers`` subcommand's options."""
    bench = Path(__file__).resolve().parent
    cmd = sub.add_parser("inference-levers", help="time inference settings, with their F4")
    cmd.add_argument("--model", type=Path, help="trained model folder (default: train one)")
    cmd.add_argument(
        "--published-model",
        type=Path,
        help="a model folder octopi 1.7.0 trained (best_model.pth, model_config.yaml): also time "
        "its segment on each size's tomogram, instead of the reference figures",
    )
    cmd.add_argument("--epochs", type=int, default=40, help="epochs of the model trained here")
    cmd.add_argument("--sizes", default="quick,issue", help=f"subset of {','.join(SIZES)}")
    cmd.add_argument("--repeats", type=int, default=3, help="timed passes per row (interleaved)")
    cmd.add_argument("--work", type=Path, default=bench / "work" / "inference-levers")
    cmd.add_argument("--no-docs", action="store_true", help="do not touch docs/")
    cmd.add_argument(
        "--report-only", action="store_true", help="regenerate the table from the latest results"
    )
