"""Validation during training: the same particle-level scoring as ``octopi evaluate``.

Each validation run's tomogram (first tomogram algorithm) is read and normalised once per
process and kept; each validation segments it with the network (sliding window), localizes
particles and scores them against the ground-truth picks, so the best checkpoint is the one
that picks best. Validation scores the picking the model will be used with:

- when the model is calibrated after training and ``localize`` will use that calibration
  (:func:`~octopi.inference.localize_stages.validates_calibrated`, the default), each
  validation calibrates the network on the validation runs and scores its calibrated picks.
  Scoring the argmax labels instead would rank checkpoints by a picking nobody uses: a
  network trained with a class-weighted loss floods the argmax with particle voxels, scores
  0 there and picks well once thresholded;
- otherwise the picks come from what ``segment`` + ``localize`` would pick from with the same
  settings (:func:`~octopi.inference.localize_stages.uses_probabilities`): the class
  probabilities, thresholded per class, or the argmax labels.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch

from octopi.config import EvaluationConfig, InferenceConfig, LocalizeConfig
from octopi.data.copick_io import CopickProjects
from octopi.data.normalise import normalise_tomogram
from octopi.errors import InputError
from octopi.evaluation.calibration import calibrate_with_report
from octopi.evaluation.scoring import ScoreReport, score
from octopi.inference.localize import LocalizeClass, localize
from octopi.inference.localize_stages import uses_probabilities, validates_calibrated
from octopi.inference.segment import ProbabilityVolume, segment_volume
from octopi.models.model_card import Calibration, ModelCard


class Validator:
    """Scores a network on the validation runs.

    ``ground_truth``: run key → class name → (M, 3) (x, y, z) Å. Metrics (see :meth:`score`):
    ``avg_f1``, ``weighted_fbeta`` (class-weighted F-beta at ``evaluation.beta``), the
    selection metric under its own name (e.g. ``fBeta4``), ``f1_<class>`` per class and
    ``seconds``; with calibrated validation also ``labels_weighted_fbeta`` (the argmax
    labels' weighted F-beta, for comparison).
    """

    def __init__(
        self,
        projects: CopickProjects,
        run_keys: list[str],
        algorithm: str,
        card: ModelCard,
        ground_truth: Mapping[str, Mapping[str, np.ndarray]],
        inference: InferenceConfig,
        localize_config: LocalizeConfig,
        evaluation: EvaluationConfig,
        best_metric: str,
        device: torch.device,
    ):
        self.projects = projects
        self.run_keys = list(run_keys)
        self.algorithm = algorithm
        self.card = card
        self.ground_truth = {run: dict(classes) for run, classes in ground_truth.items()}
        self.inference = inference
        self.settings = localize_config
        self.evaluation = evaluation
        self.best_metric = best_metric
        self.device = device
        self.classes = [LocalizeClass(c.name, c.label, c.radius_angstrom) for c in card.classes]
        self.from_probabilities = uses_probabilities(inference, localize_config)
        self.calibrated = validates_calibrated(inference, localize_config)
        # The calibration of the last calibrated validation: the loop keeps the best one, so
        # the best model need not be calibrated again after training.
        self.last_calibration: Calibration | None = None
        _check_thresholds(localize_config, [c.name for c in card.classes], self.from_probabilities)
        self._volumes: dict[str, np.ndarray] | None = None

    @property
    def volumes(self) -> dict[str, np.ndarray]:
        """Normalised (Z, Y, X) float32 tomograms of the validation runs, read on first use."""
        if self._volumes is None:
            voxel = self.card.voxel_size_angstrom
            self._volumes = {
                key: normalise_tomogram(
                    self.projects.load_tomogram(self.projects.resolve(key), voxel, self.algorithm),
                    self.card.normalisation,
                )
                for key in self.run_keys
            }
        return self._volumes

    def _segment(self, model: torch.nn.Module, volume: np.ndarray, probabilities: bool):
        """(Z, Y, X) labels of ``model`` on ``volume``, or its (C, Z, Y, X) float16 class
        probabilities as segment stores them (the same values are thresholded)."""
        window = self.inference.window_size or self.card.dim_in
        sink = ProbabilityVolume(volume.shape) if probabilities else None
        result = segment_volume(
            [model], volume, window, self.inference, self.device, probability_sink=sink
        )
        return result.labels if sink is None else sink.array

    def picks(self, model: torch.nn.Module) -> dict[str, dict[str, np.ndarray]]:
        """run → class → (N, 3) (x, y, z) Å picks of ``model`` (in eval mode) on every run."""
        voxel = self.card.voxel_size_angstrom
        picks: dict[str, dict[str, np.ndarray]] = {}
        for key, volume in self.volumes.items():
            segmentation = self._segment(model, volume, self.from_probabilities)
            found = localize(segmentation, self.classes, voxel, self.settings)
            picks[key] = {name: p.centers_voxel[:, ::-1] * voxel for name, p in found.items()}
        return picks

    def _probabilities(self, model: torch.nn.Module) -> dict[str, np.ndarray]:
        """run → (C, Z, Y, X) float16 class probabilities of ``model`` (put in eval mode)."""
        model.eval()
        return {key: self._segment(model, v, True) for key, v in self.volumes.items()}

    def calibrate(self, model: torch.nn.Module) -> Calibration:
        """Per-class thresholds and minimum sizes of ``model`` chosen for F-beta on the
        validation runs (:func:`octopi.evaluation.calibration.calibrate`)."""
        calibration, _ = self._calibrate_with_report(model)
        return calibration

    def _calibrate_with_report(self, model: torch.nn.Module) -> tuple[Calibration, ScoreReport]:
        """The calibration of ``model`` and the score of its calibrated picks."""
        return calibrate_with_report(
            self._probabilities(model),
            self.ground_truth,
            self.classes,
            self.card.voxel_size_angstrom,
            self.settings,
            self.evaluation,
        )

    def score(self, model: torch.nn.Module) -> tuple[dict[str, float], ScoreReport]:
        """Validate ``model``; returns (metrics, report). The model is left in eval mode."""
        start = time.perf_counter()
        model.eval()
        extra: dict[str, float] = {}
        if self.calibrated:
            self.last_calibration, report = self._calibrate_with_report(model)
            extra["labels_weighted_fbeta"] = self.last_calibration.weighted_fbeta["labels"]
        else:
            report = score(
                self.picks(model),
                self.ground_truth,
                {c.name: c.radius_angstrom for c in self.card.classes},
                distance_fraction=self.evaluation.distance_fraction,
                beta=self.evaluation.beta,
                class_weights=self.evaluation.class_weights,
            )
        metrics = {"avg_f1": report.avg_f1, "weighted_fbeta": report.weighted_fbeta, **extra}
        metrics[self.best_metric] = report.metric(self.best_metric)
        for name, counts in report.per_class.items():
            metrics[f"f1_{name}"] = counts.fbeta(1.0)
        metrics["seconds"] = time.perf_counter() - start
        return metrics, report


def _check_thresholds(
    settings: LocalizeConfig, classes: list[str], from_probabilities: bool
) -> None:
    """Raise before training when per-class thresholds could not act in validation."""
    thresholds = settings.per_class_threshold or {}
    unknown = settings.unknown_class_names(classes)
    if unknown:
        raise InputError(
            f"localize settings name classes the model does not have ({'; '.join(unknown)}); "
            f"its classes: {', '.join(classes)}"
        )
    if thresholds and not from_probabilities:
        raise InputError(
            "localize.per_class_threshold acts on class probabilities, but validation picks "
            "from the labels (localize.source labels, or inference.save_probabilities false "
            "with source auto); drop the thresholds or pick from probabilities"
        )
