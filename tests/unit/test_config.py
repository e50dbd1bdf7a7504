"""Config models: defaults from the reference guide, parsing, validation and the JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from octopi.config import (
    CopickSource,
    DataConfig,
    LocalizeConfig,
    LossConfig,
    PickSpec,
    SearchConfig,
    TargetsConfig,
    TargetSpec,
    TrainingConfig,
    UnetConfig,
    WorkflowConfig,
    canonical_model_type,
    workflow_json_schema,
)
from octopi.errors import InputError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.json"


def data_config(**overrides) -> DataConfig:
    return DataConfig(configs=[CopickSource(path=Path("copick.json"))], **overrides)


# --------------------------------------------------------------------------- defaults


def test_data_defaults_match_the_reference_guide() -> None:
    data = data_config()
    assert data.voxel_size_angstrom == 10.0
    assert str(data.target) == "targets,octopi,1"
    assert data.tomo_algorithms == ["wbp"]
    assert data.data_split == [0.8]
    assert data.train_run_ids is None and data.validate_run_ids is None


def test_training_defaults_match_the_reference_guide() -> None:
    training = TrainingConfig()
    assert training.num_epochs == 1000
    assert training.val_interval == 10
    assert training.batch_size == 16
    assert training.lr == 0.001
    assert training.best_metric == "avg_f1"
    assert training.ncache_tomos == 15
    assert training.background_ratio == 0.0
    assert training.dim_in == 96
    assert training.loss.tversky_alpha == 0.3
    assert LossConfig().tversky_alpha == 0.3


def test_unet_defaults_match_the_reference_guide() -> None:
    unet = UnetConfig()
    assert unet.model_type == "Unet"
    assert unet.channels == [32, 64, 96, 96]
    assert unet.strides == [2, 2, 1]
    assert unet.num_res_units == 1
    assert unet.downsampling_factor() == 4


def test_search_defaults_match_the_reference_guide() -> None:
    search = SearchConfig()
    assert search.num_trials == 100
    assert search.random_seed == 42
    assert search.study_name == "model-search"
    assert search.model_type == "Unet"


def test_workflow_config_fills_every_section_with_defaults() -> None:
    workflow = WorkflowConfig(data=data_config())
    assert workflow.training == TrainingConfig()
    assert workflow.search == SearchConfig()
    assert workflow.create_targets is None


# --------------------------------------------------------------------------- frozen, strict


def test_models_are_frozen() -> None:
    training = TrainingConfig()
    with pytest.raises(ValidationError, match="frozen"):
        training.lr = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (TrainingConfig, {"learning_rate": 0.1}),
        (UnetConfig, {"chanels": [8, 16]}),
        (TargetSpec, {"name": "targets", "user": "me"}),
        (DataConfig, {"configs": ["copick.json"], "voxel_size": 10}),
    ],
)
def test_models_reject_unknown_keys(model, values) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model(**values)


def test_nested_unknown_key_is_rejected() -> None:
    with pytest.raises(ValidationError, match="loss.tversky_alfa"):
        TrainingConfig(loss={"tversky_alfa": 0.5})


# --------------------------------------------------------------------------- parse helpers


def test_copick_source_parse() -> None:
    assert CopickSource.parse("a/copick.json") == CopickSource(path=Path("a/copick.json"))
    source = CopickSource.parse("exp1, a/copick.json")
    assert source == CopickSource(path=Path("a/copick.json"), session_name="exp1")
    assert str(source) == "exp1,a/copick.json"


@pytest.mark.parametrize("text", [",a/copick.json", "exp1,", " , "])
def test_copick_source_parse_errors(text: str) -> None:
    with pytest.raises(InputError, match="expected 'path' or 'session_name,path'"):
        CopickSource.parse(text)


def test_an_existing_file_with_a_comma_is_a_path(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "lab,2024").mkdir()
    config = tmp_path / "lab,2024" / "copick.json"
    config.write_text("{}")
    assert CopickSource.parse(str(config)) == CopickSource(path=config)
    monkeypatch.chdir(tmp_path / "lab,2024")
    (tmp_path / "lab,2024" / "a,b.json").write_text("{}")
    assert CopickSource.parse("a,b.json") == CopickSource(path=Path("a,b.json"))
    # Not an existing file: session name and path, as before.
    assert CopickSource.parse("a,c.json") == CopickSource(path=Path("c.json"), session_name="a")


def test_target_spec_parse() -> None:
    assert TargetSpec.parse("ribosomes") == TargetSpec(
        name="ribosomes", user_id="octopi", session_id="1"
    )
    spec = TargetSpec.parse("labels, me, 7")
    assert (spec.name, spec.user_id, spec.session_id) == ("labels", "me", "7")
    assert str(spec) == "labels,me,7"


@pytest.mark.parametrize("text", ["", "a,b", "a,b,c,d", "a,,c"])
def test_target_spec_parse_errors(text: str) -> None:
    with pytest.raises(ValueError, match="expected 'name' or 'name,user_id,session_id'"):
        TargetSpec.parse(text)


def test_pick_spec_parse() -> None:
    assert PickSpec.parse("curation, 0") == PickSpec(user_id="curation", session_id="0")


@pytest.mark.parametrize("text", ["curation", "a,b,c", "a,"])
def test_pick_spec_parse_errors(text: str) -> None:
    with pytest.raises(ValueError, match="expected 'user_id,session_id'"):
        PickSpec.parse(text)


# --------------------------------------------------------------------------- validators


@pytest.mark.parametrize("split", [[0.0], [1.0], [1.2], [-0.1], [0.5, 0.0], [0.5, 1.0]])
def test_data_split_ratios_must_lie_in_the_open_unit_interval(split) -> None:
    with pytest.raises(ValidationError, match="strictly between 0 and 1"):
        data_config(data_split=split)


@pytest.mark.parametrize("split", [[0.7, 0.3], [0.9, 0.2]])
def test_data_split_ratios_must_sum_below_one(split) -> None:
    with pytest.raises(ValidationError, match="sum to less than 1"):
        data_config(data_split=split)


def test_data_split_accepts_two_and_three_way_splits() -> None:
    assert data_config(data_split=[0.7, 0.1]).data_split == [0.7, 0.1]
    with pytest.raises(ValidationError):
        data_config(data_split=[0.5, 0.2, 0.1])


def test_channels_and_strides_lengths_must_match() -> None:
    with pytest.raises(ValidationError, match="one value fewer than --channels"):
        UnetConfig(channels=[32, 64, 96], strides=[2, 2, 1])
    assert UnetConfig(channels=[16, 32, 64], strides=[2, 2]).downsampling_factor() == 4


def test_val_interval_must_not_exceed_num_epochs() -> None:
    with pytest.raises(ValidationError, match="--val-interval 20 is larger than --num-epochs 5"):
        TrainingConfig(num_epochs=5, val_interval=20)
    assert TrainingConfig(num_epochs=5, val_interval=5).val_interval == 5


@pytest.mark.parametrize(
    "build",
    [
        lambda: TargetSpec(name="my_targets"),
        lambda: TargetSpec(user_id="oct_opi"),
        lambda: TargetSpec.parse("targets,octopi,run_1"),
        lambda: PickSpec(user_id="cur_ation"),
        lambda: PickSpec(session_id="0 1"),
    ],
)
def test_copick_names_must_not_contain_underscores(build) -> None:
    with pytest.raises(ValidationError, match="not a valid copick name"):
        build()


def test_explicit_run_ids_must_not_overlap() -> None:
    with pytest.raises(ValidationError, match="both in training and validation: TS_1"):
        data_config(train_run_ids=["TS_0", "TS_1"], validate_run_ids=["TS_1", "TS_2"])


@pytest.mark.parametrize(
    "ids",
    [{"train_run_ids": ["TS_0"]}, {"validate_run_ids": ["TS_1"]}],
)
def test_explicit_run_ids_need_both_roles(ids) -> None:
    with pytest.raises(ValidationError, match="give both --trainRunIDs and --validateRunIDs"):
        data_config(**ids)


def test_explicit_run_ids_must_not_be_empty() -> None:
    with pytest.raises(ValidationError, match="must not be empty"):
        data_config(train_run_ids=[], validate_run_ids=["TS_1"])
    data = data_config(train_run_ids=["TS_0"], validate_run_ids=["TS_1"])
    assert (data.train_run_ids, data.validate_run_ids) == (["TS_0"], ["TS_1"])


@pytest.mark.parametrize(
    "configs",
    [
        ["a/copick.json", "b/copick.json"],
        ["one,a/copick.json", "b/copick.json"],
        ["one,a/copick.json", "one,b/copick.json"],
    ],
)
def test_several_projects_need_distinct_session_names(configs) -> None:
    sources = [CopickSource.parse(text) for text in configs]
    with pytest.raises(ValidationError, match="distinct session name"):
        DataConfig(configs=sources)


def test_several_projects_with_distinct_session_names_are_accepted() -> None:
    sources = [CopickSource.parse("one,a/copick.json"), CopickSource.parse("two,b/copick.json")]
    assert [s.session_name for s in DataConfig(configs=sources).configs] == ["one", "two"]


def test_targets_config_needs_a_project() -> None:
    with pytest.raises(ValidationError, match="at least 1 item"):
        TargetsConfig(configs=[])


@pytest.mark.parametrize("metric", ["avg_f1", "fBeta4", "fBeta1", "fBeta0.5"])
def test_valid_metric_names(metric: str) -> None:
    assert TrainingConfig(best_metric=metric).best_metric == metric


@pytest.mark.parametrize("metric", ["f1", "fbeta", "fBeta", "FBeta4", "avg_f1 ", "fBeta-1"])
def test_invalid_metric_names(metric: str) -> None:
    with pytest.raises(ValidationError, match="best_metric"):
        TrainingConfig(best_metric=metric)


# --------------------------------------------------------------------------- model types


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("unet", "Unet"),
        ("UNET", "Unet"),
        ("attentionunet", "AttentionUnet"),
        ("SegResNet", "SegResNet"),
        ("mednext", "MedNeXt"),
    ],
)
def test_canonical_model_type(name: str, canonical: str) -> None:
    assert canonical_model_type(name) == canonical


def test_canonical_model_type_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown model type 'resnet'.*Unet, AttentionUnet"):
        canonical_model_type("resnet")


# --------------------------------------------------------------------------- schema


def test_committed_schema_is_fresh() -> None:
    expected = json.dumps(workflow_json_schema(), indent=2) + "\n"
    committed = SCHEMA_PATH.read_text() if SCHEMA_PATH.is_file() else ""
    assert committed == expected, (
        f"{SCHEMA_PATH} is out of date with src/octopi/config/; run `make schema` "
        "(octopi schema --output workflow/schemas/config.schema.json) and commit it"
    )


def test_schema_requires_data_and_describes_the_sections() -> None:
    schema = workflow_json_schema()
    assert schema["required"] == ["data"]
    assert {"data", "training", "search", "trial_resources"} <= set(schema["properties"])
    assert schema["$schema"].endswith("2020-12/schema")


def test_per_class_localize_settings_report_the_classes_they_name_that_are_unknown() -> None:
    settings = LocalizeConfig(
        per_class_threshold={"ribosome": 0.2, "unicron": 0.3},
        per_class_min_size_fraction={"apo-ferritin": 0.1},
        argmax_classes=["zebra", "ribosome", "unicorn"],
    )
    assert settings.unknown_class_names(["ribosome", "apo-ferritin"]) == [
        "per_class_threshold: unicron",
        "argmax_classes: unicorn, zebra",
    ]
    assert (
        settings.unknown_class_names(["ribosome", "apo-ferritin", "unicron", "unicorn", "zebra"])
        == []
    )
    assert LocalizeConfig().unknown_class_names([]) == []
