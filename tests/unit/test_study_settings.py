"""Config differences (octopi.config_diff) and the settings a study started with
(octopi.study_settings): the record, what may change, and the refusal of the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from octopi import study_settings
from octopi.config import WorkflowConfig
from octopi.config_diff import config_differences, listing
from octopi.study_settings import (
    STARTED_CONFIG,
    StudySettingsError,
    changed_settings,
    check_unchanged,
    is_mutable,
    record_start,
    started_settings,
)


def workflow(**sections: dict) -> WorkflowConfig:
    return WorkflowConfig.model_validate({"data": {"configs": [{"path": "/p/a.json"}]}, **sections})


def write_config(study: Path, config: WorkflowConfig) -> None:
    study.mkdir(exist_ok=True)
    (study / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))


def test_config_differences_name_the_changed_keys() -> None:
    old = {"training": {"lr": 0.001, "loss": {"name": "tversky"}}, "split": {"train": ["a"]}}
    new = {"training": {"lr": 0.002, "loss": {"name": "tversky"}}, "extra": 1}
    assert config_differences(old, new) == [
        "extra: <absent> → 1",
        "split: {'train': ['a']} → <absent>",
        "training.lr: 0.001 → 0.002",
    ]
    assert config_differences(old, old) == []
    assert listing([str(i) for i in range(14)], limit=12).splitlines()[-1] == "  … and 2 more"


def test_only_the_listed_settings_are_mutable() -> None:
    for key in ("search.num_trials", "trial_resources.mem_mb", "trial_resources"):
        assert is_mutable(key), key
    for key in ("search.study_name", "localize.min_size_fraction", "trial_resources_x.a"):
        assert not is_mutable(key), key
    described = study_settings.mutable_description()  # "search.num_trials and trial_resources.*"
    assert described.startswith("search.num_trials") and " and " in described
    assert "trial_resources.*" in described


def test_changed_settings_leave_out_the_mutable_ones_and_new_defaults() -> None:
    started = workflow().model_dump(mode="json")
    edited = workflow(
        localize={"min_size_fraction": 0.2},
        search={"num_trials": 3},
        trial_resources={"mem_mb": 4000},
        create_targets={"configs": [{"path": "/p/a.json"}]},
    )
    assert [str(c) for c in changed_settings(started, edited)] == [
        "create_targets: None → {'configs': [{'path': '/p/a.json', 'session_name': None}], "
        "'voxel_size_angstrom': 10.0, 'target': {'name': 'targets', 'user_id': 'octopi', "
        "'session_id': '1'}, 'picks': {'user_id': 'curation', 'session_id': '0'}, "
        "'objects': None, 'radius_fraction': 0.5, 'run_ids': None}",
        "localize.min_size_fraction: 0.05 → 0.2",
    ]
    # A record from a version without a setting: its default is no change.
    del started["localize"]["max_foreground_fraction"]
    assert changed_settings(started, workflow()) == []


def test_the_record_is_rewritten_until_the_study_starts(tmp_path: Path) -> None:
    study = tmp_path / "s"
    study.mkdir()
    assert record_start(study, workflow())
    assert started_settings(study) is None  # not started: nothing is binding yet
    check_unchanged(study, workflow(training={"num_epochs": 50}))
    assert record_start(study, workflow(training={"num_epochs": 50}))
    (study / "runs.json").write_text("{}")  # the first job has run
    assert not record_start(study, workflow(training={"num_epochs": 70}))
    values, source = started_settings(study)
    assert values["training"]["num_epochs"] == 50 and source == study / STARTED_CONFIG
    assert (study / STARTED_CONFIG).read_text().startswith("# The settings this study started")


def test_a_started_study_refuses_an_edit_with_the_keys_and_the_way_on(tmp_path: Path) -> None:
    study = tmp_path / "s"
    write_config(study, workflow())
    record_start(study, workflow())
    (study / "trials").mkdir()
    check_unchanged(study, workflow(search={"num_trials": 9}, trial_resources={"threads": 1}))
    with pytest.raises(StudySettingsError) as error:
        check_unchanged(study, workflow(localize={"min_size_fraction": 0.2}))
    message = str(error.value)
    for fragment in (
        "differ from the ones it started with (started_config.yaml)",
        "  localize.min_size_fraction: 0.05 → 0.2\n",
        f"only {study_settings.mutable_description()} may change",
        "--output NEW_FOLDER",
        "octopi segment, localize and evaluate",
    ):
        assert fragment in message, message


def test_a_study_started_without_a_record_compares_its_data_with_runs_json(
    tmp_path: Path,
) -> None:
    study = tmp_path / "s"
    write_config(study, workflow(training={"num_epochs": 50}))
    data = workflow(data={"configs": [{"path": "/p/a.json"}], "voxel_size_angstrom": 20}).data
    (study / "runs.json").write_text(json.dumps({"data": data.model_dump(mode="json")}))
    values, source = started_settings(study)
    assert source == study / "runs.json" and values["training"]["num_epochs"] == 50
    with pytest.raises(StudySettingsError, match=r"data\.voxel_size_angstrom: 20\.0 → 10\.0"):
        check_unchanged(study, workflow(training={"num_epochs": 50}))
    # The next run that executes jobs records the settings (a legacy study gets its record).
    assert record_start(study, workflow(training={"num_epochs": 50}))
    assert started_settings(study)[1] == study / STARTED_CONFIG


def test_a_broken_record_names_the_file(tmp_path: Path) -> None:
    study = tmp_path / "s"
    study.mkdir()
    (study / "trials").mkdir()
    (study / STARTED_CONFIG).write_text("- not a mapping\n")
    with pytest.raises(StudySettingsError, match=STARTED_CONFIG):
        check_unchanged(study, workflow())
