"""Segmentation losses: shapes, perfect predictions, learning a trivial batch, class weights."""

from __future__ import annotations

import pytest
import torch

from octopi.config import LossConfig
from octopi.training.losses import LOSS_NAMES, FocalTverskyLoss, build_loss, class_weights

N_CLASSES = 3


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: threads only add overhead (and stall badly on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (2, 1, 8, 8, 8) whose intensity encodes the label, labels (2, 1, 8, 8, 8)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros((2, 1, 8, 8, 8), dtype=torch.int64)
    labels[:, :, 2:5, 2:5, 2:5] = 1
    labels[:, :, 5:7, 5:7, 1:3] = 2
    images = labels.float() + 0.1 * torch.randn(labels.shape, generator=generator)
    return images, labels


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_is_a_finite_scalar_and_accepts_bf16_logits(name: str) -> None:
    loss = build_loss(LossConfig(name=name))
    _, labels = _batch()
    logits = torch.randn((2, N_CLASSES, 8, 8, 8), requires_grad=True)
    value = loss(logits.to(torch.bfloat16), labels)
    assert value.shape == () and value.dtype == torch.float32
    assert torch.isfinite(value)
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", ["tversky", "focal_tversky", "weighted_focal_tversky"])
def test_tversky_family_is_near_zero_for_a_confident_correct_prediction(name: str) -> None:
    _, labels = _batch()
    logits = 20.0 * torch.nn.functional.one_hot(labels[:, 0], N_CLASSES).movedim(-1, 1).float()
    wrong = torch.roll(logits, shifts=1, dims=1)
    loss = build_loss(LossConfig(name=name))
    assert float(loss(logits, labels)) < 0.01
    assert float(loss(wrong, labels)) > 0.5


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_a_tiny_network_learns_a_trivial_batch(name: str) -> None:
    torch.manual_seed(0)
    images, labels = _batch()
    network = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, N_CLASSES, 1)
    )
    loss_fn = build_loss(LossConfig(name=name))
    optimizer = torch.optim.Adam(network.parameters(), lr=0.02)
    with torch.no_grad():
        first = float(loss_fn(network(images), labels))
    for _ in range(80):
        optimizer.zero_grad()
        loss = loss_fn(network(images), labels)
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.5 * first, (name, first, float(loss.detach()))


def test_tversky_beta_defaults_to_one_minus_alpha() -> None:
    from octopi.training.losses import tversky_beta

    assert tversky_beta(LossConfig(tversky_alpha=0.3)) == pytest.approx(0.7)
    assert tversky_beta(LossConfig(tversky_alpha=0.3, tversky_beta=0.4)) == 0.4


@pytest.mark.parametrize("gamma", [1.0, 2.0, 4.0 / 3.0])
def test_focal_tversky_agrees_with_monais_tversky_index(gamma: float) -> None:
    """MONAI computes the per-class Tversky loss 1 - TI_c (background included, counts
    summed over the batch); ours must be the mean over classes of that to the power 1/gamma
    (gamma 1: MONAI's Tversky loss itself)."""
    from monai.losses import TverskyLoss

    logits = torch.randn((2, 3, 6, 6, 6), generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 3, (2, 1, 6, 6, 6), generator=torch.Generator().manual_seed(2))
    alpha, beta = 0.3, 0.7
    monai_per_class = TverskyLoss(
        include_background=True, to_onehot_y=True, softmax=True, alpha=alpha, beta=beta,
        batch=True, reduction="none", smooth_nr=1e-5, smooth_dr=1e-5,
    )(logits, labels).flatten()  # fmt: skip
    assert monai_per_class.numel() == 3
    expected = (monai_per_class ** (1.0 / gamma)).mean()
    got = FocalTverskyLoss(alpha, beta, gamma)(logits, labels)
    assert torch.allclose(got, expected, atol=1e-6), (got, expected)


def test_class_weights_are_inverse_frequency_averaging_one() -> None:
    weights = class_weights(torch.tensor([900.0, 90.0, 10.0]))
    assert weights.mean() == pytest.approx(1.0)
    assert weights[2] / weights[1] == pytest.approx(9.0)
    assert weights[1] / weights[0] == pytest.approx(10.0)
    # An absent class gets the smallest weight of the present ones (the background's).
    with_absent = class_weights(torch.tensor([900.0, 0.0, 10.0]))
    assert with_absent[1] == pytest.approx(with_absent[0].item())
    assert class_weights(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]


