"""Tests for octopi.evaluation.scoring: hit counting, F-beta and the CZII weighted score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from octopi.evaluation.scoring import (
    CZII_CLASS_WEIGHTS,
    ClassCounts,
    ScoreReport,
    match_points,
    parse_metric_name,
    score,
)

CZII_RADII_ANGSTROM = {
    "apo-ferritin": 60.0,
    "beta-amylase": 65.0,
    "beta-galactosidase": 90.0,
    "ribosome": 150.0,
    "thyroglobulin": 130.0,
    "virus-like-particle": 135.0,
}
EMPTY = np.zeros((0, 3))


def _brute_force_counts(pred: np.ndarray, truth: np.ndarray, hit: float) -> ClassCounts:
    """O(N*M) reference: TP = ground-truth points with any prediction within ``hit``."""
    if len(pred) == 0 or len(truth) == 0:
        return ClassCounts(len(pred), len(truth), 0)
    distances = np.sqrt(((pred[:, None, :] - truth[None, :, :]) ** 2).sum(axis=-1))
    tp = int((distances <= hit).any(axis=0).sum())
    return ClassCounts(len(pred), len(truth), min(tp, len(pred)))


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("origin", [0.0, 529.3, 1234.1, 6299.7])
def test_hit_boundary_is_inclusive_and_exact(axis, origin):
    truth = np.array([[origin, origin + 10.0, origin + 20.0]])
    # 0.7 * 90 Å from 529.3 Å is one the plain KD-tree query misses by an ulp.
    for fraction, radius in [(0.5, 60.0), (0.5, 130.0), (0.3, 135.0), (0.7, 90.0)]:
        hit = fraction * radius
        at_boundary = truth.copy()
        at_boundary[0, axis] += hit
        beyond = truth.copy()
        beyond[0, axis] += hit + 1e-6
        assert match_points(at_boundary, truth, hit).true_positives == 1
        assert match_points(beyond, truth, hit).true_positives == 0


def test_boundary_through_score_uses_distance_fraction_times_radius():
    truth = {"run": {"ribosome": np.array([[100.0, 200.0, 300.0]])}}
    on_edge = {"run": {"ribosome": np.array([[100.0, 200.0, 375.0]])}}  # 0.5 * 150 Å
    past_edge = {"run": {"ribosome": np.array([[100.0, 200.0, 375.001]])}}
    radii = {"ribosome": 150.0}
    assert score(on_edge, truth, radii).per_class["ribosome"].true_positives == 1
    assert score(past_edge, truth, radii).per_class["ribosome"].true_positives == 0


def test_two_predictions_on_one_particle_are_one_tp_and_one_fp():
    truth = np.array([[0.0, 0.0, 0.0]])
    pred = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    counts = match_points(pred, truth, 5.0)
    assert (counts.true_positives, counts.false_positives, counts.false_negatives) == (1, 1, 0)


def test_one_prediction_between_two_close_particles_never_gives_negative_fp():
    truth = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0]])
    counts = match_points(np.array([[4.0, 0.0, 0.0]]), truth, 5.0)
    assert (counts.true_positives, counts.false_positives, counts.false_negatives) == (1, 0, 1)


def test_empty_predictions_and_empty_everything():
    truth = np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    none_found = match_points(EMPTY, truth, 5.0)
    assert (none_found.true_positives, none_found.false_negatives) == (0, 2)
    assert none_found.recall == 0.0 and none_found.precision == 0.0
    assert none_found.fbeta(4.0) == 0.0
    nothing = match_points(EMPTY, EMPTY, 5.0)
    assert nothing == ClassCounts(0, 0, 0)
    assert (nothing.precision, nothing.recall, nothing.fbeta(4.0), nothing.fbeta(1.0)) == (0,) * 4
    only_predictions = match_points(truth, EMPTY, 5.0)
    assert (only_predictions.false_positives, only_predictions.fbeta(4.0)) == (2, 0.0)
    # An empty list is accepted where an (N, 3) array is expected.
    assert match_points([], truth, 5.0).n_ground_truth == 2


def test_perfect_predictions_score_one_everywhere():
    rng = np.random.default_rng(3)
    truth = {
        run: {name: rng.uniform(0, 6000, (5, 3)) for name in CZII_RADII_ANGSTROM}
        for run in ("TS_5_4", "TS_69_2")
    }
    report = score(truth, truth, CZII_RADII_ANGSTROM)
    for name in CZII_RADII_ANGSTROM:
        assert report.fbeta(name) == 1.0
    assert report.weighted_fbeta == 1.0
    assert report.avg_f1 == 1.0
    assert report.metric("fBeta4") == 1.0


def test_fbeta_formula_and_czii_weighted_mean_by_hand():
    counts = ClassCounts(n_predicted=4, n_ground_truth=5, true_positives=3)
    assert counts.precision == pytest.approx(0.75)
    assert counts.recall == pytest.approx(0.6)
    # (1 + 16) * 0.75 * 0.6 / (16 * 0.75 + 0.6)
    assert counts.fbeta(4.0) == pytest.approx(17 * 0.45 / 12.6)

    # apo-ferritin: 1 of 2 found, no FP; ribosome: all found; beta-amylase (weight 0): nothing.
    truth = {
        "run": {
            "apo-ferritin": np.array([[0.0, 0.0, 0.0], [1000.0, 0.0, 0.0]]),
            "ribosome": np.array([[0.0, 1000.0, 0.0]]),
            "beta-amylase": np.array([[0.0, 0.0, 1000.0]]),
        }
    }
    picks = {
        "run": {
            "apo-ferritin": np.array([[0.0, 0.0, 10.0]]),
            "ribosome": np.array([[0.0, 1000.0, 0.0]]),
        }
    }
    radii = {
        name: CZII_RADII_ANGSTROM[name] for name in ("apo-ferritin", "ribosome", "beta-amylase")
    }
    report = score(picks, truth, radii)
    f_apo = 17 * 1.0 * 0.5 / (16 * 1.0 + 0.5)  # precision 1, recall 0.5
    assert report.fbeta("apo-ferritin") == pytest.approx(f_apo)
    assert report.fbeta("ribosome") == 1.0
    assert report.fbeta("beta-amylase") == 0.0
    # Weights: apo-ferritin 1, ribosome 1, beta-amylase 0.
    assert report.weighted_fbeta == pytest.approx((f_apo + 1.0) / 2)
    assert report.avg_f1 == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_class_weights_default_missing_and_all_zero():
    counts = {"a": ClassCounts(1, 1, 1), "b": ClassCounts(1, 1, 0)}
    default = ScoreReport(per_class=counts, per_run={}, beta=4.0, class_weights={"a": 3.0})
    assert default.weighted_fbeta == pytest.approx(3.0 / 4.0)  # "b" counts with weight 1
    zero = ScoreReport(per_class=counts, per_run={}, beta=4.0, class_weights={"a": 0, "b": 0})
    assert zero.weighted_fbeta == 0.0
    report = score({}, {"r": {}}, {"apo-ferritin": 60.0, "my-protein": 80.0})
    assert report.class_weights == {"apo-ferritin": 1.0, "my-protein": 1.0}
    custom = score({}, {"r": {}}, {"ribosome": 150.0}, class_weights={"ribosome": 5.0})
    assert custom.class_weights == {"ribosome": 5.0}
    assert CZII_CLASS_WEIGHTS["beta-amylase"] == 0


def test_counts_are_summed_over_runs_before_fbeta():
    truth = {
        "run1": {"ribosome": np.array([[0.0, 0.0, 0.0]])},
        "run2": {"ribosome": np.array([[0.0, 0.0, 0.0], [500.0, 0.0, 0.0], [1000.0, 0.0, 0.0]])},
    }
    picks = {
        "run1": {"ribosome": np.array([[0.0, 0.0, 0.0]])},
        "run2": {"ribosome": np.array([[2000.0, 0.0, 0.0]])},
    }
    report = score(picks, truth, {"ribosome": 150.0}, beta=1.0)
    assert report.per_run["run1"]["ribosome"] == ClassCounts(1, 1, 1)
    assert report.per_run["run2"]["ribosome"] == ClassCounts(1, 3, 0)
    assert report.per_class["ribosome"] == ClassCounts(2, 4, 1)
    # From summed counts: precision 1/2, recall 1/4 -> F1 = 1/3; the mean of per-run F1 is 1/2.
    assert report.fbeta("ribosome") == pytest.approx(1 / 3)
    assert ClassCounts(1, 1, 1) + ClassCounts(1, 3, 0) == ClassCounts(2, 4, 1)


def test_runs_missing_from_picks_count_as_no_predictions():
    truth = {"a": {"ribosome": np.array([[0.0, 0.0, 0.0]])}, "b": {}}
    report = score({"b": {}}, truth, {"ribosome": 150.0})
    assert report.per_class["ribosome"] == ClassCounts(0, 1, 0)
    assert set(report.per_run) == {"a", "b"}


def test_metric_names():
    assert parse_metric_name("avg_f1") == ("avg_f1", 1.0)
    assert parse_metric_name("fBeta4") == ("fbeta", 4.0)
    assert parse_metric_name("fbeta1.5") == ("fbeta", 1.5)
    counts = {"x": ClassCounts(4, 5, 3)}
    report = ScoreReport(per_class=counts, per_run={}, beta=4.0, class_weights={})
    assert report.metric("fBeta4") == pytest.approx(report.weighted_fbeta)
    assert report.metric("fBeta1") == pytest.approx(counts["x"].fbeta(1.0))
    assert report.metric("fBeta2") == pytest.approx(counts["x"].fbeta(2.0))
    assert report.metric("avg_f1") == pytest.approx(report.avg_f1)
    for bad in ("f1", "fBeta", "fBeta0", "fBeta-1", "accuracy", "fBeta4x"):
        with pytest.raises(ValueError, match="avg_f1"):
            parse_metric_name(bad)
        with pytest.raises(ValueError, match="fBeta"):
            report.metric(bad)


def test_unknown_run_and_unknown_class_are_errors():
    truth = {"TS_5_4": {"ribosome": np.array([[0.0, 0.0, 0.0]])}}
    with pytest.raises(ValueError, match="TS_99"):
        score({"TS_99": {}}, truth, {"ribosome": 150.0})
    with pytest.raises(ValueError, match=r"'membrane'.*ribosome"):
        score({"TS_5_4": {"membrane": np.array([[1.0, 2.0, 3.0]])}}, truth, {"ribosome": 150.0})
    with pytest.raises(ValueError, match="membrane"):
        score({}, {"TS_5_4": {"membrane": np.array([[1.0, 2.0, 3.0]])}}, {"ribosome": 150.0})
    # An empty array of an unscored class carries no positions and is accepted.
    score({"TS_5_4": {"membrane": EMPTY}}, truth, {"ribosome": 150.0})


def test_bad_shapes_and_values_are_errors():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        match_points(np.zeros((2, 2)), np.zeros((1, 3)), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        match_points(np.array([[np.nan, 0, 0]]), np.zeros((1, 3)), 1.0)
    with pytest.raises(ValueError, match="hit_distance"):
        match_points(np.zeros((1, 3)), np.zeros((1, 3)), -1.0)
    with pytest.raises(ValueError, match="radius"):
        score({}, {}, {"ribosome": 0.0})
    with pytest.raises(ValueError, match="beta"):
        ClassCounts(1, 1, 1).fbeta(0.0)


def test_matches_brute_force_on_random_points():
    rng = np.random.default_rng(42)
    for trial in range(200):
        n_pred, n_truth = rng.integers(0, 40, size=2)
        box = rng.choice([50.0, 200.0, 2000.0])
        pred = rng.uniform(0, box, (n_pred, 3))
        truth = rng.uniform(0, box, (n_truth, 3))
        if trial % 4 == 0 and n_pred and n_truth:
            # Duplicates and near-duplicates exercise the one-particle-many-picks rule.
            pred[: n_pred // 2] = truth[rng.integers(0, n_truth, n_pred // 2)] + rng.normal(
                0, 3, (n_pred // 2, 3)
            )
        hit = float(rng.uniform(1.0, 40.0))
        assert match_points(pred, truth, hit) == _brute_force_counts(pred, truth, hit), trial


def test_report_dict_and_table():
    truth = {"r1": {"ribosome": np.array([[0.0, 0.0, 0.0]]), "thyroglobulin": EMPTY}}
    picks = {"r1": {"ribosome": np.array([[10.0, 0.0, 0.0], [900.0, 0.0, 0.0]])}}
    report = score(picks, truth, {"ribosome": 150.0, "thyroglobulin": 130.0})
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["beta"] == 4.0 and as_dict["distance_fraction"] == 0.5
    assert as_dict["weighted_fbeta"] == pytest.approx(report.weighted_fbeta)
    row = as_dict["per_class"]["ribosome"]
    assert (row["true_positives"], row["false_positives"], row["weight"]) == (1, 1, 1.0)
    assert as_dict["per_run"]["r1"]["thyroglobulin"]["n_ground_truth"] == 0
    table = report.format_table()
    lines = table.splitlines()
    assert lines[0].split() == [
        "class", "weight", "GT", "pred", "TP", "FP", "FN", "prec", "recall", "F4",
    ]  # fmt: skip
    assert any(line.startswith("ribosome") for line in lines)
    assert "weighted F4" in lines[-1]
    assert len({len(line) for line in lines[:-1]}) == 1  # fixed width
