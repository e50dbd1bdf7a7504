"""Search spaces: every family's objective under FixedTrial, overrides, the memory bound."""

from __future__ import annotations

from typing import get_args

import optuna
import pytest
from optuna.trial import FixedTrial

from octopi.config import (
    MODEL_TYPES,
    CopickSource,
    DataConfig,
    LossName,
    TrainingConfig,
    WorkflowConfig,
)
from octopi.models import training_memory
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import build_model
from octopi.models.search_spaces import SEARCH_SPACE, parse_overrides, search_space_table
from octopi.models.training_memory import estimate_training_bytes, largest_batch
from octopi.models.trial_sampling import suggest

BASE = WorkflowConfig(
    data=DataConfig(configs=[CopickSource(path="project/copick.json")]),
    training=TrainingConfig(num_epochs=7, val_interval=7, ncache_tomos=3, seed=5, amp="off"),
)
COMMON = {
    "lr": 5e-4,
    "weight_decay": 1e-3,
    "batch_size": 4,
    "dim_in": 48,
    "loss": "focal_tversky",
    "tversky_alpha": 0.4,
    "focal_gamma": 1.5,
    "augmentation_strength": 0.5,
}
FAMILY = {
    "Unet": {
        "num_layers": 3,
        "hidden_layers": 1,
        "base_channel": 8,
        "num_res_units": 2,
        "dropout": 0.1,
    },
    "AttentionUnet": {"num_layers": 4, "hidden_layers": 2, "base_channel": 8, "dropout": 0.0},
    "SegResNet": {"init_filters": 8, "blocks_down": "1-2-2", "dropout": 0.2},
    "MedNeXt": {"init_filters": 8, "expansion_ratio": 2, "kernel_size": 3, "depth": "deep"},
    "DynUNet": {"num_layers": 4, "base_filters": 16, "res_block": True, "dropout": 0.1},
    "SwinUNETR": {
        "feature_size": 12,
        "depths": "2-2-6-2",
        "window_size": 4,
        "use_v2": True,
        "dropout": 0.1,
    },
}
CLASSES = [ClassInfo(name="ribosome", label=1, radius_angstrom=150.0)]


def fixed(model_type: str, **changes) -> FixedTrial:
    return FixedTrial({**COMMON, **FAMILY[model_type], **changes})


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_fixed_trial_builds_a_valid_model(model_type: str) -> None:
    import torch

    architecture, training = suggest(fixed(model_type), model_type, BASE, None)
    assert architecture.model_type == model_type
    assert training.dim_in % architecture.downsampling_factor() == 0
    card = ModelCard(
        architecture=architecture,
        dim_in=training.dim_in,
        classes=CLASSES,
        voxel_size_angstrom=10.0,
        tomo_algorithms=["wbp"],
    )
    model = build_model(card)
    with torch.device("meta"):
        output = model.to("meta")(torch.empty(1, 1, *(training.dim_in,) * 3))
    output = output[0] if isinstance(output, list | tuple) else output
    assert tuple(output.shape) == (1, 2, *(training.dim_in,) * 3)


def test_sampled_values_and_base_settings_reach_the_training_config() -> None:
    architecture, training = suggest(fixed("Unet"), "unet", BASE, None)
    assert architecture.channels == [8, 16, 32, 32]
    assert architecture.strides == [2, 2, 1]
    assert architecture.num_res_units == 2
    assert (training.lr, training.weight_decay, training.batch_size) == (5e-4, 1e-3, 4)
    assert training.loss.name == "focal_tversky"
    assert (training.loss.tversky_alpha, training.loss.focal_gamma) == (0.4, 1.5)
    assert training.augmentation.flip_probability == pytest.approx(0.25)
    assert training.augmentation.intensity_scale == pytest.approx(0.05)
    for name in ("num_epochs", "val_interval", "ncache_tomos", "seed", "amp", "best_metric"):
        assert getattr(training, name) == getattr(BASE.training, name)


