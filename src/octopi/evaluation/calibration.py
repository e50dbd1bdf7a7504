"""F-beta calibration: per-class probability thresholds and minimum region sizes.

F4 rewards recall 16 times more than precision, so the threshold that picks best is class
specific and rarely the 0.5 of a plain argmax. :func:`calibrate` tries, for each class, every
(threshold, minimum size) pair of the grids in :class:`~octopi.config.LocalizeConfig`
(``calibration_thresholds`` × ``calibration_min_size_fractions``) on the class probabilities of
validation runs and keeps the pair with the highest F-beta of that class, TP/FP/FN summed
over the runs. Ties go to the higher threshold, then the larger minimum size (fewer picks).
The argmax is a candidate too (with each minimum size), chosen only where it beats every
threshold: early in training a class's probability can stay below 0.3 everywhere and still
be the largest at its particles, where no threshold separates them from the background.
The plain argmax labels are scored too (``fbeta_labels``), so the gain is reported honestly.

The result (:class:`~octopi.models.model_card.Calibration`) goes into ``model_config.yaml``;
``segment`` stores it with the probabilities and ``localize`` (source ``auto``) uses it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from octopi.config import EvaluationConfig, LocalizeConfig
from octopi.evaluation.scoring import ClassCounts, ScoreReport, match_points
from octopi.inference.localize import (
    ClassPicks,
    LocalizeClass,
    class_min_size_fraction,
    localize_channel_min_sizes,
    localize_labels_min_sizes,
)
from octopi.models.model_card import Calibration, ClassCalibration

__all__ = ["calibrate", "calibrate_with_report"]

_EMPTY = np.zeros((0, 3))


@dataclass(frozen=True)
class _Candidate:
    threshold: float | None  # None: the argmax
    min_size_fraction: float
    counts: ClassCounts


def calibrate(
    probabilities: Mapping[str, np.ndarray],
    ground_truth: Mapping[str, Mapping[str, np.ndarray]],
    classes: Sequence[LocalizeClass],
    voxel_size_angstrom: float,
    settings: LocalizeConfig = LocalizeConfig(),
    evaluation: EvaluationConfig = EvaluationConfig(),
) -> Calibration:
    """Choose each class's threshold and minimum size for F-beta on validation runs.

    probabilities: run key → (C, Z, Y, X) float class probabilities (channel 0 background,
        channel ``cls.label`` for each class), e.g. float16 as ``segment`` stores them.
    ground_truth: run key → class name → (M, 3) particle positions in Å, (x, y, z).
    classes: the classes to calibrate (radius in Å; a hit lies within
        ``evaluation.distance_fraction`` × radius).
    settings: every other localize setting (method, separation, ...) as picking will use it.
    """
    calibration, _ = calibrate_with_report(
        probabilities, ground_truth, classes, voxel_size_angstrom, settings, evaluation
    )
    return calibration


def calibrate_with_report(
    probabilities: Mapping[str, np.ndarray],
    ground_truth: Mapping[str, Mapping[str, np.ndarray]],
    classes: Sequence[LocalizeClass],
    voxel_size_angstrom: float,
    settings: LocalizeConfig = LocalizeConfig(),
    evaluation: EvaluationConfig = EvaluationConfig(),
) -> tuple[Calibration, ScoreReport]:
    """:func:`calibrate`, and the score of the calibrated picks (each class with its chosen
    settings, counts summed over the runs): validation during training ranks checkpoints by it."""
    runs = sorted(probabilities)
    missing = [run for run in runs if run not in ground_truth]
    if not runs or missing:
        raise ValueError(f"calibration needs ground truth for every run; missing: {missing}")
    matcher = _Matcher(ground_truth, voxel_size_angstrom, evaluation.distance_fraction)
    argmax = _argmax_candidates(probabilities, matcher, classes, voxel_size_angstrom, settings)
    beta = evaluation.beta
    best: dict[str, _Candidate] = {}
    label_counts: dict[str, ClassCounts] = {}
    for cls in classes:
        by_threshold = _best_candidate(
            probabilities, matcher, cls, voxel_size_angstrom, settings, beta
        )
        by_argmax = max(  # ties: the larger minimum size (listed first)
            argmax[cls.name].values(), key=lambda candidate: candidate.counts.fbeta(beta)
        )
        better = by_argmax.counts.fbeta(beta) > by_threshold.counts.fbeta(beta)
        best[cls.name] = by_argmax if better else by_threshold
        own_size = class_min_size_fraction(cls.name, settings)
        label_counts[cls.name] = argmax[cls.name][own_size].counts
    chosen = {
        name: ClassCalibration(
            threshold=candidate.threshold,
            min_size_fraction=candidate.min_size_fraction,
            fbeta=candidate.counts.fbeta(beta),
            precision=candidate.counts.precision,
            recall=candidate.counts.recall,
            fbeta_labels=label_counts[name].fbeta(beta),
        )
        for name, candidate in best.items()
    }
    calibrated = _report({name: candidate.counts for name, candidate in best.items()}, evaluation)
    calibration = Calibration(
        beta=beta,
        run_ids=runs,
        classes=chosen,
        weighted_fbeta={
            "labels": _report(label_counts, evaluation).weighted_fbeta,
            "calibrated": calibrated.weighted_fbeta,
        },
    )
    return calibration, calibrated


def _report(counts: dict[str, ClassCounts], evaluation: EvaluationConfig) -> ScoreReport:
    """The score of counts summed over runs; its weighted F-beta is the study's (CZII rule)."""
    weights = evaluation.class_weights
    return ScoreReport(
        per_class=counts,
        per_run={},
        beta=evaluation.beta,
        class_weights={name: float(weights.get(name, 1.0)) for name in counts},
        distance_fraction=evaluation.distance_fraction,
    )


