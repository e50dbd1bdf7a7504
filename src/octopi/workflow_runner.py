"""Find the Snakemake workflow (packaged or in a checkout) and run it for a study directory.

A study directory is Snakemake's working directory: it holds ``config.yaml`` (the resolved
:class:`~octopi.config.WorkflowConfig`), ``.snakemake/`` and every output of the study.
Snakemake runs as ``python -m snakemake`` of this interpreter, so it finds the same octopi; a
dry run (``--dry-run``: it plans and writes nothing) runs in this process instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from octopi.config import WorkflowConfig
from octopi.errors import MissingInputError
from octopi.input_files import absolute_path, read_yaml_mapping
from octopi.io_utils import atomic_write_yaml

STUDY_CONFIG = "config.yaml"
# A dry run plans with the config it would write, kept elsewhere: the workflow reads this
# variable's file instead of config.yaml (so the study folder is not touched).
PLANNED_CONFIG_ENV = "OCTOPI_PLANNED_CONFIG"


def workflow_root() -> Path:
    """Folder holding ``Snakefile``, ``workflow/``, ``profiles/``, ``config/`` and ``envs/``.

    In a wheel they are packaged as ``octopi/_workflow``; in a checkout (editable install) they
    sit at the repository root, two levels above this package.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "_workflow", here.parents[1]):
        if (candidate / "Snakefile").is_file() and (candidate / "workflow").is_dir():
            return candidate
    raise FileNotFoundError(
        f"octopi's Snakemake workflow is missing: neither {here / '_workflow'} nor "
        f"{here.parents[1]} holds a Snakefile; reinstall octopi"
    )


def load_study_config(path: str | Path) -> WorkflowConfig:
    """Read and validate a WorkflowConfig YAML (pydantic errors name the bad key).

    Relative copick config paths (``data.configs``, ``create_targets.configs``) are taken
    relative to the YAML file's folder and returned absolute.
    """
    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise MissingInputError(
            f"study config {path} not found; pass --study-config (a workflow config YAML, as "
            "`octopi model-explore` writes into the study folder)"
        )
    values = read_yaml_mapping(path, "study config", allow_empty=True)
    for section in ("data", "create_targets"):
        section_values = values.get(section)
        if not isinstance(section_values, dict):
            continue
        for source in section_values.get("configs") or []:
            if isinstance(source, dict) and isinstance(source.get("path"), str):
                source["path"] = str(absolute_path(source["path"], path.parent))
    return WorkflowConfig.model_validate(values)


def missing_copick_configs(config: WorkflowConfig) -> list[Path]:
    """The copick config files (``data.configs``, then ``create_targets.configs``) that are
    not there, each once, in that order: the one check before a study plans or starts."""
    sources = list(config.data.configs)
    if config.create_targets is not None:
        sources += list(config.create_targets.configs)
    return list(dict.fromkeys(s.path for s in sources if not s.path.is_file()))


def write_study_config(study_dir: str | Path, config: WorkflowConfig) -> bool:
    """Write ``study_dir/config.yaml`` unless it already holds ``config``; True if written."""
    path = Path(study_dir) / STUDY_CONFIG
    values = config.model_dump(mode="json")
    if path.is_file() and yaml.safe_load(path.read_text()) == values:
        return False
    atomic_write_yaml(path, values)
    return True