@pytest.mark.parametrize(
    ("loss", "drawn"),
    [
        ("tversky", {"tversky_alpha"}),
        ("focal", {"focal_gamma"}),
        ("dice_ce", set()),
        ("weighted_focal_tversky", {"tversky_alpha", "focal_gamma"}),
        ("weighted_ce", {"ce_foreground_weight"}),
        ("tversky_ce", {"tversky_alpha", "ce_foreground_weight"}),
        ("tversky_balanced_ce", {"tversky_alpha", "ce_foreground_weight", "ce_class_balance"}),
    ],
)
def test_loss_parameters_are_conditional(loss: str, drawn: set[str]) -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    suggest(trial, "Unet", BASE, None, overrides={"loss": loss, "dim_in": 32, "batch_size": 2})
    conditional = {"tversky_alpha", "focal_gamma", "ce_foreground_weight", "ce_class_balance"}
    assert conditional & set(trial.params) == drawn


def test_a_study_searches_every_loss_unless_it_names_some() -> None:
    loss = next(p for p in SEARCH_SPACE["all"] if p.name == "loss")
    assert set(loss.choices) == set(get_args(LossName))
    assert "tversky_balanced_ce" in loss.choices
    named = parse_overrides("Unet", {"loss": ["tversky_ce", "tversky_balanced_ce"]})
    assert named["loss"].choices == ("tversky_ce", "tversky_balanced_ce")


def test_a_study_keeps_the_categorical_choices_it_started_with(caplog) -> None:
    """An octopi release that grows a default list of choices (a family, a loss) must not stop
    the studies started before it: Optuna refuses changed choices within a study, so the later
    trials draw from the choices of the first."""
    from octopi.models.search_spaces import Param
    from octopi.models.trial_sampling import _draw

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    before = Param("loss", "categorical", choices=("tversky", "dice_ce"))
    grown = Param("loss", "categorical", choices=("tversky", "dice_ce", "tversky_balanced_ce"))
    first = study.ask()
    _draw(first, before)
    study.tell(first, 0.5)
    with pytest.raises(ValueError, match="dynamic value space"):  # what the guard avoids
        study.ask().suggest_categorical("loss", list(grown.choices))
    drawn = set()
    for _ in range(8):
        trial = study.ask()
        drawn.add(_draw(trial, grown))
        assert list(trial.distributions["loss"].choices) == ["tversky", "dice_ce"]
        study.tell(trial, 0.5)
    assert drawn <= {"tversky", "dice_ce"}
    assert "keeps them" in caplog.text and "tversky_balanced_ce" in caplog.text
    # A new study searches the grown list; a FixedTrial (no study) takes the choices given.
    fresh = optuna.create_study().ask()
    _draw(fresh, grown)
    assert len(fresh.distributions["loss"].choices) == 3
    assert _draw(FixedTrial({"loss": "tversky_balanced_ce"}), grown) == "tversky_balanced_ce"


def test_a_resumed_trial_gets_the_same_configs() -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=3))
    first = study.ask()
    configs = suggest(first, "SegResNet", BASE, None)
    again = suggest(FixedTrial(first.params), "SegResNet", BASE, None)
    assert again == configs


def test_memory_bound_shrinks_the_batch_and_records_it() -> None:
    trial = fixed("Unet", dim_in=160, batch_size=48, base_channel=32)
    gibibyte = 2**30
    _, training = suggest(trial, "Unet", BASE, 16 * gibibyte)
    record = trial.user_attrs["batch_size_adjusted"]
    assert record["drawn"] == 48
    assert 1 <= training.batch_size == record["used"] < 48
    architecture, _ = suggest(fixed("Unet", dim_in=160, base_channel=32), "Unet", BASE, None)
    fits = estimate_training_bytes(architecture, 160, training.batch_size)
    too_many = estimate_training_bytes(architecture, 160, training.batch_size + 1)
    budget = training_memory.MEMORY_FRACTION * 16 * gibibyte
    assert fits <= budget < too_many


def test_memory_bound_keeps_one_crop_when_nothing_fits() -> None:
    trial = fixed("Unet", dim_in=160, batch_size=8)
    _, training = suggest(trial, "Unet", BASE, 2**20)  # 1 MiB
    assert training.batch_size == 1
    assert trial.user_attrs["batch_size_adjusted"]["why"].startswith("one crop alone")


def test_no_adjustment_when_the_batch_fits() -> None:
    trial = fixed("Unet", dim_in=48, batch_size=4)
    _, training = suggest(trial, "Unet", BASE, 80 * 2**30)
    assert training.batch_size == 4 and "batch_size_adjusted" not in trial.user_attrs


