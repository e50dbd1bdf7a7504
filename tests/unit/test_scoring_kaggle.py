"""octopi's scorer against the CZII competition's published metric, written out independently.

Source: the metric of the Kaggle competition "CZII - CryoET Object Identification",
https://www.kaggle.com/code/metric/czi-cryoet-84969 (``score(solution, submission,
distance_multiplier, beta)``). What it does, and :func:`kaggle_score` below re-implements:

- the classes scored are those that occur in the solution (ground truth) of any experiment;
  the experiments scored are those of the solution, and picks in other experiments are dropped;
- per experiment and class, TP = ground-truth particles with a pick within
  ``distance_multiplier * radius`` (inclusive), FP = picks - TP, FN = particles - TP; an
  experiment without particles of a class turns all its picks of that class into FP;
- TP, FP and FN are summed over experiments per class (micro), then precision, recall and
  F-beta per class (0 where a denominator is 0);
- the score is ``sum(weight[c] * F[c] for c in scored classes) / sum(weights.values())``: every
  weight of the competition (apo-ferritin 1, beta-amylase 0, beta-galactosidase 2, ribosome 1,
  thyroglobulin 2, virus-like-particle 1; 7 in all) is in the denominator, whether or not the class
  has ground truth or picks. A class without ground truth anywhere therefore adds 0 over 7.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from octopi.evaluation.scoring import CZII_CLASS_WEIGHTS, score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_scoring import CZII_RADII_ANGSTROM  # noqa: E402

Rows = list[tuple[str, str, float, float, float]]  # (experiment, class, x, y, z) in Å


def kaggle_score(
    solution: Rows, submission: Rows, distance_multiplier: float = 0.5, beta: float = 4.0
) -> float:
    """The competition's formula, from the description above (brute-force distances)."""
    experiments = sorted({row[0] for row in solution})
    classes = sorted({row[1] for row in solution})
    totals = {name: [0, 0, 0] for name in classes}  # TP, FP, FN
    for experiment in experiments:
        for name in classes:
            truth = [row[2:] for row in solution if row[:2] == (experiment, name)]
            picks = [row[2:] for row in submission if row[:2] == (experiment, name)]
            hit_distance = distance_multiplier * CZII_RADII_ANGSTROM[name]
            matched = {
                index
                for pick in picks
                for index, particle in enumerate(truth)
                if math.dist(pick, particle) <= hit_distance
            }
            totals[name][0] += len(matched)
            totals[name][1] += len(picks) - len(matched)
            totals[name][2] += len(truth) - len(matched)
    weighted = 0.0
    for name, (tp, fp, fn) in totals.items():
        precision = tp / (tp + fp) if tp + fp > 0 else 0.0
        recall = tp / (tp + fn) if tp + fn > 0 else 0.0
        b2 = beta * beta
        denominator = b2 * precision + recall
        f_beta = (1 + b2) * precision * recall / denominator if denominator > 0 else 0.0
        weighted += f_beta * CZII_CLASS_WEIGHTS.get(name, 1.0)
    return weighted / sum(CZII_CLASS_WEIGHTS.values())