def snakemake_args(
    study_dir: str | Path,
    *,
    profile: str | Path | None = None,
    dry_run: bool = False,
    config_path: str | Path | None = None,
    jobs: int | None = None,
    gpu_slots: int | None = None,
    rerun_incomplete: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """Snakemake arguments for the study in ``study_dir`` (without the interpreter).

    ``gpu_slots`` becomes ``--resources gpu=N``: at most N trials at once (local runs).
    ``config_path`` (default ``study_dir/config.yaml``) is the config file Snakemake reads.
    """
    root = workflow_root()
    study_dir = Path(study_dir).resolve()
    args = [
        "--directory",
        str(study_dir),
        "--snakefile",
        str(root / "Snakefile"),
        "--configfile",
        str(Path(config_path).resolve() if config_path else study_dir / STUDY_CONFIG),
        "--workflow-profile",
        str(root / "profiles" / "default"),
    ]
    if profile is not None:
        args += ["--profile", str(profile)]
    if dry_run:  # the job counts, not one paragraph per job (a study may have 1000)
        args += ["--dry-run", "--quiet", "rules"]
    if jobs is not None:
        args += ["--jobs", str(jobs)]
    if gpu_slots is not None:
        args += ["--resources", f"gpu={gpu_slots}"]
    if rerun_incomplete:
        args.append("--rerun-incomplete")
    return [*args, *extra]


def run_snakemake(args: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``python -m snakemake ARGS`` with this interpreter (a dry run: in this process, see
    :func:`plan_in_process`); return its exit status.

    The interpreter's ``bin`` folder goes first on ``PATH``, so the jobs' ``octopi`` commands
    are this installation's even where its environment is not activated. Ctrl-C reaches
    Snakemake too (same process group) and SIGTERM is passed on to it as SIGINT: either way
    this waits while Snakemake cancels its cluster jobs (Slurm: ~10 s) instead of killing it
    (which would leave the jobs running). While a run that executes jobs goes on, the study's
    ``HEAD_RECORD`` says which process is its head (see :func:`running_head`).
    """
    environment = dict(os.environ if env is None else env)
    scripts = str(Path(sys.executable).parent)
    environment["PATH"] = os.pathsep.join([scripts, environment.get("PATH", "")])
    if "--dry-run" in args:
        return plan_in_process(args, environment)
    command = [sys.executable, "-m", "snakemake", *args]
    process = subprocess.Popen(command, env=environment)
    head_record = _head_record_path(args)
    if head_record is not None:
        _write_head_record(head_record, process.pid)
    forward = _forward_sigterm(process)
    try:
        try:
            return process.wait()
        except KeyboardInterrupt:
            print(
                f"interrupted: Snakemake (PID {process.pid}) is stopping its jobs; waiting for "
                "it (Ctrl-C again stops waiting)",
                file=sys.stderr,
                flush=True,
            )
            return process.wait()
    finally:
        if forward is not None:
            signal.signal(signal.SIGTERM, forward)
        if head_record is not None and process.poll() is not None:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(head_record.read_text()).get("pid") == process.pid:
                    head_record.unlink()


def plan_in_process(args: Sequence[str], env: Mapping[str, str]) -> int:
    """Run a Snakemake dry run (``args`` hold ``--dry-run``) in this process, with ``env`` as
    its environment; return its exit status.

    A dry run only plans, so it needs none of what the subprocess of :func:`run_snakemake`
    gives (signals, a head record), and in this process it skips a second interpreter and the
    imports it shares with octopi (pydantic, the config models, YAML): 0.5-0.7 s of a 2.2 s
    200-trial plan on a 2-core machine (``python -m benchmarks dry-run``). The working folder
    (Snakemake changes into ``--directory``) and the environment are restored afterwards.
    """
    if "--dry-run" not in args:
        raise ValueError("plan_in_process runs dry runs only (--dry-run)")
    from snakemake.cli import main as snakemake_main

    saved_environment, saved_folder = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    try:
        snakemake_main(list(args))
    except SystemExit as stop:  # how snakemake's main ends, always
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        os.chdir(saved_folder)
        os.environ.clear()
        os.environ.update(saved_environment)
    return 0


def _head_record_path(args: Sequence[str]) -> Path | None:
    """Where a run with these arguments records its head: runs that execute jobs only."""
    quiet = {"--dry-run", "-n", "--unlock", "--report", "--lint", "--cleanup-metadata"}
    if "--directory" not in args or quiet.intersection(args):
        return None
    return Path(args[list(args).index("--directory") + 1]) / HEAD_RECORD


def _forward_sigterm(process: subprocess.Popen) -> Any:
    """Pass SIGTERM on to ``process`` as SIGINT (Snakemake cancels its jobs only on SIGINT);
    return the handler to restore (None: not the main thread, nothing installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)

    return signal.signal(signal.SIGTERM, handler)


# --------------------------------------------------------------------------- recovery

# Written while a Snakemake head runs the study (by octopi model-explore): host, PID, start.
HEAD_RECORD = ".snakemake/octopi-head.json"


def _write_head_record(path: Path, pid: int) -> None:
    import psutil

    record = {"host": socket.gethostname(), "pid": pid}
    with contextlib.suppress(psutil.Error):
        record["started"] = psutil.Process(pid).create_time()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record) + "\n")


def running_head(study_dir: str | Path) -> dict[str, Any] | None:
    """The head record of a Snakemake that may still run the study in ``study_dir``, else None.

    A record from this host counts only while its process lives (same PID and start time);
    one from another host cannot be checked and is returned with ``"checked": False``.
    """
    import psutil

    path = Path(study_dir) / HEAD_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("host") != socket.gethostname():
        return {**record, "checked": False}
    try:
        process = psutil.Process(int(record["pid"]))
        alive = (
            abs(process.create_time() - record["started"]) < 1
            and process.status() != psutil.STATUS_ZOMBIE  # killed, not yet reaped
        )
    except (psutil.Error, KeyError, TypeError, ValueError):
        alive = False
    return {**record, "checked": True} if alive else None
