"""Particle-level precision, recall and F-beta, scored the way the CZII cryo-ET challenge scores.

A prediction hits a ground-truth particle when it lies within ``distance_fraction * radius``
(inclusive) of it. Per class and run, TP is the number of distinct ground-truth particles hit by
at least one prediction, FP = predictions - TP, FN = ground truth - TP. Counts are summed over
runs before precision, recall and F-beta are computed, and the final score is the class-weighted
mean of the per-class F-beta.

As in the competition's metric (https://www.kaggle.com/code/metric/czi-cryoet-84969), the weight of
every scored class is in the denominator of that mean, whether or not the class has ground truth
or picks: a class without particles anywhere scores 0 and still weighs. Scoring the six CZII
classes therefore divides by 7, the competition's ``sum(weights.values())``. Two deliberate
differences, both out of reach of the competition's data: a run without any ground-truth particle
is scored (its picks are false positives; the competition drops such a run), and a class the
weights do not name weighs 1 in the denominator too. tests/unit/test_scoring_kaggle.py checks
this against an independent implementation of the competition's formula.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from octopi.config import CZII_CLASS_WEIGHTS

__all__ = [
    "CZII_CLASS_WEIGHTS",
    "ClassCounts",
    "ScoreReport",
    "match_points",
    "parse_metric_name",
    "score",
]


_FBETA_NAME = re.compile(r"^fbeta(\d+(?:\.\d*)?|\.\d+)$", re.IGNORECASE)
_VALID_METRIC_FORMS = "'avg_f1' or 'fBeta<N>' with N > 0 (e.g. 'fBeta4', 'fBeta1.5')"


def _ratio(numerator: float, denominator: float) -> float:
    # The CZII convention: an empty denominator scores 0, never NaN.
    return numerator / denominator if denominator > 0 else 0.0


@dataclass(frozen=True)
class ClassCounts:
    """Prediction, ground-truth and true-positive counts for one class; ``+`` sums counts."""

    n_predicted: int = 0
    n_ground_truth: int = 0
    true_positives: int = 0

    def __post_init__(self) -> None:
        if min(self.n_predicted, self.n_ground_truth, self.true_positives) < 0:
            raise ValueError(f"counts must be non-negative, got {self}")
        if self.true_positives > min(self.n_predicted, self.n_ground_truth):
            raise ValueError(f"true_positives exceeds predictions or ground truth in {self}")

    def __add__(self, other: ClassCounts) -> ClassCounts:
        if not isinstance(other, ClassCounts):
            return NotImplemented
        return ClassCounts(
            self.n_predicted + other.n_predicted,
            self.n_ground_truth + other.n_ground_truth,
            self.true_positives + other.true_positives,
        )

    @property
    def false_positives(self) -> int:
        return self.n_predicted - self.true_positives

    @property
    def false_negatives(self) -> int:
        return self.n_ground_truth - self.true_positives

    @property
    def precision(self) -> float:
        return _ratio(self.true_positives, self.n_predicted)

    @property
    def recall(self) -> float:
        return _ratio(self.true_positives, self.n_ground_truth)

    def fbeta(self, beta: float) -> float:
        """F-beta from counts: (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP); 0/0 -> 0.0."""
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        b2 = beta * beta
        tp = self.true_positives
        return _ratio(
            (1 + b2) * tp, (1 + b2) * tp + b2 * self.false_negatives + self.false_positives
        )


def _as_points(points: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(points)
    if array.size == 0:
        return np.zeros((0, 3), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{what} must have shape (N, 3), got {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or infinite coordinates")
    return array


def match_points(
    predicted: np.ndarray, ground_truth: np.ndarray, hit_distance: float
) -> ClassCounts:
    """Count hits between predicted (N, 3) and ground-truth (M, 3) positions.

    Both arrays and ``hit_distance`` share units and axis order. A prediction hits a ground-truth
    point within ``hit_distance`` (inclusive). TP is the number of distinct ground-truth points
    hit, so two predictions on one particle give 1 TP + 1 FP. Empty arrays (shape (0, 3) or any
    size-0 array) are allowed on either side.
    """
    if not math.isfinite(hit_distance) or hit_distance < 0:
        raise ValueError(f"hit_distance must be a finite number >= 0, got {hit_distance}")
    pred = _as_points(predicted, "predicted")
    truth = _as_points(ground_truth, "ground_truth")
    n_pred, n_truth = len(pred), len(truth)
    if n_pred == 0 or n_truth == 0:
        return ClassCounts(n_pred, n_truth, 0)

    # Coordinates like 1234.1 + 7.5 - 1234.1 are off by a few ulps of the coordinate magnitude, so
    # the radius is widened by a few ulps of that magnitude (float32 ulps if the caller's data is
    # float32) to keep points at exactly hit_distance inclusive. A tolerance this small cannot
    # turn a genuine miss into a hit at any distance a particle picker can resolve.
    precision_dtype = np.result_type(pred.dtype, truth.dtype, np.float32)
    ulp = float(np.finfo(precision_dtype).eps)
    scale = max(hit_distance, float(np.abs(pred).max()), float(np.abs(truth).max()))
    radius = hit_distance + 8 * ulp * scale

    pred64 = pred.astype(np.float64, copy=False)
    truth64 = truth.astype(np.float64, copy=False)
    hits_per_truth = cKDTree(pred64).query_ball_point(truth64, r=radius, return_length=True)
    # The official rule lets one prediction hit two ground-truth points that lie within
    # 2 * hit_distance of each other, which could push TP above N and FP below 0; capping at N
    # keeps the counts consistent and changes nothing in any other case.
    true_positives = min(int(np.count_nonzero(hits_per_truth)), n_pred)
    return ClassCounts(n_pred, n_truth, true_positives)


def parse_metric_name(name: str) -> tuple[str, float]:
    """Parse a validation metric name: 'avg_f1' -> ('avg_f1', 1.0), 'fBeta4' -> ('fbeta', 4.0)."""
    if not isinstance(name, str):
        raise ValueError(f"metric name must be a string, got {name!r}; use {_VALID_METRIC_FORMS}")
    stripped = name.strip()
    if stripped.lower() == "avg_f1":
        return "avg_f1", 1.0
    match = _FBETA_NAME.match(stripped)
    if match:
        beta = float(match.group(1))
        if beta > 0:
            return "fbeta", beta
    raise ValueError(f"unknown metric {name!r}; use {_VALID_METRIC_FORMS}")


@dataclass(frozen=True)
class ScoreReport:
    """Counts and scores of one evaluation.

    ``per_class`` holds counts summed over runs; ``per_run`` maps run -> class -> counts.
    ``class_weights`` holds the weight used for every class in ``per_class``.
    """

    per_class: dict[str, ClassCounts]
    per_run: dict[str, dict[str, ClassCounts]]
    beta: float
    class_weights: dict[str, float] = field(default_factory=dict)
    distance_fraction: float = 0.5

    def weight(self, class_name: str) -> float:
        return float(self.class_weights.get(class_name, 1.0))

    def fbeta(self, class_name: str) -> float:
        return self.per_class[class_name].fbeta(self.beta)

    def weighted_fbeta_at(self, beta: float) -> float:
        """Class-weighted mean F-beta over every scored class, those without ground truth or
        picks included (F = 0, weight in the denominator, as in the CZII metric); classes without
        a weight count 1.0; all weights 0 -> 0.0."""
        total_weight = sum(self.weight(name) for name in self.per_class)
        if total_weight <= 0:
            return 0.0
        weighted = sum(self.weight(name) * c.fbeta(beta) for name, c in self.per_class.items())
        return weighted / total_weight

    @property
    def weighted_fbeta(self) -> float:
        return self.weighted_fbeta_at(self.beta)

    @property
    def avg_f1(self) -> float:
        """Unweighted mean over classes of F1."""
        if not self.per_class:
            return 0.0
        return sum(c.fbeta(1.0) for c in self.per_class.values()) / len(self.per_class)

    def metric(self, name: str) -> float:
        """'avg_f1' -> avg_f1; 'fBetaN' -> weighted F-beta at beta=N, whatever ``self.beta`` is."""
        kind, beta = parse_metric_name(name)
        return self.avg_f1 if kind == "avg_f1" else self.weighted_fbeta_at(beta)

    def to_dict(self) -> dict:
        """JSON-ready summary: settings, weighted score, per-class and per-run rows."""

        def row(counts: ClassCounts) -> dict:
            return {
                "n_ground_truth": counts.n_ground_truth,
                "n_predicted": counts.n_predicted,
                "true_positives": counts.true_positives,
                "false_positives": counts.false_positives,
                "false_negatives": counts.false_negatives,
                "precision": counts.precision,
                "recall": counts.recall,
                "fbeta": counts.fbeta(self.beta),
            }

        return {
            "beta": self.beta,
            "distance_fraction": self.distance_fraction,
            "weighted_fbeta": self.weighted_fbeta,
            "avg_f1": self.avg_f1,
            "per_class": {
                name: {"weight": self.weight(name), **row(counts)}
                for name, counts in self.per_class.items()
            },
            "per_run": {
                run: {name: row(counts) for name, counts in classes.items()}
                for run, classes in self.per_run.items()
            },
        }

    def format_table(self) -> str:
        """Fixed-width table, one row per class and a final weighted F-beta line."""
        beta_label = f"F{self.beta:g}"
        name_width = max([len("class"), *(len(name) for name in self.per_class)])
        header = (
            f"{'class':<{name_width}}  {'weight':>6}  {'GT':>6}  {'pred':>6}  {'TP':>6}  "
            f"{'FP':>6}  {'FN':>6}  {'prec':>6}  {'recall':>6}  {beta_label:>6}"
        )
        lines = [header, "-" * len(header)]
        for name, c in self.per_class.items():
            lines.append(
                f"{name:<{name_width}}  {self.weight(name):>6g}  {c.n_ground_truth:>6d}  "
                f"{c.n_predicted:>6d}  {c.true_positives:>6d}  {c.false_positives:>6d}  "
                f"{c.false_negatives:>6d}  {c.precision:>6.3f}  {c.recall:>6.3f}  "
                f"{c.fbeta(self.beta):>6.3f}"
            )
        lines.append("-" * len(header))
        lines.append(f"weighted {beta_label} = {self.weighted_fbeta:.4f}")
        return "\n".join(lines)


def score(
    picks: Mapping[str, Mapping[str, np.ndarray]],
    ground_truth: Mapping[str, Mapping[str, np.ndarray]],
    radii_angstrom: Mapping[str, float],
    distance_fraction: float = 0.5,
    beta: float = 4.0,
    class_weights: Mapping[str, float] | None = None,
) -> ScoreReport:
    """Score picks against ground truth over runs and classes.

    ``picks`` and ``ground_truth`` map run -> class -> (N, 3) positions in Å (any consistent axis
    order). The classes scored are those of ``radii_angstrom`` (class -> particle radius in Å); a
    hit lies within ``distance_fraction * radius`` (inclusive). A run or class absent from
    ``picks`` counts as no predictions; absent from ``ground_truth``, as no particles. Raises
    ValueError for a run in ``picks`` but not in ``ground_truth``, or for non-empty positions of a
    class not in ``radii_angstrom``. ``class_weights`` defaults to :data:`CZII_CLASS_WEIGHTS`.
    """
    _check_arguments(picks, ground_truth, radii_angstrom, distance_fraction, beta)
    weights = CZII_CLASS_WEIGHTS if class_weights is None else class_weights
    empty = np.zeros((0, 3))
    per_run: dict[str, dict[str, ClassCounts]] = {}
    per_class = {name: ClassCounts() for name in radii_angstrom}
    for run in ground_truth:
        run_picks, run_truth = picks.get(run, {}), ground_truth[run]
        per_run[run] = {}
        for name, radius in radii_angstrom.items():
            counts = match_points(
                run_picks.get(name, empty), run_truth.get(name, empty), distance_fraction * radius
            )
            per_run[run][name] = counts
            per_class[name] = per_class[name] + counts

    return ScoreReport(
        per_class=per_class,
        per_run=per_run,
        beta=float(beta),
        class_weights={name: float(weights.get(name, 1.0)) for name in radii_angstrom},
        distance_fraction=float(distance_fraction),
    )


def _check_arguments(
    picks: Mapping[str, Mapping[str, np.ndarray]],
    ground_truth: Mapping[str, Mapping[str, np.ndarray]],
    radii_angstrom: Mapping[str, float],
    distance_fraction: float,
    beta: float,
) -> None:
    """The ValueErrors :func:`score` documents, before anything is counted."""
    if not radii_angstrom:
        raise ValueError("radii_angstrom is empty; give the radius in Å of every scored class")
    for name, radius in radii_angstrom.items():
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius of {name!r} must be a finite number > 0 Å, got {radius}")
    if not (math.isfinite(distance_fraction) and distance_fraction >= 0):
        raise ValueError(f"distance_fraction must be a finite number >= 0, got {distance_fraction}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta}")

    unknown_runs = sorted(set(picks) - set(ground_truth))
    if unknown_runs:
        raise ValueError(
            f"runs {unknown_runs} have picks but no ground truth; "
            f"ground truth is known for runs {sorted(ground_truth)}"
        )
    for source, runs in (("picks", picks), ("ground truth", ground_truth)):
        for run, classes in runs.items():
            for name, points in classes.items():
                if name not in radii_angstrom and np.size(points) > 0:
                    raise ValueError(
                        f"{source} of run {run!r} has positions of class {name!r}, which has no "
                        f"radius; known classes: {sorted(radii_angstrom)}"
                    )