def as_octopi(rows: Rows, experiments: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Rows → run → class → (N, 3) Å, with every run of ``experiments`` present."""
    out: dict[str, dict[str, list]] = {run: {} for run in experiments}
    for experiment, name, *xyz in rows:
        out.setdefault(experiment, {}).setdefault(name, []).append(xyz)
    return {
        run: {name: np.asarray(points, dtype=np.float64) for name, points in classes.items()}
        for run, classes in out.items()
    }


def constructed_case() -> tuple[Rows, Rows]:
    """Three runs; a class with no ground truth anywhere but picks (virus-like-particle), a
    class with ground truth and no picks (thyroglobulin), a weight-0 class with hits
    (beta-amylase), a class whose particles are in some runs only with picks in a run without
    them (beta-galactosidase), duplicates on one particle and misses."""
    solution: Rows = [
        ("TS_1", "apo-ferritin", 100.0, 100.0, 100.0),
        ("TS_1", "apo-ferritin", 900.0, 100.0, 100.0),
        ("TS_2", "apo-ferritin", 500.0, 500.0, 500.0),
        ("TS_1", "ribosome", 2000.0, 2000.0, 300.0),
        ("TS_2", "ribosome", 3000.0, 1000.0, 300.0),
        ("TS_2", "beta-galactosidase", 1500.0, 400.0, 800.0),
        ("TS_3", "beta-galactosidase", 200.0, 2500.0, 600.0),
        ("TS_3", "beta-galactosidase", 1200.0, 2500.0, 600.0),
        ("TS_3", "thyroglobulin", 4000.0, 4000.0, 400.0),
        ("TS_3", "thyroglobulin", 4500.0, 3000.0, 400.0),
        ("TS_1", "beta-amylase", 3000.0, 3000.0, 500.0),
    ]
    submission: Rows = [
        ("TS_1", "apo-ferritin", 110.0, 100.0, 100.0),  # hit (10 Å ≤ 30 Å)
        ("TS_1", "apo-ferritin", 100.0, 120.0, 100.0),  # second pick on the same particle: FP
        ("TS_2", "apo-ferritin", 540.0, 500.0, 500.0),  # 40 Å > 30 Å: miss
        ("TS_1", "ribosome", 2000.0, 2000.0, 375.0),  # exactly 75 Å: hit
        ("TS_2", "ribosome", 3000.0, 1000.0, 300.0),  # hit
        ("TS_3", "ribosome", 100.0, 100.0, 100.0),  # run with no ribosome: FP
        ("TS_1", "beta-galactosidase", 50.0, 50.0, 50.0),  # run with no beta-gal: FP
        ("TS_3", "beta-galactosidase", 210.0, 2500.0, 600.0),  # hit
        ("TS_1", "beta-amylase", 3000.0, 3000.0, 500.0),  # hit, weight 0
        ("TS_1", "virus-like-particle", 700.0, 700.0, 700.0),  # no VLP ground truth anywhere
        ("TS_2", "virus-like-particle", 800.0, 700.0, 700.0),
    ]
    return solution, submission


def octopi_score(solution: Rows, submission: Rows, **kwargs) -> float:
    experiments = sorted({row[0] for row in solution})
    report = score(
        as_octopi(submission, experiments),
        as_octopi(solution, experiments),
        CZII_RADII_ANGSTROM,
        **kwargs,
    )
    return report.weighted_fbeta


def test_constructed_case_equals_the_competition_formula():
    solution, submission = constructed_case()
    expected = kaggle_score(solution, submission)
    assert octopi_score(solution, submission) == pytest.approx(expected, rel=1e-12)
    # By hand: apo-ferritin TP 1 FP 2 FN 2; ribosome TP 2 FP 1 FN 0; beta-gal TP 1 FP 1 FN 2;
    # thyroglobulin and virus-like-particle F = 0; beta-amylase F = 1 with weight 0.
    f4 = {
        "apo-ferritin": 17 * 1 / (17 * 1 + 16 * 2 + 2),
        "ribosome": 17 * 2 / (17 * 2 + 0 + 1),
        "beta-galactosidase": 17 * 1 / (17 * 1 + 16 * 2 + 1),
    }
    by_hand = (f4["apo-ferritin"] + f4["ribosome"] + 2 * f4["beta-galactosidase"]) / 7
    assert expected == pytest.approx(by_hand, rel=1e-12)


def test_weights_of_classes_without_ground_truth_or_picks_stay_in_the_denominator():
    # Perfect picks for apo-ferritin only; no other class has particles or picks anywhere.
    solution: Rows = [("TS_1", "apo-ferritin", 100.0, 100.0, 100.0)]
    submission: Rows = [("TS_1", "apo-ferritin", 100.0, 100.0, 100.0)]
    assert kaggle_score(solution, submission) == pytest.approx(1 / 7)
    assert octopi_score(solution, submission) == pytest.approx(1 / 7)


@pytest.mark.parametrize("seed", range(12))
def test_random_cases_equal_the_competition_formula(seed):
    rng = np.random.default_rng(seed)
    names = list(CZII_RADII_ANGSTROM)
    solution: Rows = []
    submission: Rows = []
    for run in ("TS_1", "TS_2", "TS_3"):
        solution.append((run, "ribosome", *rng.uniform(0, 3000, 3)))  # every run has particles
        for name in rng.choice(names, size=int(rng.integers(0, 5)), replace=False):
            for point in rng.uniform(0, 3000, (int(rng.integers(0, 6)), 3)):
                solution.append((run, str(name), *point))
        for name in rng.choice(names, size=int(rng.integers(0, 6)), replace=False):
            truth = [row[2:] for row in solution if row[:2] == (run, name)]
            for point in truth:
                if rng.random() < 0.6:
                    jitter = rng.normal(0, 0.4 * CZII_RADII_ANGSTROM[str(name)], 3)
                    submission.append((run, str(name), *(np.asarray(point) + jitter)))
            for point in rng.uniform(0, 3000, (int(rng.integers(0, 4)), 3)):
                submission.append((run, str(name), *point))
    expected = kaggle_score(solution, submission, beta=4.0)
    assert octopi_score(solution, submission, beta=4.0) == pytest.approx(expected, rel=1e-12)


def test_a_run_without_any_particles_is_scored_unlike_the_competition():
    # The one deliberate difference: the competition drops a run that has no ground-truth
    # particles at all (it is not in the solution), so its picks cost nothing. octopi scores
    # every run it is given: its picks are false positives of their class.
    solution: Rows = [("TS_1", "ribosome", 100.0, 100.0, 100.0)]
    submission: Rows = [
        ("TS_1", "ribosome", 100.0, 100.0, 100.0),
        ("TS_empty", "ribosome", 500.0, 500.0, 500.0),
    ]
    assert kaggle_score(solution, submission) == pytest.approx(1 / 7)
    report = score(
        as_octopi(submission, ["TS_1", "TS_empty"]),
        as_octopi(solution, ["TS_1", "TS_empty"]),
        CZII_RADII_ANGSTROM,
    )
    assert report.per_class["ribosome"].false_positives == 1
    assert report.weighted_fbeta == pytest.approx((17 / 18) / 7)
