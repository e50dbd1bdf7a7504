"""``python -m benchmarks trial-overhead``: what one trial of a study costs besides training.

Goal (issue 14): under 5 s per trial, measured from outside (the job's wall time minus the
trial's training seconds) and in the trial's own phase table.

A real study (``octopi model-explore``, the local profile, CPU trials one at a time) of
``trials`` tiny trials (a fixed small U-Net, 1 epoch) on a 6-run synthetic copick project of
48×96×96 voxels. Per trial slot:

- outside: Snakemake's job wall time, from its job start to ``result.json`` written (both
  from ``.snakemake/metadata``), minus the trial's training seconds (``result.json``);
- inside: the trial's phase table (``seconds_phases``: imports, suggest, MLflow parent run,
  training, ...) and its process's own seconds;
- between jobs: from one trial's end to the next one's start, what Snakemake spends between
  two jobs run one after the other.

Then where a trial's start-up goes: a fresh interpreter imports, in the order a trial does,
the groups that every trial pays for (the fastest of ``repeats`` processes per group).

Results: ``benchmarks/results/trial-overhead-<timestamp>.json`` and
``latest-trial-overhead.json``; the table goes into ``docs/benchmarks.md`` between the
``trial-overhead`` markers.
"""

from __future__ import annotations

import base64
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks import ours
from benchmarks.measure import fresh_dir
from benchmarks.procs import run_measured

GOAL_SECONDS = 5.0
SEARCH_SPACE = {
    "dim_in": 32,
    "batch_size": 2,
    "base_channel": 8,
    "num_layers": 3,
    "hidden_layers": 1,
    "num_res_units": 1,
    "lr": 0.002,
    "loss": "dice_ce",
}
# One group per line: what each costs, imported in this order in one fresh interpreter.
IMPORT_GROUPS = {
    "torch": "import torch",
    "torch._dynamo (the optimizer's first use)": "import torch._dynamo",
    "monai (what octopi uses, without MONAI's import-everything walk)": (
        "from octopi.models.monai_import import import_monai; import_monai()"
    ),
    "mlflow + its SQLite store": "import mlflow.store.tracking.sqlalchemy_store",
    "optuna": "import optuna",
    "copick + zarr": "import copick.impl.filesystem, zarr",
    "octopi (trainer, slots, CLI)": (
        "import octopi.training.trainer, octopi.search.slots, octopi.cli.search_cmds"
    ),
}
_TIMER = """
import json, sys, time
seconds = {}
for name, statement in json.loads(sys.argv[1]).items():
    start = time.perf_counter()
    exec(statement)
    seconds[name] = time.perf_counter() - start
print(json.dumps(seconds))
"""


def _project(work: Path) -> Path:
    """A 6-run project of 48×96×96 voxels with its targets (made once, reused)."""
    config = work / "project" / "copick.json"
    if (work / "project" / "targets.done").is_file():
        return config
    fresh_dir(work / "project")
    for name, argv in (
        ("synthesize", ours.synthesize(work / "project", 6, "48,96,96", 0)),
        ("create-targets", ours.create_targets(config)),
    ):
        result = run_measured(argv, log_path=work / "logs" / f"{name}.log")
        if not result.ok:
            raise RuntimeError(f"octopi {name} failed; see {result.log}")
    (work / "project" / "targets.done").touch()
    return config


def run_study(work: Path, trials: int) -> tuple[Path, dict]:
    """A fresh ``trials``-trial study; its folder and the model-explore process record."""
    config = _project(work)
    study = fresh_dir(work / "study")
    study.mkdir()
    (study / "search_space.yaml").write_text(yaml.safe_dump(SEARCH_SPACE, sort_keys=False))
    argv = [
        *ours.octopi(), "model-explore", "--config", str(config), "--voxel-size", "10",
        "--tomo-alg", "wbp", "--target-info", "targets,octopi,1", "--data-split", "0.67,0.17",
        "--num-trials", str(trials), "--num-epochs", "1", "--val-interval", "1",
        "--pruner", "none", "--study-name", "overhead", "--output", str(study),
        "--cpu-trials", "1",  # one at a time: each trial's overhead without a neighbour
    ]  # fmt: skip
    result = run_measured(argv, log_path=work / "logs" / "model-explore.log")
    if not result.ok:
        raise RuntimeError(f"model-explore failed; see {result.log}")
    return study, result.to_dict()


def job_times(study: Path, output: str) -> tuple[float, float]:
    """(start, end) epoch seconds of the job that wrote ``output`` (a path relative to the
    study), from Snakemake's metadata (file name: the URL-safe base64 of the path)."""
    name = base64.urlsafe_b64encode(output.encode()).decode()
    record = json.loads((study / ".snakemake" / "metadata" / name).read_text())
    return float(record["starttime"]), float(record["endtime"])


