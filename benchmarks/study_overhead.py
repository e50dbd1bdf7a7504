"""Phase ``study`` of the benchmarks: what a study costs besides training.

Our 200-trial ``octopi model-explore --dry-run`` (and ``snakemake -n`` on the study it plans),
Snakemake's own cost per job with the local profile's settings (trivial jobs), and the
interpreter start + ``import torch, monai`` every trial job pays. ``runner`` is the
:class:`benchmarks.measure.Runner` of the suite run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from benchmarks import ours
from benchmarks.measure import REPO, fresh_dir, proc_record
from benchmarks.procs import run_measured


def measure_study(runner) -> dict:
    """Dry-run planning, Snakemake's per-job cost and the import every trial pays."""
    study: dict = {}
    ok, why = ours.has_command("model-explore")
    if not ok:
        reason = f"`octopi model-explore` is not available: {why}"
        study["dry_run"] = {"status": "not available", "reason": reason}
    else:
        study["dry_run"] = dry_run(runner)
    study["scheduler"] = scheduler_overhead(runner)
    study["import_seconds"] = import_seconds(runner)
    return study


def dry_run(runner) -> dict:
    """A study's ``octopi model-explore --dry-run`` (second call) and ``snakemake -n``."""
    trials = runner.suite.dry_run_trials
    study_dir = fresh_dir(runner.work / "study-dryrun")
    argv = [
        *ours.octopi(), "model-explore", "--config", str(runner.data.train_config),
        "--voxel-size", "10", "--tomo-alg", "wbp", "--target-info", "targets,octopi,1",
        "--num-trials", str(trials), "--num-epochs", "2", "--val-interval", "1",
        "--output", str(study_dir), "--dry-run",
    ]  # fmt: skip
    first = runner.run("dry-run-first", argv)
    again = runner.run("dry-run", argv)
    out = proc_record(again, trials=trials, first_call_seconds=first.wall_seconds)
    out["status"] = "ok" if again.ok else "failed"
    planned = re.search(r"^trial\s+(\d+)\s*$", Path(again.log).read_text(), re.MULTILINE)
    out["planned_trial_jobs"] = int(planned.group(1)) if planned else None
    snakefile = REPO / "Snakefile"
    if again.ok and (study_dir / "config.yaml").exists() and ours.has_snakemake():
        snake = runner.run(
            "snakemake-n",
            [
                str(Path(sys.executable).with_name("snakemake")), "-n", "--quiet",
                "--snakefile", str(snakefile), "--directory", str(study_dir), "--cores", "1",
            ],
            cwd=REPO,
        )  # fmt: skip
        out["snakemake_n"] = proc_record(snake)
    return out


def scheduler_overhead(runner) -> dict:
    """Snakemake's own cost per job: N trivial jobs vs 1, local execution, all cores."""
    if not ours.has_snakemake():
        return {"status": "not available", "reason": "snakemake is not installed"}
    jobs = runner.suite.scheduler_jobs
    walls = {}
    for n in (1, jobs):
        folder = fresh_dir(runner.work / f"scheduler-{n}")
        folder.mkdir()
        (folder / "Snakefile").write_text(
            f"rule all:\n    input: expand('trial{{i}}.done', i=range({n}))\n\n"
            "rule trial:\n    output: 'trial{i}.done'\n    shell: 'touch {output}'\n"
        )
        result = runner.run(
            f"scheduler-{n}",
            [
                str(Path(sys.executable).with_name("snakemake")), "--cores", "all",
                "--quiet", "--keep-going", "--rerun-triggers", "mtime", "input", "params",
                "--snakefile", str(folder / "Snakefile"), "--directory", str(folder),
            ],
        )  # fmt: skip
        if not result.ok:
            return proc_record(result, status="failed")
        walls[n] = result.wall_seconds
    per_job = max(0.0, (walls[jobs] - walls[1]) / (jobs - 1))  # noise can make it < 0
    return {
        "status": "ok",
        "jobs": jobs,
        "wall_seconds": walls,
        "seconds_per_job": round(per_job, 3),
        "what": "snakemake (same settings as profiles/default: cores all, keep-going, "
        "rerun-triggers mtime/input/params), trivial `touch` jobs; (wall(N) - wall(1))/(N-1)",
    }


def import_seconds(runner) -> dict:
    """Interpreter start + `import torch, monai` in our venv: paid once by every trial job."""
    result = run_measured(
        [sys.executable, "-c", "import torch, monai"],
        log_path=runner.logs / "import-torch-monai.log",
    )
    return {"seconds": result.wall_seconds, "ok": result.ok}