@dataclass(frozen=True)
class _Matcher:
    """Counts hits of one class's picks in one run against its ground truth (Å, x, y, z)."""

    ground_truth: Mapping[str, Mapping[str, np.ndarray]]
    voxel_size_angstrom: float
    distance_fraction: float

    def counts(self, picks: ClassPicks, run: str, cls: LocalizeClass) -> ClassCounts:
        positions_angstrom_xyz = picks.centers_voxel[:, ::-1] * self.voxel_size_angstrom
        truth = self.ground_truth[run].get(cls.name, _EMPTY)
        return match_points(
            positions_angstrom_xyz, truth, self.distance_fraction * cls.radius_angstrom
        )


def _argmax_candidates(
    probabilities: Mapping[str, np.ndarray],
    matcher: _Matcher,
    classes: Sequence[LocalizeClass],
    voxel_size_angstrom: float,
    settings: LocalizeConfig,
) -> dict[str, dict[float, _Candidate]]:
    """class → minimum size → counts of picking the class from the argmax, for the calibration
    grid's minimum sizes and the class's own one (the plain argmax labels, ``fbeta_labels``);
    larger sizes first. Each run's argmax is computed once for all classes and sizes."""
    sizes = {
        cls.name: sorted(
            {*settings.calibration_min_size_fractions, class_min_size_fraction(cls.name, settings)},
            reverse=True,
        )
        for cls in classes
    }
    counts = {cls.name: {size: ClassCounts() for size in sizes[cls.name]} for cls in classes}
    for run, volume in probabilities.items():
        labels = np.argmax(volume, axis=0).astype(np.uint8)
        with warnings.catch_warnings():  # an untrained argmax floods classes: no picks
            warnings.simplefilter("ignore", RuntimeWarning)
            for cls in classes:
                picks_by_size = localize_labels_min_sizes(
                    labels, cls, voxel_size_angstrom, settings, sizes[cls.name]
                )
                for size, picks in zip(sizes[cls.name], picks_by_size, strict=True):
                    counts[cls.name][size] += matcher.counts(picks, run, cls)
    return {
        name: {size: _Candidate(None, size, total) for size, total in by_size.items()}
        for name, by_size in counts.items()
    }


def _best_candidate(
    probabilities: Mapping[str, np.ndarray],
    matcher: _Matcher,
    cls: LocalizeClass,
    voxel_size_angstrom: float,
    settings: LocalizeConfig,
    beta: float,
) -> _Candidate:
    """The (threshold, minimum size) of the grids with the highest F-beta of ``cls``; ties go
    to the higher threshold, then the larger minimum size. Each (run, threshold) is labelled
    once for all minimum sizes (:func:`localize_channel_min_sizes`)."""
    thresholds = sorted(set(settings.calibration_thresholds), reverse=True)
    min_sizes = sorted(set(settings.calibration_min_size_fractions), reverse=True)
    counts = {(t, m): ClassCounts() for t in thresholds for m in min_sizes}
    with warnings.catch_warnings():  # low thresholds flood weak classes: no picks, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        for threshold in thresholds:
            trial = settings.model_copy(update={"per_class_threshold": {cls.name: threshold}})
            for run, volume in probabilities.items():
                picks_by_size = localize_channel_min_sizes(
                    volume[cls.label], cls, voxel_size_angstrom, trial, min_sizes
                )
                for min_size, picks in zip(min_sizes, picks_by_size, strict=True):
                    counts[threshold, min_size] += matcher.counts(picks, run, cls)
    best: _Candidate | None = None
    for (threshold, min_size), total in counts.items():  # higher threshold, larger size first
        if best is None or total.fbeta(beta) > best.counts.fbeta(beta):
            best = _Candidate(threshold, min_size, total)
    assert best is not None  # the grids are never empty (config validation)
    return best