def test_weighted_ce_matches_a_hand_computed_weighted_mean() -> None:
    """Against the definition: sum_v w(y_v) * -log softmax(x_v)[y_v] / sum_v w(y_v)."""
    _, labels = _batch()
    logits = torch.randn((2, N_CLASSES, 8, 8, 8), generator=torch.Generator().manual_seed(1))
    loss = build_loss(LossConfig(name="weighted_ce", ce_foreground_weight=50.0))
    log_p = torch.log_softmax(logits.double(), dim=1)
    y = labels[:, 0]
    per_voxel = -log_p.gather(1, y[:, None])[:, 0]
    w = torch.where(y == 0, 1.0, 50.0).double()
    expected = float((w * per_voxel).sum() / w.sum())
    assert float(loss(logits, labels)) == pytest.approx(expected, rel=1e-5)
    # Weight 1 is plain cross-entropy; more weight on particles raises the loss of a model
    # that misses them (here: always predicts background).
    background_only = torch.zeros_like(logits)
    background_only[:, 0] = 5.0
    plain = build_loss(LossConfig(name="weighted_ce", ce_foreground_weight=1.0))
    assert float(plain(logits, labels)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5
    )
    assert float(loss(background_only, labels)) > 2 * float(plain(background_only, labels))


def test_tversky_ce_is_the_sum_of_its_parts() -> None:
    _, labels = _batch()
    logits = torch.randn((2, N_CLASSES, 8, 8, 8), generator=torch.Generator().manual_seed(2))
    settings = {"tversky_alpha": 0.4, "ce_foreground_weight": 8.0}
    both = build_loss(LossConfig(name="tversky_ce", **settings))
    tversky = build_loss(LossConfig(name="tversky", **settings))
    ce = build_loss(LossConfig(name="weighted_ce", **settings))
    assert float(both(logits, labels)) == pytest.approx(
        float(tversky(logits, labels)) + float(ce(logits, labels)), rel=1e-6
    )


def test_balanced_ce_weighs_each_particle_class_by_its_inverse_voxel_count() -> None:
    """Class 1 has 10 voxels, class 2 has 90, class 3 none: the particle weights are 32 times
    the inverse-frequency weights of (10, 90, 0) (class 3 gets the smallest present one)."""
    labels = torch.zeros((1, 1, 10, 10, 10), dtype=torch.long)
    labels.view(-1)[:10] = 1
    labels.view(-1)[10:100] = 2
    logits = torch.randn((1, 4, 10, 10, 10), generator=torch.Generator().manual_seed(3))
    settings = {"ce_foreground_weight": 32.0}
    both = build_loss(LossConfig(name="tversky_balanced_ce", ce_class_balance=1.0, **settings))
    tversky = build_loss(LossConfig(name="tversky", **settings))
    particle = 32.0 * class_weights(torch.tensor([10.0, 90.0, 0.0]))
    assert float(particle[0] / particle[1]) == pytest.approx(9.0)
    weight = torch.cat([torch.ones(1), particle])
    expected = float(tversky(logits, labels)) + float(
        torch.nn.functional.cross_entropy(logits, labels[:, 0], weight=weight)
    )
    assert float(both(logits, labels)) == pytest.approx(expected, rel=1e-5)
    # Balance 0.5: the square roots of the weights, scaled to mean 1 (a ratio of 3, not 9).
    half = build_loss(LossConfig(name="tversky_balanced_ce", ce_class_balance=0.5, **settings))
    root = class_weights(torch.tensor([10.0, 90.0, 0.0])) ** 0.5
    weight = torch.cat([torch.ones(1), 32.0 * root * (3 / root.sum())])
    expected = float(tversky(logits, labels)) + float(
        torch.nn.functional.cross_entropy(logits, labels[:, 0], weight=weight)
    )
    assert float(root[0] / root[1]) == pytest.approx(3.0)
    assert float(half(logits, labels)) == pytest.approx(expected, rel=1e-5)
    # Equal counts: the same as tversky_ce.
    equal = torch.zeros_like(labels)
    equal.view(-1)[:30] = torch.arange(30) % 3 + 1
    plain = build_loss(LossConfig(name="tversky_ce", **settings))
    assert float(both(logits, equal)) == pytest.approx(float(plain(logits, equal)), rel=1e-5)
