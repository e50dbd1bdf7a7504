"""Shared click options and the glue from CLI values to config models.

Options default to ``None``; :func:`build` drops ``None`` values so every default comes from
the config models in :mod:`octopi.config`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click
from pydantic import BaseModel, ValidationError

from octopi.config import CopickSource, DataConfig, TargetSpec
from octopi.errors import InputError, debug_enabled, validation_problems

ModelT = TypeVar("ModelT", bound=BaseModel)

UNEXPECTED_NOTE = (
    "octopi did not expect this error. If your input or the machine does not explain it, "
    "please report it with the traceback above."
)


def split_csv(value: str | None) -> list[str] | None:
    """``"a, b,c"`` → ``["a", "b", "c"]``; ``None`` stays ``None``."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def csv_numbers(kind: type) -> Callable[[click.Context, click.Parameter, str | None], list | None]:
    """A click callback parsing a comma list of ``kind`` (int or float)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> list | None:
        if value is None:
            return None
        try:
            return [kind(part) for part in split_csv(value) or []]
        except ValueError as error:
            raise click.BadParameter(
                f"expected a comma-separated list of {kind.__name__}s, got {value!r}"
            ) from error

    return parse


def default_help(model: type[BaseModel], field: str) -> str:
    """``  [default: …]`` for a help text, read from the config model (the one home of defaults)."""
    value = model.model_fields[field].get_default(call_default_factory=True)
    if isinstance(value, list | tuple):
        value = ",".join(str(item) for item in value)
    return f"  [default: {'off' if value is None else value}]"


def validation_message(error: ValidationError) -> str:
    return "invalid settings:\n  " + "\n  ".join(validation_problems(error))


def build(model: type[ModelT], **values: Any) -> ModelT:
    """Construct ``model`` from the non-``None`` values (others take the model's defaults)."""
    return model(**{key: value for key, value in values.items() if value is not None})


def friendly_errors(command: Callable) -> Callable:
    """Known bad input (:class:`~octopi.errors.InputError`, invalid settings) becomes a short
    CLI error without a traceback. Anything else is unexpected and keeps its traceback, with a
    note asking for a report; ``OCTOPI_DEBUG=1`` (``octopi --debug``) shows every traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (InputError, ValidationError) as error:
            if debug_enabled():
                raise
            if isinstance(error, ValidationError):
                raise click.ClickException(validation_message(error)) from error
            raise click.ClickException(str(error)) from error
        except (click.ClickException, click.Abort, click.exceptions.Exit):
            raise
        except Exception as error:
            error.add_note(UNEXPECTED_NOTE)
            raise

    return wrapper


@contextlib.contextmanager
def stop_on_signals_then_exit(warning_seconds: int | None = None) -> Iterator[None]:
    """Within the block SIGTERM/SIGUSR1 stop a training at its next step with a checkpoint
    (:mod:`octopi.training.stop`); the command then exits with status 75 (EX_TEMPFAIL), so that
    Snakemake's retry or Slurm's requeue continues it. In a Slurm job, ``warning_seconds``
    before its time limit stops it the same way (also where no warning signal arrives)."""
    from octopi.training.stop import STOPPED_EXIT_CODE, TrainingStopped, stop_at, stop_on_signals

    deadline = None
    job_id = os.environ.get("SLURM_JOB_ID")
    if warning_seconds and job_id:
        from octopi.slurm_jobs import job_end_time

        end = job_end_time(job_id)
        deadline = None if end is None else end - warning_seconds
    try:
        with stop_on_signals(), stop_at(deadline, f"Slurm time limit in {warning_seconds} s"):
            yield
    except TrainingStopped as error:
        click.echo(f"stopped: {error}", err=True)
        sys.exit(STOPPED_EXIT_CODE)


def exit_without_teardown(status: int = 0) -> NoReturn:
    """End the process with ``status`` now: exit handlers run (logging, MLflow) and standard
    output and error are flushed, but Python's interpreter teardown is skipped. Once torch and
    MONAI are loaded it frees their objects one by one: 1.5-2.5 s of a 2-core machine, for
    memory that the operating system frees at once anyway. For a command's very end, with every
    file it wrote closed; where a non-daemon thread still runs (one a normal exit would wait
    for), a normal ``sys.exit``. Daemon threads (e.g. tqdm's monitor) end with the process."""
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def config_option(command: Callable) -> Callable:
    return click.option(
        "--config",
        "configs",
        multiple=True,
        required=True,
        help="copick config file; repeat for several projects as session_name,path.",
    )(command)


def data_options(command: Callable) -> Callable:
    """The data-selection options shared by train, split-runs and model-explore."""
    decorators = [
        config_option,
        click.option(
            "--voxel-size",
            type=float,
            help="Voxel size (Å) of tomograms and targets."
            + default_help(DataConfig, "voxel_size_angstrom"),
        ),
        click.option("--target-info", help="Target segmentation: name or name,user_id,session_id."),
        click.option("--tomo-alg", help="Tomogram algorithm(s), comma-separated."),
        click.option("--trainRunIDs", "train_run_ids", help="Explicit training run IDs."),
        click.option("--validateRunIDs", "validate_run_ids", help="Explicit validation run IDs."),
        click.option(
            "--data-split",
            callback=csv_numbers(float),
            help="train ratio (0.8 → train/val) or train,val (0.7,0.1 → train/val/test)."
            + default_help(DataConfig, "data_split"),
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def build_data_config(
    configs: tuple[str, ...],
    voxel_size: float | None = None,
    target_info: str | None = None,
    tomo_alg: str | None = None,
    train_run_ids: str | None = None,
    validate_run_ids: str | None = None,
    data_split: list[float] | None = None,
    split_seed: int | None = None,
) -> DataConfig:
    """DataConfig from the values of :func:`data_options`."""
    return build(
        DataConfig,
        configs=[CopickSource.parse(text) for text in configs],
        voxel_size_angstrom=voxel_size,
        target=TargetSpec.parse(target_info) if target_info else None,
        tomo_algorithms=split_csv(tomo_alg),
        train_run_ids=split_csv(train_run_ids),
        validate_run_ids=split_csv(validate_run_ids),
        data_split=data_split,
        split_seed=split_seed,
    )
