"""Run both tools on the same data, on the same machine, in one run; collect the figures.

Every measurement is one fresh subprocess (:func:`benchmarks.procs.run_measured`: wall time,
CPU time, peak memory of the whole process tree). Phases, in order:

1. ``throughput``: training patches/s and peak memory, default UNet, each ``--dim-in`` of the
   suite, same batch size, ``--val-interval N`` with N = ``throughput_epochs`` (one validation,
   in the last epoch). Patches/s = crops per epoch (training runs × batch size: both tools draw
   ``batch size`` crops per training tomogram per epoch) / mean seconds of epochs 2..N-1, read
   from each tool's own epoch progress bar (the first epoch pays the data-loader start-up, the
   last one the validation). Start-up and tomogram caching are excluded.
2. ``quality``: both tools trained for ``quality_epochs`` epochs (equal epochs). The published
   tool's wall time for that run is the budget of the equal-wall-clock comparison: ours is then
   trained again for as many epochs as its own throughput run says fit in that budget.
3. ``inference``: every quality model segments the test runs with its tool's DEFAULT inference
   settings; picks come from each tool's own ``localize`` (defaults); F4 comes from OUR
   ``octopi evaluate`` (CZII weights, one-to-one matching) for both; the published tool's own
   ``evaluate`` runs too, for reference. Seconds per tomogram: in-tool (octopi 1.7.0's
   segmentation bar, our ``segment.json``) and end to end (process wall / tomograms).
4. ``study``: our 200-trial ``octopi model-explore --dry-run`` and Snakemake's per-job
   overhead with the local profile (trivial jobs).
"""

from __future__ import annotations

import math
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import logparse, ours, published
from benchmarks.data import BenchData, build
from benchmarks.machine_info import machine, our_versions
from benchmarks.procs import ProcResult, run_measured, tail
from benchmarks.suites import Suite

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PHASES = ("throughput", "quality", "inference", "study")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- helpers


