"""Settings added after a release: records without them compare as made with the old
behaviour (octopi.config.history), in a training's resume check and a study's settings."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from octopi.config import WorkflowConfig
from octopi.config.history import SETTINGS_ADDED_LATER, with_settings_added_later
from octopi.errors import OutputExistsError
from octopi.study_settings import changed_settings
from octopi.training.plan import CONFIG_NAME, check_output_dir


def test_old_values_are_filled_in_only_where_a_section_lacks_the_key() -> None:
    record = {"training": {"lr": 0.001, "loss": {"name": "tversky"}}, "data": {"configs": []}}
    filled = with_settings_added_later(record)
    assert filled["training"] == {
        "lr": 0.001,
        "lr_decay": "cosine_to_zero",
        "loss": {"name": "tversky", "ce_class_balance": 0.5},
    }
    assert record == {
        "training": {"lr": 0.001, "loss": {"name": "tversky"}},
        "data": {"configs": []},
    }
    kept = {"training": {"lr_decay": "cosine_over_run"}}
    assert with_settings_added_later(kept) == kept
    assert with_settings_added_later({"data": {}}) == {"data": {}}  # no section: left absent


def test_every_listed_setting_exists_and_its_old_value_is_valid() -> None:
    """A key that is renamed or removed must leave the table too (or records would grow a
    setting nothing reads), and the old value must still be one the setting accepts."""
    config = WorkflowConfig.model_validate({"data": {"configs": [{"path": "/p/a.json"}]}})
    dumped = config.model_dump(mode="json")
    for dotted, old_value in SETTINGS_ADDED_LATER.items():
        *sections, key = dotted.split(".")
        record = copy.deepcopy(dumped)
        section = record
        for name in sections:
            section = section[name]
        assert key in section, dotted
        section[key] = old_value
        WorkflowConfig.model_validate(record)


def _resolved(lr_decay: str) -> dict:
    return {"training": {"lr": 0.001, "warmup_epochs": 5, "lr_decay": lr_decay}}


def test_a_training_from_before_lr_decay_resumes_only_with_its_old_decay(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text(
        yaml.safe_dump({"training": {"lr": 0.001, "warmup_epochs": 5}})
    )
    assert check_output_dir(tmp_path, _resolved("cosine_to_zero")) is None
    with pytest.raises(OutputExistsError, match="training.lr_decay: 'cosine_to_zero' → "):
        check_output_dir(tmp_path, _resolved("cosine_over_run"))


def test_a_study_started_before_lr_decay_shows_the_new_default_as_a_change() -> None:
    def workflow(**training) -> WorkflowConfig:
        return WorkflowConfig.model_validate(
            {"data": {"configs": [{"path": "/p/a.json"}]}, "training": training}
        )

    started = workflow().model_dump(mode="json")
    del started["training"]["lr_decay"]
    assert changed_settings(started, workflow(lr_decay="cosine_to_zero")) == []
    changed = changed_settings(started, workflow(lr_decay="cosine_over_run"))
    assert [str(c) for c in changed] == ["training.lr_decay: 'cosine_to_zero' → 'cosine_over_run'"]
