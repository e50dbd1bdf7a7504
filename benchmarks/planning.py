"""``python -m benchmarks dry-run``: how fast a whole study is planned, 200 and 1000 trials.

Goals (issue 14; issue 6 had 2 s for 200): ``snakemake -n`` and ``octopi model-explore
--dry-run`` print the plan of a 200-trial study in under 1.5 s and of a 1000-trial study in
under 3 s, without importing torch.

For each trial count N, on a tiny synthetic copick project (planning never opens it):

- ``octopi model-explore --dry-run``: the whole command, as a user types it (its Snakemake
  runs ``--dry-run --quiet rules``: the job counts, not a paragraph per job);
- ``snakemake -n``: the workflow in a study folder holding that config, with the workflow
  profile's per-job printout (``printshellcmds``);
- ``snakemake -n --quiet rules``: the same, job counts only;
- bare Snakemake: a two-rule Snakefile with N trivial jobs (``snakemake -n --quiet rules``),
  the floor that Snakemake itself sets.

Every command runs ``repeats`` times, interleaved with the others so that a burst of other
work on the machine hits all of them alike; the fastest wall time is the figure (with the CPU
seconds of that run and every wall time). One more ``model-explore --dry-run`` runs with
``PYTHONPROFILEIMPORTTIME=1`` to check that no process of the plan imports torch.

Results: ``benchmarks/results/dry-run-<timestamp>.json`` and ``latest-dry-run.json``; the
table goes into ``docs/benchmarks.md`` between the ``dry-run`` markers.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

from benchmarks import ours
from benchmarks.procs import ProcResult, run_measured

REPO = Path(__file__).resolve().parents[1]
GOAL_SECONDS = {200: 1.5, 1000: 3.0}
COMMANDS = ("model_explore_dry_run", "snakemake_n", "snakemake_n_quiet", "bare_snakemake_n")
LABELS = {
    "model_explore_dry_run": "`octopi model-explore --dry-run`",
    "snakemake_n": "`snakemake -n` (our workflow, per-job printout)",
    "snakemake_n_quiet": "`snakemake -n --quiet rules` (our workflow)",
    "bare_snakemake_n": "bare Snakemake, N trivial jobs (`-n --quiet rules`)",
}
# The goal applies to what a user runs: both ways of planning our workflow.
GOAL_COMMANDS = ("model_explore_dry_run", "snakemake_n")


def _snakemake() -> str:
    return str(Path(sys.executable).with_name("snakemake"))


def _project(work: Path) -> Path:
    """A 2-run copick project (32x48x48 voxels): the plan only needs its config to exist."""
    config = work / "project" / "copick.json"
    if not config.is_file():
        shutil.rmtree(work / "project", ignore_errors=True)
        result = run_measured(
            ours.synthesize(work / "project", 2, "32,48,48", 0), log_path=work / "synthesize.log"
        )
        if not result.ok:
            raise RuntimeError(f"octopi synthesize failed; see {result.log}")
    return config


def _explore_argv(config: Path, trials: int, study: Path) -> list[str]:
    return [
        *ours.octopi(), "model-explore", "--config", str(config), "--num-trials", str(trials),
        "--output", str(study), "--dry-run",
    ]  # fmt: skip


def _study_folder(config: Path, trials: int, study: Path) -> None:
    """A study folder holding the config ``model-explore`` would write (for ``snakemake -n``)."""
    from octopi.cli.explore_cmds import build_study_config
    from octopi.workflow_runner import write_study_config

    study.mkdir(parents=True, exist_ok=True)
    built = build_study_config(None, (str(config),), {"num_trials": trials})
    write_study_config(study, built)


def _bare_snakefile(folder: Path, trials: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Snakefile"
    path.write_text(
        f"rule all:\n    input: expand('trial{{i}}.done', i=range({trials}))\n\n"
        "rule trial:\n    output: 'trial{i}.done'\n    shell: 'touch {output}'\n"
    )
    return path


def command_lines(config: Path, trials: int, work: Path) -> dict[str, list[str]]:
    """The four measured command lines for ``trials`` trials (their folders made ready)."""
    study = work / f"study-{trials}"
    _study_folder(config, trials, study)
    bare = _bare_snakefile(work / f"bare-{trials}", trials)
    workflow = [
        _snakemake(), "-n", "--directory", str(study), "--snakefile", str(REPO / "Snakefile"),
        "--configfile", str(study / "config.yaml"),
    ]  # fmt: skip
    return {
        "model_explore_dry_run": _explore_argv(config, trials, work / f"new-study-{trials}"),
        "snakemake_n": workflow,
        "snakemake_n_quiet": [*workflow, "--quiet", "rules"],
        "bare_snakemake_n": [
            _snakemake(),
            "-n",
            "--quiet",
            "rules",
            "--cores",
            "1",
            "--snakefile",
            str(bare),
            "--directory",
            str(bare.parent),
        ],  # fmt: skip
    }


def _planned_trials(result: ProcResult) -> int | None:
    found = re.search(r"^trial\s+(\d+)\s*$", Path(result.log).read_text(), re.MULTILINE)
    return int(found.group(1)) if found else None


def _torch_imported(config: Path, trials: int, work: Path) -> bool:
    """Whether any process of ``model-explore --dry-run`` imports torch (import-time log)."""
    result = run_measured(
        _explore_argv(config, trials, work / "new-study-imports"),
        log_path=work / "logs" / "imports.log",
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    if not result.ok:
        raise RuntimeError(f"model-explore --dry-run failed; see {result.log}")
    return bool(re.search(r"\|\s*torch$", Path(result.log).read_text(), re.MULTILINE))


def measure(
    work: Path,
    trial_counts: tuple[int, ...] = (200, 1000),
    repeats: int = 5,
) -> dict:
    """Time the four planning commands for each trial count; the JSON-ready results."""
    work.mkdir(parents=True, exist_ok=True)
    config = _project(work)
    lines = {n: command_lines(config, n, work) for n in trial_counts}
    runs: dict[int, dict[str, list[ProcResult]]] = {n: {c: [] for c in COMMANDS} for n in lines}
    for repeat in range(repeats):
        for n, commands in lines.items():
            for name, argv in commands.items():
                log = work / "logs" / f"{name}-{n}-{repeat}.log"
                result = run_measured(argv, log_path=log, cwd=REPO, timeout_seconds=300)
                if not result.ok:
                    raise RuntimeError(f"{name} ({n} trials) failed; see {log}")
                runs[n][name].append(result)
        print(f"dry-run benchmark: {repeat + 1} of {repeats} rounds done", flush=True)
    results = {
        "benchmark": "dry-run",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "repeats": repeats,
        "cores": os.cpu_count(),
        "imports_torch": _torch_imported(config, trial_counts[-1], work),
        "trial_counts": {},
    }
    for n, by_command in runs.items():
        row: dict[str, dict] = {}
        for name, measured in by_command.items():
            best = min(measured, key=lambda r: r.wall_seconds)
            row[name] = {
                "wall_seconds": best.wall_seconds,
                "cpu_seconds": best.cpu_seconds,
                "all_wall_seconds": [r.wall_seconds for r in measured],
                "load_average": [r.load_average for r in measured],
                "command": best.to_dict()["command"],
            }
        row["model_explore_dry_run"]["planned_trial_jobs"] = _planned_trials(
            by_command["model_explore_dry_run"][0]
        )
        results["trial_counts"][str(n)] = row
    return results


def markdown(results: dict) -> str:
    """The docs table: one row per trial count and command, goal status on the user-facing ones."""
    lines = [
        f"Generated by `python -m benchmarks dry-run` ({results['timestamp']}, "
        f"{results['cores']} cores; fastest of {results['repeats']} interleaved runs, with "
        "the CPU seconds of that run and the spread of all runs). "
        f"Torch imported while planning: **{'yes' if results['imports_torch'] else 'no'}**.",
        "",
        "| trials | command | wall (s) | CPU (s) | all runs (s) | 1-min load | goal | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for count, row in results["trial_counts"].items():
        goal = GOAL_SECONDS.get(int(count))
        for name in COMMANDS:
            cell = row[name]
            walls = cell["all_wall_seconds"]
            loads = [value for pair in cell["load_average"] for value in pair]
            judged = goal is not None and name in GOAL_COMMANDS
            status = ("met" if cell["wall_seconds"] < goal else "not met") if judged else "—"
            lines.append(
                f"| {count} | {LABELS[name]} | {cell['wall_seconds']:.2f} | "
                f"{cell['cpu_seconds']:.2f} | {min(walls):.2f}–{max(walls):.2f} | "
                f"{min(loads):.1f}–{max(loads):.1f} | "
                f"{f'< {goal:g} s' if judged else '—'} | {status} |"
            )
    return "\n".join(lines)