def proc_record(result: ProcResult, **extra) -> dict:
    out = result.to_dict()
    out.update(extra)
    if not result.ok:
        out["error"] = tail(result.log, 15)
    return out


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class Runner:
    """One suite run: the data, the work folder, and the results dict being filled."""

    deadline: float | None = None  # time.monotonic() at the run's time limit (None: none)

    def __init__(
        self, suite: Suite, work: Path, data: BenchData, results: dict, repeats: int = 1
    ) -> None:
        self.suite = suite
        self.repeats = repeats
        self.work = work
        self.data = data
        self.results = results
        self.logs = work / "logs"
        self.available = {"train": ours.has_command("train")[0]}

    def run(self, name: str, argv: list[str], **kwargs) -> ProcResult:
        log(f"{name}: {' '.join(argv[:3])} ...")
        timeout = self.suite.step_timeout_seconds
        if self.deadline is not None:  # cut at the time limit (exit 124, like a step timeout)
            timeout = max(1.0, min(timeout, self.deadline - time.monotonic()))
        result = run_measured(
            argv, log_path=self.logs / f"{name}.log", timeout_seconds=timeout, **kwargs
        )
        state = "ok" if result.ok else f"FAILED (exit {result.returncode}, see {result.log})"
        log(f"{name}: {state} in {result.wall_seconds:.0f} s, {result.peak_pss_mb:.0f} MB")
        return result

    # ------------------------------------------------------------------ training

    def train(self, tool: str, tag: str, dim_in: int, epochs: int, val_interval: int) -> dict:
        output = fresh_dir(self.work / "models" / f"{tool}-{tag}")
        builder = published.train if tool == "published" else ours.train
        config = self.data.train_config
        argv = builder(
            config,
            output,
            train_run_ids=self.data.train_run_ids,
            validate_run_ids=self.data.validate_run_ids,
            num_epochs=epochs,
            val_interval=val_interval,
            batch_size=self.suite.batch_size,
            dim_in=dim_in,
        )
        if tool == "ours" and not self.available["train"]:
            return {"ok": False, "error": "our `octopi train` is not available", "tool": tool}
        result = self.run(f"train-{tool}-{tag}", argv)
        weights = (published.weights_file if tool == "published" else ours.weights_file)(output)
        ok = result.ok and weights.exists()
        desc = logparse.PUBLISHED_TRAIN_BAR if tool == "published" else logparse.OUR_TRAIN_BAR
        epoch_seconds = logparse.steady_epoch_seconds(result.log, desc, epochs) if ok else None
        patches_per_epoch = len(self.data.train_run_ids) * self.suite.batch_size
        record = proc_record(
            result,
            tool=tool,
            tag=tag,
            dim_in=dim_in,
            epochs=epochs,
            val_interval=val_interval,
            batch_size=self.suite.batch_size,
            patches_per_epoch=patches_per_epoch,
            steady_epoch_seconds=epoch_seconds,
            patches_per_s=(patches_per_epoch / epoch_seconds) if epoch_seconds else None,
            model_dir=str(output),
        )
        record["ok"] = ok
        if result.ok and not weights.exists():
            record["error"] = f"training finished without writing {weights.name}"
        if tool == "ours" and ok:
            rows = logparse.our_epoch_rows(output)
            logged = [
                r["patches_per_s"] for r in rows[1:-1] if isinstance(r.get("patches_per_s"), float)
            ]
            record["our_logged_patches_per_s"] = sum(logged) / len(logged) if logged else None
            plain = [
                r["seconds"]
                for r in rows[1:]  # the first epoch pays the start-up
                if isinstance(r.get("seconds"), float) and not _validated(r)
            ]
            record["our_logged_epoch_seconds"] = sum(plain) / len(plain) if plain else None
        return record

    def phase_throughput(self) -> None:
        """Each (tool, dim-in) ``repeats`` times, interleaved; the report keeps the fastest."""
        epochs = self.suite.throughput_epochs
        rows = self.results.setdefault("training_throughput", [])
        for repeat in range(self.repeats):
            for dim_in in self.suite.throughput_dims:
                for tool in self.suite.tools:
                    tag = f"tp{dim_in}" if repeat == 0 else f"tp{dim_in}-r{repeat}"
                    record = self.train(tool, tag, dim_in, epochs, epochs)
                    record["repeat"] = repeat
                    rows.append(record)

    def phase_quality(self) -> None:
        suite = self.suite
        rows = self.results.setdefault("quality", [])
        runs: dict[str, dict] = {}
        for tool in suite.tools:
            record = self.train(
                tool,
                "eqepochs",
                suite.quality_dim,
                suite.quality_epochs,
                suite.quality_val_interval,
            )
            record["comparison"] = "equal-epochs"
            runs[tool] = record
            rows.append(record)
        theirs = runs.get("published", {})
        budget = theirs.get("wall_seconds") if theirs.get("ok") else None
        epochs = self._epochs_for_budget(budget)
        if epochs is None:
            rows.append(
                {
                    "tool": "ours",
                    "comparison": "equal-time",
                    "ok": False,
                    "error": "no budget: the published run or our throughput run is missing",
                }
            )
            return
        interval = max(1, min(suite.quality_val_interval, epochs))
        record = self.train("ours", "eqtime", suite.quality_dim, epochs, interval)
        record["comparison"] = "equal-time"
        record["budget_seconds"] = budget
        rows.append(record)
        # Wall time per epoch moves with the machine's load: if this run missed the budget by
        # more than 25 %, retry once with the epochs its own timings say fit, and keep both.
        retry = _refit_epochs(record, budget)
        if retry is not None and retry != epochs:
            record["comparison"] = "equal-time-first-try"
            interval = max(1, min(suite.quality_val_interval, retry))
            second = self.train("ours", "eqtime2", suite.quality_dim, retry, interval)
            second["comparison"] = "equal-time"
            second["budget_seconds"] = budget
            rows.append(second)

    def _epochs_for_budget(self, budget: float | None) -> int | None:
        """Epochs of ours that fit ``budget`` s (fixed cost and s/epoch from our quality run)."""
        if budget is None:
            return None
        ours_run = next(
            (
                r
                for r in self.results.get("quality", [])
                if r.get("tool") == "ours" and r.get("comparison") == "equal-epochs" and r["ok"]
            ),
            None,
        )
        if ours_run is None:
            return None
        # The progress bar has 1 s resolution; very short epochs fall back to our epochs.csv.
        per_epoch = ours_run.get("steady_epoch_seconds") or ours_run.get("our_logged_epoch_seconds")
        if not per_epoch:
            return None
        fixed = ours_run["wall_seconds"] - per_epoch * ours_run["epochs"]
        return max(1, math.floor((budget - max(fixed, 0.0)) / per_epoch))

    # ------------------------------------------------------------------ inference

    def _clean_predictions(self) -> None:
        """Drop predictions and picks of earlier suite runs from the test project."""
        overlay = self.data.test_config.parent / "data"
        for pattern in (
            "ExperimentRuns/*/Segmentations/*_ours_*",
            "ExperimentRuns/*/Segmentations/*_published_*",
            "ExperimentRuns/*/Picks/ours_*",
            "ExperimentRuns/*/Picks/published_*",
        ):
            for path in overlay.glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def infer(self, model: dict) -> dict:
        """Segment, localize and score the test runs with ``model`` (a training record)."""
        tool, session = model["tool"], model["tag"]
        model_dir = Path(model["model_dir"])
        config, runs = self.data.test_config, self.data.test_run_ids
        out = {"tool": tool, "comparison": model.get("comparison"), "session": session}
        work = fresh_dir(self.work / "inference" / f"{tool}-{session}")
        if tool == "published":
            seg_uri = f"predict:published/{session}"
            seg = self.run(
                f"segment-{tool}-{session}", published.segment(config, model_dir, runs, seg_uri)
            )
            in_tool = logparse.published_seconds_per_tomogram(seg.log, len(runs))
            settings = {"window": model["dim_in"], "overlap": 0.5, "window_batch": 4, "tta": 4}
            loc_argv = published.localize(config, runs, seg_uri, "published", session)
        else:
            seg_info = f"predict,ours,{session}"
            seg_argv = ours.segment(config, model_dir, runs, seg_info, work / "segment")
            seg = self.run(f"segment-{tool}-{session}", seg_argv)
            in_tool = logparse.our_seconds_per_tomogram(work / "segment")
            settings = {
                "window": model["dim_in"],
                "overlap": 0.25,
                "window_batch": 4,
                "tta": "none",
            }
            loc_argv = ours.localize(config, runs, seg_info, f"ours,{session}", work / "localize")
        out["segment"] = proc_record(
            seg,
            n_tomograms=len(runs),
            seconds_per_tomogram_in_tool=in_tool,
            seconds_per_tomogram_wall=seg.wall_seconds / len(runs),
            settings=settings,
        )
        if not seg.ok or not self.suite.score_picks:
            return out
        loc = self.run(f"localize-{tool}-{session}", loc_argv)
        out["localize"] = proc_record(loc)
        if not loc.ok:
            return out
        metrics = work / "metrics.json"
        pred = f"{tool},{session}"
        ev = self.run(f"evaluate-{tool}-{session}", ours.evaluate(config, runs, pred, metrics))
        out["evaluate"] = proc_record(ev)
        f4 = logparse.our_f4(metrics)
        if f4 is None and "no predicted picks" in Path(ev.log).read_text(errors="replace"):
            f4, out["note"] = 0.0, "the tool wrote no picks on the test runs: F4 = 0"
        out["f4"] = f4
        if tool == "published":
            ref_dir = work / "published-evaluate"
            ref = self.run(
                f"evaluate-own-{tool}-{session}",
                published.evaluate(config, runs, "published", session, ref_dir),
            )
            out["published_own_evaluate"] = proc_record(ref, f4=logparse.published_f4(ref_dir))
        return out

    def phase_inference(self) -> None:
        """The quality models; without them, the throughput models of crop ``quality_dim``."""
        self._clean_predictions()
        rows = self.results.setdefault("inference", [])
        models = self.results.get("quality") or [
            dict(r, comparison="equal-epochs")
            for r in self.results.get("training_throughput", [])
            if r.get("dim_in") == self.suite.quality_dim and not r.get("repeat")
        ]
        for model in models:
            if model.get("ok"):
                rows.append(self.infer(model))

    # ------------------------------------------------------------------ study overhead

    def phase_study(self) -> None:
        """Our study overhead: :func:`benchmarks.study_overhead.measure_study`."""
        from benchmarks.study_overhead import measure_study

        self.results["study_overhead"] = measure_study(self)


