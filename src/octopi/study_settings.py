"""The settings a study started with, and the few that may change afterwards.

Every trial of a study is trained and scored with the settings of ``STUDY/config.yaml``.
When a Snakemake run of the study first executes jobs, the workflow's ``onstart`` handler
records that config in ``STUDY/started_config.yaml`` (:func:`record_start`). Once the study
has produced output (:func:`study_started`), the record is binding: ``octopi model-explore``,
every Snakemake run of the study (``common.smk``, also a user's own ``snakemake``) and the
study's job commands refuse a config that differs from it in anything but
:data:`MUTABLE_SETTINGS` (:func:`check_unchanged`), listing each changed key with old → new.

Kept light (yaml and the pydantic config models): ``common.smk`` imports it while planning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from octopi.config import WorkflowConfig
from octopi.config.history import with_settings_added_later
from octopi.config_diff import Change, changes, listing
from octopi.errors import InputError
from octopi.io_utils import atomic_write_text

STARTED_CONFIG = "started_config.yaml"

# What may change once a study has started: a listed key, or any key under a listed section.
# None of these changes how a trial is trained or scored, so finished and new trials stay
# comparable. Everything else (data, training, search, inference, localize, evaluation,
# create_targets) is fixed by the first job.
MUTABLE_SETTINGS: tuple[str, ...] = (
    "search.num_trials",
    "search.ensemble_size",
    "trial_resources",
    "monitor",
    "tracking",
)

# Outputs in the study folder whose existence means its first job has run.
_STARTED_BY = ("targets", "runs.json", "split.json", "trials", "optuna.journal")
_RECORD_HEADER = (
    "# The settings this study started with (written by its first Snakemake run that\n"
    "# executed jobs). config.yaml must keep them: only {mutable} may change.\n"
    "# Do not edit; start a new study for other settings.\n"
)


class StudySettingsError(InputError):
    """A started study's config differs from the settings it started with."""


def study_started(study_dir: str | Path) -> bool:
    """Whether any job of the study has produced output (beyond its config)."""
    return any((Path(study_dir) / name).exists() for name in _STARTED_BY)


def is_mutable(key: str) -> bool:
    """Whether the dotted ``key`` may change in a started study (:data:`MUTABLE_SETTINGS`)."""
    return any(key == allowed or key.startswith(f"{allowed}.") for allowed in MUTABLE_SETTINGS)


def mutable_description() -> str:
    """:data:`MUTABLE_SETTINGS` for messages: ``search.num_trials and trial_resources.*``."""
    names = [key if "." in key else f"{key}.*" for key in MUTABLE_SETTINGS]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def record_start(study_dir: str | Path, config: WorkflowConfig) -> bool:
    """Record ``config`` as the settings the study in ``study_dir`` starts with (atomically);
    a study that has started and has a record keeps it. True if written.

    A study started before octopi kept records gets one from ``config`` (which
    :func:`check_unchanged` has compared with what it can tell of the start).
    """
    path = Path(study_dir) / STARTED_CONFIG
    if path.is_file() and study_started(study_dir):
        return False
    values = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(path, _RECORD_HEADER.format(mutable=mutable_description()) + values)
    return True


def started_settings(study_dir: str | Path) -> tuple[dict[str, Any], Path] | None:
    """(settings the study started with as plain data, the file they come from); None before
    the study has started.

    Studies started before octopi kept ``started_config.yaml``: their ``config.yaml`` with the
    data section that ``runs.json`` recorded (so only a changed data section shows there).
    """
    from octopi.workflow_runner import STUDY_CONFIG, load_study_config

    study_dir = Path(study_dir)
    if not study_started(study_dir):
        return None
    record = study_dir / STARTED_CONFIG
    if record.is_file():
        values = yaml.safe_load(record.read_text())
        if not isinstance(values, dict):
            raise StudySettingsError(
                f"{record} is not a config record (a mapping of sections): restore it, or "
                "delete it to take config.yaml as the settings the study started with"
            )
        return values, record
    config = study_dir / STUDY_CONFIG
    if not config.is_file():
        return None
    values = load_study_config(config).model_dump(mode="json")
    runs = study_dir / "runs.json"
    if runs.is_file():
        data = json.loads(runs.read_text()).get("data")
        if isinstance(data, dict):
            values["data"] = data
            return values, runs
    return values, config


def _normalised(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the settings added since they were recorded filled in: with the
    behaviour they had then where it differs from today's default
    (:mod:`octopi.config.history`), else with this octopi's default (a setting added in a later
    version is not a change); as they are if this version cannot read them."""
    values = with_settings_added_later(values)
    try:
        return WorkflowConfig.model_validate(values).model_dump(mode="json")
    except ValidationError:
        return values


def changed_settings(started: dict[str, Any], config: WorkflowConfig) -> list[Change]:
    """The settings of ``config`` that differ from ``started`` (what the study started with,
    :func:`started_settings`) and may not change."""
    found = changes(_normalised(started), config.model_dump(mode="json"))
    return [change for change in found if not is_mutable(change.key)]


def check_unchanged(study_dir: str | Path, config: WorkflowConfig) -> None:
    """Raise :class:`StudySettingsError` listing each changed key (old → new), what may change
    and how to go on, when ``config`` may not run the study in ``study_dir``."""
    started = started_settings(study_dir)
    if started is None:
        return
    values, source = started
    changed = changed_settings(values, config)
    if not changed:
        return
    study_dir = Path(study_dir).resolve()
    config = study_dir / "config.yaml"
    raise StudySettingsError(
        f"{study_dir} holds a started study; these settings differ from the ones it started "
        f"with ({source.name}), which its trials were trained and scored with:\n"
        f"{listing([str(change) for change in changed])}\n"
        f"Once a study has started only {mutable_description()} may change, so that every "
        "trial is scored the same way.\n"
        f"- to continue this study: put these values back (in {config}, or on the command "
        "line);\n"
        f"- for a new study with the new values: octopi model-explore --study-config {config} "
        "[your flags] --output NEW_FOLDER;\n"
        "- to score the best model with other inference, localize or evaluation settings: "
        f"octopi segment, localize and evaluate on {study_dir / 'best'} (docs/workflow.md, "
        '"Changing a study").'
    )