def test_memory_estimate_is_linear_in_batch_and_matches_the_calibration() -> None:
    from octopi.config import UnetConfig

    default = UnetConfig()
    one = estimate_training_bytes(default, 64, 1)
    two = estimate_training_bytes(default, 64, 2)
    params = estimate_training_bytes(default, 64, 0)
    assert two - one == one - params > 0
    # Calibration (training_memory): 375.2 saved bytes per voxel for the default UNet at 64³.
    saved_per_voxel = (one - params) / training_memory.ACTIVATION_OVERHEAD / 64**3
    assert saved_per_voxel == pytest.approx(375.2, rel=0.01)
    assert largest_batch(default, 64, 80 * 2**30) > 16


def test_crop_is_rounded_up_to_the_downsampling() -> None:
    trial = fixed("MedNeXt", dim_in=40)  # deep MedNeXt downsamples 16×
    _, training = suggest(trial, "MedNeXt", BASE, None, overrides={"dim_in": [40, 64]})
    assert training.dim_in == 48
    assert trial.user_attrs["dim_in_adjusted"] == {
        "drawn": 40,
        "used": 48,
        "why": "a multiple of 16 is needed",
    }


def test_overrides_fix_values_and_narrow_ranges() -> None:
    space = parse_overrides(
        "unet", {"dim_in": 32, "batch_size": [2, 4], "lr": [1e-4, 2e-4], "num_layers": 2}
    )
    assert space["dim_in"].choices == (32,)
    assert space["batch_size"].choices == (2, 4)
    assert (space["lr"].low, space["lr"].high, space["lr"].log) == (1e-4, 2e-4, True)
    assert (space["num_layers"].low, space["num_layers"].high) == (2, 2)
    from_yaml = parse_overrides("unet", {"lr": ["1e-4", "2e-4"]})  # YAML 1.1 reads 1e-4 as text
    assert (from_yaml["lr"].low, from_yaml["lr"].high) == (1e-4, 2e-4)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    architecture, training = suggest(
        trial, "Unet", BASE, None, overrides={"dim_in": 32, "num_layers": 2, "base_channel": 4}
    )
    assert training.dim_in == 32 and architecture.channels[:2] == [4, 8]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"channels": [8]}, "not a parameter of Unet"),
        ({"lr": [1e-3, 1e-4]}, "low ≤ high"),
        ({"lr": {"low": 0, "high": 1e-3}}, "log-scaled range needs low > 0"),
        ({"num_layers": [2.5, 3]}, "takes integers"),
        ({"dropout": "a lot"}, "give a number"),
    ],
)
def test_bad_overrides_say_what_is_wrong(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_overrides("Unet", overrides)


def test_unknown_model_type() -> None:
    with pytest.raises(ValueError, match="unknown model type 'VNet'"):
        suggest(fixed("Unet"), "VNet", BASE, None)


def test_table_documents_every_parameter() -> None:
    table = search_space_table()
    for params in SEARCH_SPACE.values():
        for param in params:
            assert f"`{param.name}`" in table
    assert "0.0001 … 0.003, log" in table
    assert "{48, 64, 80, 96, 128, 160}" in table


def test_new_families_draw_the_published_architectures() -> None:
    dynunet, training = suggest(
        fixed("DynUNet", num_layers=5, base_filters=32), "dynunet", BASE, None
    )
    assert dynunet.filters == [32, 64, 128, 256, 320]
    assert dynunet.strides == [1, 2, 2, 2, 2] and training.dim_in == 48
    swin, training = suggest(fixed("SwinUNETR"), "swinunetr", BASE, None)
    assert (swin.feature_size, swin.depths, swin.window_size, swin.use_v2) == (
        12,
        [2, 2, 6, 2],
        4,
        True,
    )
    assert training.dim_in == 64  # 48 rounded up to SwinUNETR's multiple of 32


def test_swin_unetr_crops_are_at_least_64() -> None:
    trial = fixed("SwinUNETR", dim_in=32)
    _, training = suggest(trial, "SwinUNETR", BASE, None, overrides={"dim_in": 32})
    assert training.dim_in == 64
    assert trial.user_attrs["dim_in_adjusted"]["used"] == 64