def _validated(row: dict) -> bool:
    """Whether a row of our epochs.csv had a validation (its ``val_*`` columns are filled)."""
    return any(k.startswith("val_") and isinstance(v, float) for k, v in row.items())


def _refit_epochs(record: dict, budget: float) -> int | None:
    """Epochs that fit ``budget`` by ``record``'s own timings; None when it was close enough."""
    wall, epochs = record.get("wall_seconds"), record.get("epochs")
    if not record.get("ok") or not wall or not epochs or abs(wall - budget) <= 0.25 * budget:
        return None
    per_epoch = record.get("steady_epoch_seconds") or record.get("our_logged_epoch_seconds")
    if per_epoch:
        fixed = max(0.0, wall - per_epoch * epochs)
        return max(1, math.floor((budget - fixed) / per_epoch))
    return max(1, round(epochs * budget / wall))


# --------------------------------------------------------------------------- entry


def run_suite(
    suite: Suite,
    *,
    phases: tuple[str, ...] = PHASES,
    work: Path | None = None,
    on_progress: Callable[[dict], None] | None = None,
    repeats: int = 1,
    time_limit_seconds: float | None = None,
) -> dict:
    """Run ``suite`` and return the results dict. A phase that raises is recorded under
    ``errors`` and the next runs; ``on_progress`` gets the results after every phase (the CLI
    saves them); after ``time_limit_seconds`` a running step is cut, later phases skipped."""
    work = work or BENCH_DIR / "work" / suite.name
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    deadline = None if time_limit_seconds is None else time.monotonic() + time_limit_seconds
    results: dict = {
        "suite": suite.name,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": suite.to_dict(),
        "phases": list(phases),
    }
    if with_published := "published" in suite.tools:
        log("published octopi 1.7.0 environment ...")
        results["published_install"] = published.ensure_env()
        log(f"published env: {results['published_install']}")
    theirs = published.versions() if with_published else {"skipped": "--ours-only"}
    results["versions"] = {"ours": our_versions(), "published": theirs}
    log("benchmark data ...")
    data = build(suite.data, work / "data", log_dir=work / "logs", published_targets=with_published)
    results["data"] = data.describe()
    results["throughput_repeats"] = repeats
    runner = Runner(suite, work, data, results, repeats=repeats)
    runner.deadline = deadline
    results["our_commands"] = {
        name: ours.has_command(name)[1] or "ok"
        for name in ("train", "segment", "localize", "evaluate", "model-explore")
    }
    results["complete"] = False
    for phase in PHASES:
        if phase not in phases:
            continue
        if deadline is not None and time.monotonic() >= deadline:
            results.setdefault("errors", {})[phase] = "not run: the time limit had passed"
            continue
        log(f"phase {phase}")
        try:
            getattr(runner, f"phase_{phase}")()
        except Exception:  # noqa: BLE001 - record it, measure the rest
            log(f"phase {phase} FAILED:\n{traceback.format_exc()}")
            results.setdefault("errors", {})[phase] = traceback.format_exc()
        results["total_seconds"] = round(time.perf_counter() - started, 1)
        if on_progress is not None:
            on_progress(results)
    results["complete"] = True
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    return results
