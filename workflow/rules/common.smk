# Config access, trial slots and output paths. Kept light (yaml, json, click and the pydantic
# config models; no torch, copick or optuna) so that planning a 1000-trial study stays fast.
import html
import json
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from octopi.cli.options import validation_message
from octopi.study_settings import (
    StudySettingsError,
    check_unchanged,
    mutable_description,
    record_start,
)
from octopi.workflow_runner import (
    PLANNED_CONFIG_ENV,
    STUDY_CONFIG,
    load_study_config,
    missing_copick_configs,
)

# STUDY_CONFIG ("config.yaml"): the study directory is the working directory; the octopi
# commands read this file.
# What this run plans with: config.yaml, except in `octopi model-explore --dry-run`, which
# plans with the config it would write without writing it (the jobs' params stay config.yaml,
# so finished trials are not planned again for a changed param).
PLANNED_CONFIG = os.environ.get(PLANNED_CONFIG_ENV) or STUDY_CONFIG
ENV = "../../envs/octopi.yaml"

RUNS = "runs.json"
SPLIT = "split.json"
TARGETS = "targets/targets.json"
TRIAL_RESULT = "trials/{slot}/result.json"
BEST_SUMMARY = "best/summary.json"
TEST_METRICS = "test/metrics.json"


def _load_study():
    """The study's WorkflowConfig as the octopi commands read it (defaults from octopi.config,
    copick paths made absolute). Fails early, with a fix, where they would see another one.
    """
    here = Path(PLANNED_CONFIG).resolve()
    if not here.is_file():
        raise WorkflowError(
            f"{here} not found: the study directory (--directory) must hold config.yaml, "
            "which every octopi command of this workflow reads"
        )
    with open(here) as handle:
        if yaml.safe_load(handle) != config:
            raise WorkflowError(
                f"the config Snakemake got differs from {here}, which the octopi commands "
                "read: set values in that file, not with --config or another --configfile "
                f"(once the study has started only {mutable_description()} may change)"
            )
    try:
        study = load_study_config(here)
    except ValidationError as error:
        raise WorkflowError(f"{here}: {validation_message(error)}")
    missing = sorted(str(path) for path in missing_copick_configs(study))
    if missing:
        raise WorkflowError(
            f"copick config(s) not found: {', '.join(missing)} (relative paths in "
            f"{here} are read from its folder)"
        )
    try:  # a started study keeps the settings its trials were trained and scored with
        check_unchanged(Path.cwd(), study)
    except StudySettingsError as error:
        raise WorkflowError(str(error))
    return study


STUDY = _load_study()
RESOURCES = STUDY.trial_resources
# Retries belong to the head: on a cluster the job's own Snakemake (jobstep, srun) would
# otherwise rerun a failed trial inside the same job, past the job's time limit.
TRIAL_RETRIES = RESOURCES.retries if workflow.is_main_process else 0
# sbatch options of a trial job (the slurm executor reads the slurm_extra resource; local
# runs ignore it): SIGTERM warning_seconds before the time limit, see octopi.training.stop.
# A profile that sets slurm_extra for trial jobs replaces this; add the --signal there.
WARNING_SECONDS = RESOURCES.warning_seconds
TRIAL_SLURM_EXTRA = f"--signal=TERM@{WARNING_SECONDS}" if WARNING_SECONDS else ""
SLOTS = range(STUDY.search.num_trials)


def study_targets():
    """Best model and the study tables; the trials come in as their inputs."""
    return [BEST_SUMMARY, "report/trials.html", "report/best.html"]


def test_targets(wildcards):
    """Test evaluation, only when the split (a checkpoint) has test runs."""
    with open(checkpoints.split_runs.get().output.split) as handle:
        has_test_runs = bool(json.load(handle).get("test"))
    return [TEST_METRICS, "report/test.html"] if has_test_runs else []


# --------------------------------------------------------------------------- report tables

_STYLE = (
    "body{font-family:sans-serif;font-size:14px}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
    "td:first-child,th:first-child{text-align:left}"
)


def _frame_html(frame):
    """A DataFrame as an HTML table: floats to 4 significant digits, nested values as JSON."""
    nested = frame.map(lambda v: isinstance(v, (dict, list)))
    frame = frame.mask(nested, frame.map(json.dumps))
    return frame.to_html(index=False, float_format="{:.4g}".format, border=0, na_rep="")


def _json_tables(data, title=""):
    """Scalars as a key/value table; a dict of same-keyed flat dicts as a matrix; other dicts
    recursively, as sections."""
    import pandas as pd

    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    parts = [f"<h3>{html.escape(title)}</h3>"] if title else []
    if scalars:
        rows = pd.DataFrame({"key": list(scalars), "value": list(scalars.values())})
        parts.append(_frame_html(rows))
    for key, value in data.items():
        if not isinstance(value, dict):
            continue
        inner = list(value.values())
        if inner and all(isinstance(v, dict) for v in inner):
            if not any(isinstance(x, dict) for v in inner for x in v.values()):
                matrix = pd.DataFrame.from_dict(value, orient="index")
                matrix = matrix.rename_axis(key).reset_index()
                parts += [f"<h3>{html.escape(key)}</h3>", _frame_html(matrix)]
                continue
        parts.append(_json_tables(value, f"{title}.{key}" if title else key))
    return "".join(parts)


def _write_html(path, title, body):
    page = (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{_STYLE}</style></head><body><h2>{html.escape(title)}</h2>"
        f"{body}</body></html>\n"
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(page)


def render_csv(csv_path, html_path, title):
    """A CSV file as one HTML table (the report shows HTML, not CSV)."""
    import pandas as pd

    _write_html(html_path, title, _frame_html(pd.read_csv(csv_path)))


def render_json(json_path, html_path, title):
    """A JSON summary as HTML tables."""
    with open(json_path) as handle:
        data = json.load(handle)
    _write_html(html_path, title, _json_tables(data))
