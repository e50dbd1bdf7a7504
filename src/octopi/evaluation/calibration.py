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

The grid's (class, threshold) passes and each (run, class) of the argmax are independent tasks,
spread over forked worker processes (:func:`octopi.parallel.map_forked`; one per usable CPU
core): at CZII size one run's grid takes minutes on one core, and the per-component Python
around SciPy's calls holds the GIL, so threads gain little. The chosen settings do not depend
on the number of workers.

The result (:class:`~octopi.models.model_card.Calibration`) goes into ``model_config.yaml``;
``segment`` stores it with the probabilities and ``localize`` (source ``auto``) uses it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from octopi.config import EvaluationConfig, LocalizeConfig
from octopi.evaluation.scoring import ClassCounts, ScoreReport, match_points
from octopi.inference.localize import (
    ClassPicks,
    LocalizeClass,
    argmax_labels,
    class_min_size_fraction,
    localize_channel_min_sizes,
    localize_labels_min_sizes,
)
from octopi.models.model_card import Calibration, ClassCalibration
from octopi.parallel import map_forked, usable_cpus

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
    show_progress: bool = False,
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
        probabilities, ground_truth, classes, voxel_size_angstrom, settings, evaluation,
        show_progress=show_progress,
    )  # fmt: skip
    return calibration


def calibrate_with_report(
    probabilities: Mapping[str, np.ndarray],
    ground_truth: Mapping[str, Mapping[str, np.ndarray]],
    classes: Sequence[LocalizeClass],
    voxel_size_angstrom: float,
    settings: LocalizeConfig = LocalizeConfig(),
    evaluation: EvaluationConfig = EvaluationConfig(),
    workers: int | None = None,
    show_progress: bool = False,
) -> tuple[Calibration, ScoreReport]:
    """:func:`calibrate`, and the score of the calibrated picks (each class with its chosen
    settings, counts summed over the runs): validation during training ranks checkpoints by it.

    workers: processes the grid is spread over (Linux; the result does not depend on it).
        None: one per CPU core this process may use, for grids of at least 4 M voxels ×
        classes; smaller ones run in this process.
    show_progress: a progress bar over the grid's tasks (minutes per run at CZII size)."""
    runs = sorted(probabilities)
    missing = [run for run in runs if run not in ground_truth]
    if not runs or missing:
        raise ValueError(f"calibration needs ground truth for every run; missing: {missing}")
    matcher = _Matcher(ground_truth, voxel_size_angstrom, evaluation.distance_fraction)
    grid = _Grid.of(probabilities, matcher, classes, voxel_size_angstrom, settings)
    argmax, threshold_counts = _grid_counts(grid, workers, show_progress)
    beta = evaluation.beta
    best: dict[str, _Candidate] = {}
    label_counts: dict[str, ClassCounts] = {}
    for cls in classes:
        by_threshold = _best_candidate(threshold_counts[cls.name], beta)
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


@dataclass(frozen=True)
class _Grid:
    """Everything the calibration grid's tasks read: probabilities as in :func:`calibrate`."""

    probabilities: Mapping[str, np.ndarray]
    matcher: _Matcher
    classes: Sequence[LocalizeClass]
    voxel_size_angstrom: float
    settings: LocalizeConfig
    labels: Mapping[str, np.ndarray]  # run → (Z, Y, X) uint8 argmax of its probabilities
    label_sizes: Mapping[str, list[float]]  # class → argmax minimum sizes, larger first
    thresholds: list[float]  # higher first
    min_sizes: list[float]  # larger first

    @classmethod
    def of(
        cls,
        probabilities: Mapping[str, np.ndarray],
        matcher: _Matcher,
        classes: Sequence[LocalizeClass],
        voxel_size_angstrom: float,
        settings: LocalizeConfig,
    ) -> _Grid:
        grid_sizes = settings.calibration_min_size_fractions
        label_sizes = {  # the grid's sizes and the class's own one (the plain argmax labels)
            c.name: sorted({*grid_sizes, class_min_size_fraction(c.name, settings)}, reverse=True)
            for c in classes
        }
        labels = {run: argmax_labels(volume) for run, volume in probabilities.items()}
        return cls(
            probabilities, matcher, classes, voxel_size_angstrom, settings, labels, label_sizes,
            thresholds=sorted(set(settings.calibration_thresholds), reverse=True),
            min_sizes=sorted(set(grid_sizes), reverse=True),
        )  # fmt: skip

    def tasks(self) -> list[tuple[str, ...]]:
        """The independent tasks of the grid, the longest first: each (run, class) of the
        argmax labels (``("labels", run, class)``), then each (class, threshold), lower
        thresholds first (they give larger regions to split)."""
        runs = [("labels", run, c.name) for run in sorted(self.labels) for c in self.classes]
        by_threshold = [
            ("threshold", cls.name, threshold)
            for threshold in reversed(self.thresholds)
            for cls in self.classes
        ]
        return runs + by_threshold


