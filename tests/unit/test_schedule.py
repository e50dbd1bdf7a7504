"""Learning-rate schedule (warm-up + cosine) and the EMA of weights."""

from __future__ import annotations

import math

import pytest
import torch

from octopi.training.schedule import ModelEMA, WarmupCosineSchedule


def test_warmup_rises_linearly_then_cosine_decays_to_near_zero() -> None:
    schedule = WarmupCosineSchedule(
        base_lr=1e-3, warmup_epochs=5, num_epochs=100, decay="cosine_to_zero"
    )
    assert schedule.factor(0.0) == 0.0
    assert schedule.factor(2.5) == pytest.approx(0.5)
    assert schedule.factor(5.0) == pytest.approx(1.0)
    assert schedule.factor(52.5) == pytest.approx(0.5)  # half way through the cosine
    assert schedule.factor(100.0) == pytest.approx(0.0, abs=1e-12)
    rates = [schedule.lr(epoch, step, 10) for epoch in range(100) for step in range(10)]
    peak = rates.index(max(rates))
    assert all(a < b for a, b in zip(rates[:peak], rates[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(rates[peak:-1], rates[peak + 1 :], strict=True))
    assert rates[0] == pytest.approx(1e-5) and 0.0 < rates[-1] < 1e-8
    assert max(rates) == pytest.approx(1e-3, rel=1e-3)


def test_no_warmup_starts_at_the_base_rate() -> None:
    schedule = WarmupCosineSchedule(0.01, 0, 4, "cosine_to_zero")
    assert schedule.lr(0, 0, 1) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.5 / 4)))


def test_warmup_longer_than_training_only_warms_up() -> None:
    schedule = WarmupCosineSchedule(1.0, 10, 4, "cosine_over_run")
    assert schedule.factor(4.0) == pytest.approx(0.4)


def test_apply_sets_every_param_group() -> None:
    parameters = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": parameters[:1]}, {"params": parameters[1:]}], lr=1.0)
    rate = WarmupCosineSchedule(1.0, 2, 10, "cosine_to_zero").apply(optimizer, 0, 0, 4)
    assert rate == pytest.approx(0.0625)
    assert [group["lr"] for group in optimizer.param_groups] == [rate, rate]


def test_schedule_refuses_a_checkpoint_of_another_schedule() -> None:
    schedule = WarmupCosineSchedule(1e-3, 5, 100, "cosine_over_run")
    schedule.load_state_dict(WarmupCosineSchedule(1e-3, 5, 100, "cosine_over_run").state_dict())
    for other in (
        WarmupCosineSchedule(1e-3, 5, 50, "cosine_over_run"),
        WarmupCosineSchedule(1e-3, 5, 100, "cosine_to_zero"),
    ):
        with pytest.raises(ValueError, match="new --output"):
            schedule.load_state_dict(other.state_dict())


def test_bad_schedule_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="bad schedule"):
        WarmupCosineSchedule(0.0, 1, 10, "cosine_over_run")
    with pytest.raises(ValueError, match="decay one of cosine_over_run, cosine_to_zero"):
        WarmupCosineSchedule(1e-3, 1, 10, "linear")  # type: ignore[arg-type]


def test_cosine_over_the_run_is_the_published_tools_shape() -> None:
    """After the warm-up, a half cosine of num_epochs (octopi 1.7.0's
    CosineAnnealingLR(T_max=num_epochs)): at 20 epochs with 5 of warm-up it ends at
    0.5 (1 + cos(15 pi / 20)) and averages 0.61, against 0 and 0.50 for cosine_to_zero."""
    over_run = WarmupCosineSchedule(1e-3, 5, 20, "cosine_over_run")
    to_zero = WarmupCosineSchedule(1e-3, 5, 20, "cosine_to_zero")
    for progress in (0.0, 1.0, 2.5, 5.0):  # the same warm-up
        assert over_run.factor(progress) == to_zero.factor(progress)
    assert over_run.factor(15.0) == pytest.approx(0.5)  # 10 of the cosine's 20 epochs
    assert over_run.factor(20.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 20)))
    assert to_zero.factor(20.0) == pytest.approx(0.0, abs=1e-12)

    def mean_factor(schedule: WarmupCosineSchedule) -> float:
        return sum(schedule.factor(epoch + 0.5) for epoch in range(20)) / 20

    assert mean_factor(over_run) == pytest.approx(0.613, abs=1e-3)
    assert mean_factor(to_zero) == pytest.approx(0.500, abs=1e-3)


def test_a_checkpoint_from_before_the_decay_setting_had_cosine_to_zero() -> None:
    old_state = {"base_lr": 1e-3, "warmup_epochs": 5, "num_epochs": 20}  # no "decay" key
    WarmupCosineSchedule(1e-3, 5, 20, "cosine_to_zero").load_state_dict(old_state)
    with pytest.raises(ValueError, match="'decay': 'cosine_to_zero'"):
        WarmupCosineSchedule(1e-3, 5, 20, "cosine_over_run").load_state_dict(old_state)


def test_ema_update_math_with_the_decay_ramp() -> None:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    ema = ModelEMA(model, decay=0.99)
    assert not any(p.requires_grad for p in ema.module.parameters())
    expected = torch.ones(1, 2)
    for update in range(30):
        decay = min(0.99, (1 + update) / (10 + update))
        assert ema.current_decay() == pytest.approx(decay)
        with torch.no_grad():
            model.weight.fill_(float(update + 2))
        ema.update(model)
        expected = decay * expected + (1 - decay) * (update + 2)
        assert torch.allclose(ema.module.weight, expected, rtol=0, atol=1e-5)
    assert ema.updates == 30
    assert ema.current_decay() == pytest.approx(min(0.99, 31 / 40))


def test_ema_state_round_trip_and_integer_buffers_are_copied() -> None:
    model = torch.nn.BatchNorm1d(3)  # num_batches_tracked is an integer buffer
    ema = ModelEMA(model, decay=0.9)
    model.train()
    model(torch.randn(4, 3))
    ema.update(model)
    assert int(ema.module.num_batches_tracked) == int(model.num_batches_tracked) == 1
    other = ModelEMA(torch.nn.BatchNorm1d(3), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and other.decay == 0.9
    assert torch.equal(other.module.running_mean, ema.module.running_mean)


def test_ema_decay_must_lie_in_the_open_unit_interval() -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        ModelEMA(torch.nn.Linear(1, 1), decay=1.0)