def trial_rows(study: Path, trials: int) -> list[dict]:
    """Per slot: job wall, training, outside and inside overhead, the phase table."""
    rows = []
    for slot in range(trials):
        start, end = job_times(study, f"trials/{slot}/result.json")
        result = json.loads((study / "trials" / str(slot) / "result.json").read_text())
        training = float(result["seconds_training"])
        rows.append(
            {
                "slot": slot,
                "job_start": start,
                "job_seconds": end - start,
                "training_seconds": training,
                "overhead_outside_seconds": end - start - training,
                "overhead_inside_seconds": float(result["seconds_overhead"]),
                "seconds_phases": result["seconds_phases"],
                "cpu_seconds_phases": result["cpu_seconds_phases"],
            }
        )
    return rows


def between_jobs(rows: list[dict]) -> list[float]:
    """Seconds from one trial job's end to the next one's start (jobs run one at a time)."""
    ordered = sorted(rows, key=lambda row: row["job_start"])
    return [
        later["job_start"] - (earlier["job_start"] + earlier["job_seconds"])
        for earlier, later in zip(ordered, ordered[1:], strict=False)
    ]


def import_seconds(repeats: int) -> dict:
    """Interpreter start and each import group's seconds: the fastest of ``repeats``."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        best["interpreter start"] = min(
            best.get("interpreter start", float("inf")), time.perf_counter() - start
        )
        proc = subprocess.run(
            [sys.executable, "-c", _TIMER, json.dumps(IMPORT_GROUPS)],
            check=True,
            capture_output=True,
            text=True,
        )
        for name, seconds in json.loads(proc.stdout.strip().splitlines()[-1]).items():
            best[name] = min(best.get(name, float("inf")), seconds)
    return best


def measure(work: Path, trials: int = 3, repeats: int = 3) -> dict:
    """Run the study and the import timing; the JSON-ready results."""
    import os

    work.mkdir(parents=True, exist_ok=True)
    study, explore = run_study(work, trials)
    rows = trial_rows(study, trials)
    return {
        "benchmark": "trial-overhead",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cores": os.cpu_count(),
        "trials": trials,
        "model_explore": explore,
        "slots": rows,
        "between_jobs_seconds": between_jobs(rows),
        "imports": import_seconds(repeats),
        "load_average_after": os.getloadavg(),
    }


def _phase(row: dict, name: str) -> float:
    return float(row["seconds_phases"].get(name, 0.0))


def markdown(results: dict) -> str:
    """The docs block: per-trial overhead against the goal, then where start-up goes."""
    rows = results["slots"]
    outside = statistics.median(row["overhead_outside_seconds"] for row in rows)
    gaps = results["between_jobs_seconds"]
    load = results["model_explore"]["load_average"]
    lines = [
        f"Generated by `python -m benchmarks trial-overhead` ({results['timestamp']}, "
        f"{results['cores']} cores, 1-min load {load[0]:.1f} at start, {load[1]:.1f} at end): "
        f"a {results['trials']}-trial study of 1-epoch trials run one at a time. Median "
        f"overhead per trial from outside: **{outside:.1f} s** (goal < {GOAL_SECONDS:g} s: "
        f"{'met' if outside < GOAL_SECONDS else 'not met'}); Snakemake between two jobs: "
        + (f"{statistics.median(gaps):.1f} s." if gaps else "—."),
        "",
        "| slot | job wall (s) | training (s) | overhead, outside (s) | overhead, in the trial "
        "(s) | imports | suggest | MLflow parent run | rest |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        named = sum(_phase(row, name) for name in ("imports", "suggest", "mlflow_parent"))
        lines.append(
            f"| {row['slot']} | {row['job_seconds']:.1f} | {row['training_seconds']:.1f} | "
            f"{row['overhead_outside_seconds']:.1f} | {row['overhead_inside_seconds']:.1f} | "
            f"{_phase(row, 'imports'):.1f} | {_phase(row, 'suggest'):.1f} | "
            f"{_phase(row, 'mlflow_parent'):.1f} | "
            f"{row['overhead_outside_seconds'] - named:.1f} |"
        )
    lines += [
        "",
        "Where a trial's start-up goes: a fresh interpreter imports, in this order, what every "
        "trial needs before it trains (fastest of 3 processes per group):",
        "",
        "| step | seconds | cumulative |",
        "| --- | --- | --- |",
    ]
    total = 0.0
    for name, seconds in results["imports"].items():
        total += seconds
        lines.append(f"| {name} | {seconds:.2f} | {total:.2f} |")
    return "\n".join(lines)