def _grid_counts(
    grid: _Grid, workers: int | None, show_progress: bool
) -> tuple[dict[str, dict[float, _Candidate]], dict[str, dict[tuple[float, float], ClassCounts]]]:
    """Counts of every candidate of the grid: (class → minimum size → argmax candidate,
    class → (threshold, minimum size) → counts summed over runs), its tasks spread over
    ``workers`` forked processes (None: :func:`_auto_workers`). The result does not depend on
    the number of workers."""
    tasks = grid.tasks()
    n_workers = _auto_workers(grid) if workers is None else workers
    with tqdm(
        total=len(tasks), desc="calibration grid", unit="task",
        disable=not show_progress,
    ) as bar:  # fmt: skip
        results = map_forked(_task_counts, grid, tasks, n_workers, on_result=lambda _: bar.update())
    label_totals = {
        c.name: {size: ClassCounts() for size in grid.label_sizes[c.name]} for c in grid.classes
    }
    by_threshold: dict[str, dict[tuple[float, float], ClassCounts]] = {
        c.name: {} for c in grid.classes
    }
    for task, result in zip(tasks, results, strict=True):
        if task[0] == "labels":
            for size, counts in result.items():
                label_totals[task[2]][size] += counts
        else:
            _, name, threshold = task
            for size, counts in result.items():
                by_threshold[name][threshold, size] = counts
    argmax = {
        name: {size: _Candidate(None, size, total) for size, total in by_size.items()}
        for name, by_size in label_totals.items()
    }
    return argmax, by_threshold


# Below this many voxels (summed over runs, times classes) the grid runs in this process:
# forking workers would cost more than it saves.
_PARALLEL_MIN_VOXELS = 1 << 22


def _auto_workers(grid: _Grid) -> int:
    """One worker per usable CPU core for grids large enough to gain from them, else 1."""
    voxels = sum(int(np.prod(volume.shape[1:])) for volume in grid.probabilities.values())
    return usable_cpus() if voxels * len(grid.classes) >= _PARALLEL_MIN_VOXELS else 1


def _task_counts(grid: _Grid, task: tuple[str, ...]) -> dict:
    """One task of :meth:`_Grid.tasks`, minimum size → counts: for ``("labels", run,
    class)``, of picking the class from that run's argmax; for ``("threshold", class,
    threshold)``, of picking the class at that threshold, summed over runs. Each (run,
    threshold) is labelled once for all minimum sizes."""
    with warnings.catch_warnings():  # an untrained argmax or a low threshold floods classes
        warnings.simplefilter("ignore", RuntimeWarning)
        if task[0] == "labels":
            _, run, name = task
            cls = next(c for c in grid.classes if c.name == name)
            sizes = grid.label_sizes[name]
            picks_by_size = localize_labels_min_sizes(
                grid.labels[run], cls, grid.voxel_size_angstrom, grid.settings, sizes
            )
            return {
                size: grid.matcher.counts(picks, run, cls)
                for size, picks in zip(sizes, picks_by_size, strict=True)
            }
        _, name, threshold = task
        cls = next(c for c in grid.classes if c.name == name)
        trial = grid.settings.model_copy(update={"per_class_threshold": {name: threshold}})
        counts = {size: ClassCounts() for size in grid.min_sizes}
        for run, volume in grid.probabilities.items():
            picks_by_size = localize_channel_min_sizes(
                volume[cls.label], cls, grid.voxel_size_angstrom, trial, grid.min_sizes
            )
            for size, picks in zip(grid.min_sizes, picks_by_size, strict=True):
                counts[size] += grid.matcher.counts(picks, run, cls)
        return counts


def _best_candidate(counts: Mapping[tuple[float, float], ClassCounts], beta: float) -> _Candidate:
    """The (threshold, minimum size) of the grid with the highest F-beta; ties go to the
    higher threshold, then the larger minimum size."""
    best: _Candidate | None = None
    for threshold, min_size in sorted(counts, reverse=True):
        total = counts[threshold, min_size]
        if best is None or total.fbeta(beta) > best.counts.fbeta(beta):
            best = _Candidate(threshold, min_size, total)
    assert best is not None  # the grids are never empty (config validation)
    return best
