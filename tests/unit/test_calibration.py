"""F-beta calibration of per-class thresholds and minimum sizes, on volumes whose best
settings are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from octopi.config import EvaluationConfig, LocalizeConfig
from octopi.evaluation.calibration import calibrate
from octopi.inference.localize import (
    LocalizeClass,
    localize,
    localize_channel,
    localize_channel_min_sizes,
)
from octopi.models.model_card import ModelCard

VOXEL = 10.0
# radius 4 voxels: sphere volume 268 voxels
CLASS = LocalizeClass("ribosome", 1, 40.0)
TRUE_CENTERS = [(10, 10, 10), (10, 30, 30), (30, 10, 30)]
SMALL_DECOYS = [(30, 30, 10), (20, 20, 20)]
SETTINGS = LocalizeConfig(
    calibration_thresholds=[0.1, 0.2, 0.3, 0.5],
    calibration_min_size_fractions=[0.05, 0.2],
    max_foreground_fraction=None,
)
EVALUATION = EvaluationConfig(class_weights={"ribosome": 1.0})


def _ball(shape, center, radius):
    zz, yy, xx = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip((zz, yy, xx), center, strict=True)) <= radius**2


def constructed_volume() -> tuple[np.ndarray, dict]:
    """(2, 40, 40, 40) probabilities: true particles are balls of radius 3 (123 voxels) at
    p = 0.35; decoys are 3×3×3 cubes (27 voxels) at p = 0.5. So: thresholds above 0.35 find
    only decoys (F = 0); at 0.2 or 0.3 with minimum size 0.2 × 268 = 54 voxels, exactly the
    particles (F = 1); minimum size 0.05 (13 voxels) lets the decoys in; at 0.1 the same.
    The argmax is background everywhere particles are (0.65 > 0.35): F = 0."""
    shape = (40, 40, 40)
    channel = np.zeros(shape, np.float32)
    for center in TRUE_CENTERS:
        channel[_ball(shape, center, 3)] = 0.35
    for z, y, x in SMALL_DECOYS:
        channel[z - 1 : z + 2, y - 1 : y + 2, x - 1 : x + 2] = 0.5
    probabilities = np.stack([1.0 - channel, channel]).astype(np.float16)
    truth_xyz_angstrom = np.array(TRUE_CENTERS, float)[:, ::-1] * VOXEL
    return probabilities, {"ribosome": truth_xyz_angstrom}


def test_calibration_finds_the_constructed_optimum():
    probabilities, truth = constructed_volume()
    result = calibrate({"run": probabilities}, {"run": truth}, [CLASS], VOXEL, SETTINGS, EVALUATION)
    chosen = result.classes["ribosome"]
    # 0.2 and 0.3 tie at F = 1; ties go to the higher threshold (fewer picks elsewhere).
    assert (chosen.threshold, chosen.min_size_fraction) == (0.3, 0.2)
    assert chosen.fbeta == pytest.approx(1.0)
    assert chosen.precision == pytest.approx(1.0) and chosen.recall == pytest.approx(1.0)
    assert chosen.fbeta_labels == 0.0
    assert result.weighted_fbeta == {"labels": 0.0, "calibrated": pytest.approx(1.0)}
    assert result.run_ids == ["run"] and result.beta == 4.0


def test_calibrated_settings_pick_what_calibration_scored():
    probabilities, truth = constructed_volume()
    result = calibrate({"run": probabilities}, {"run": truth}, [CLASS], VOXEL, SETTINGS, EVALUATION)
    picks = localize(probabilities, [CLASS], VOXEL, result.localize_settings(SETTINGS))
    found = np.round(picks["ribosome"].centers_voxel).astype(int)
    assert sorted(map(tuple, found)) == sorted(TRUE_CENTERS)
    # Without the minimum size, the decoys come back: the size is part of the calibration.
    loose = result.localize_settings(SETTINGS).model_copy(
        update={"per_class_min_size_fraction": None}
    )
    assert len(localize(probabilities, [CLASS], VOXEL, loose)["ribosome"]) == 5


def test_beta_4_trades_precision_for_recall_and_beta_half_does_not():
    """One particle is faint (p = 0.15) and six particle-sized noise blobs sit at p = 0.12.
    Threshold 0.1: 3 TP, 8 FP (P 0.27, R 1): F4 0.87, F0.5 0.32. Threshold 0.3: 2 TP, 2 FP
    (P 0.5, R 0.67): F4 0.65, F0.5 0.53. So F4 picks 0.1 and F0.5 picks 0.3."""
    probabilities, truth = constructed_volume()
    shape = probabilities.shape[1:]
    faint = _ball(shape, TRUE_CENTERS[0], 3)
    probabilities[1][faint], probabilities[0][faint] = 0.15, 0.85
    for center in [
        (10, 10, 30),
        (10, 30, 10),
        (30, 10, 10),
        (30, 30, 30),
        (20, 35, 20),
        (5, 20, 20),
    ]:
        noise = _ball(shape, center, 3)
        probabilities[1][noise], probabilities[0][noise] = 0.12, 0.88
    settings = SETTINGS.model_copy(update={"calibration_min_size_fractions": [0.05]})
    chosen = {
        beta: calibrate(
            {"run": probabilities},
            {"run": truth},
            [CLASS],
            VOXEL,
            settings,
            EvaluationConfig(beta=beta, class_weights={"ribosome": 1.0}),
        ).classes["ribosome"]
        for beta in (4.0, 0.5)
    }
    assert (chosen[4.0].threshold, chosen[4.0].recall) == (0.1, 1.0)
    assert chosen[4.0].precision == pytest.approx(3 / 11)
    assert chosen[0.5].threshold == 0.3
    assert (chosen[0.5].precision, chosen[0.5].recall) == (pytest.approx(0.5), pytest.approx(2 / 3))


def test_calibration_round_trips_through_the_model_card(tmp_path):
    probabilities, truth = constructed_volume()
    result = calibrate({"run": probabilities}, {"run": truth}, [CLASS], VOXEL, SETTINGS, EVALUATION)
    card = ModelCard(
        classes=[{"name": "ribosome", "label": 1, "radius_angstrom": 40.0}],
        dim_in=32,
        voxel_size_angstrom=VOXEL,
        tomo_algorithms=["wbp"],
        calibration=result,
    )
    card.save(tmp_path / "model_config.yaml")
    assert ModelCard.load(tmp_path / "model_config.yaml").calibration == result


def test_runs_without_ground_truth_are_refused():
    probabilities, _ = constructed_volume()
    with pytest.raises(ValueError, match="missing"):
        calibrate({"run": probabilities}, {}, [CLASS], VOXEL, SETTINGS, EVALUATION)


@pytest.mark.parametrize("method", ["peaks", "components"])
def test_all_minimum_sizes_at_once_equal_one_at_a_time(method):
    """Calibration labels each threshold once for all minimum sizes; the picks must be exactly
    those of localize_channel with each size: smoothed noise gives blobs of every size, touching
    ones (split by peaks) and ones between one and two minimum sizes (not split)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(3)
    channel = ndi.gaussian_filter(rng.normal(size=(40, 48, 48)), 2.0)
    channel = (channel - channel.min()) / (channel.max() - channel.min())
    sizes = [0.3, 0.01, 0.1, 0.05, 0.2]
    settings = LocalizeConfig(method=method, score_threshold=0.6, max_foreground_fraction=None)
    together = localize_channel_min_sizes(channel, CLASS, VOXEL, settings, sizes)
    counts = []
    for size, picks in zip(sizes, together, strict=True):
        one = settings.model_copy(update={"per_class_min_size_fraction": {CLASS.name: size}})
        alone = localize_channel(channel, CLASS, VOXEL, one)
        np.testing.assert_array_equal(picks.centers_voxel, alone.centers_voxel)
        np.testing.assert_array_equal(picks.scores, alone.scores)
        counts.append(len(alone))
    assert counts[1] > counts[2] > counts[0] > 0  # the sizes matter on this volume


def argmax_only_volume() -> tuple[np.ndarray, dict, list[LocalizeClass]]:
    """(4, 40, 40, 40) probabilities of a weakly trained network (background, ribosome,
    thyroglobulin, another class): everywhere 0.5 / 0.1 / 0.3 / 0.1; at the true
    thyroglobulins 0.25 / 0.25 / 0.28 / 0.22. Thyroglobulin's probability is lower at its
    particles than around them, so no threshold separates them (≤ 0.28 floods the volume,
    0.3 keeps everything but the particles, higher finds nothing), while the argmax is
    thyroglobulin exactly there."""
    shape = (40, 40, 40)
    channels = [np.full(shape, p, np.float32) for p in (0.5, 0.1, 0.3, 0.1)]
    for center in TRUE_CENTERS:
        ball = _ball(shape, center, 3)
        for channel, p in zip(channels, (0.25, 0.25, 0.28, 0.22), strict=True):
            channel[ball] = p
    probabilities = np.stack(channels).astype(np.float16)
    truth_xyz_angstrom = np.array(TRUE_CENTERS, float)[:, ::-1] * VOXEL
    classes = [LocalizeClass("thyroglobulin", 2, 40.0)]
    return probabilities, {"thyroglobulin": truth_xyz_angstrom}, classes


def test_calibration_picks_by_argmax_where_no_threshold_separates_a_class():
    probabilities, truth, classes = argmax_only_volume()
    evaluation = EvaluationConfig(class_weights={"thyroglobulin": 1.0})
    result = calibrate({"run": probabilities}, {"run": truth}, classes, VOXEL, SETTINGS, evaluation)
    chosen = result.classes["thyroglobulin"]
    assert chosen.threshold is None  # the argmax
    assert chosen.fbeta == pytest.approx(1.0) and chosen.fbeta_labels == pytest.approx(1.0)
    # Ties go to the larger minimum size, as for thresholds.
    assert chosen.min_size_fraction == 0.2
    settings = result.localize_settings(SETTINGS)
    assert settings.argmax_classes == ["thyroglobulin"]
    assert not settings.per_class_threshold
    picks = localize(probabilities, classes, VOXEL, settings)["thyroglobulin"]
    assert sorted(map(tuple, np.round(picks.centers_voxel).astype(int))) == sorted(TRUE_CENTERS)
    # Without the argmax the calibrated thresholds could not find them.
    by_threshold = settings.model_copy(update={"argmax_classes": None})
    found = localize(probabilities, classes, VOXEL, by_threshold)["thyroglobulin"]
    assert not {tuple(c) for c in np.round(found.centers_voxel).astype(int)} & set(TRUE_CENTERS)


def test_a_threshold_that_ties_the_argmax_is_kept():
    """The constructed volume of the other tests: threshold 0.3 picks perfectly and the argmax
    finds nothing, so the threshold stays; on a clean volume both pick perfectly and the
    threshold (the usual way) is kept too."""
    probabilities, truth = constructed_volume()
    result = calibrate({"run": probabilities}, {"run": truth}, [CLASS], VOXEL, SETTINGS, EVALUATION)
    assert result.classes["ribosome"].threshold == 0.3
    clean = probabilities.copy()
    clean[1][clean[1] == np.float16(0.35)] = 0.9
    clean[0] = 1.0 - clean[1]
    result = calibrate({"run": clean}, {"run": truth}, [CLASS], VOXEL, SETTINGS, EVALUATION)
    chosen = result.classes["ribosome"]
    assert chosen.threshold is not None and chosen.fbeta == pytest.approx(1.0)
    assert chosen.fbeta_labels == pytest.approx(1.0)


def test_workers_choose_exactly_what_one_process_chooses():
    """Two runs of smoothed noise with three classes (many thresholds give different blobs):
    the grid spread over forked workers gives the same calibration, counts and all, as one
    process."""
    from scipy import ndimage as ndi

    from octopi.evaluation.calibration import calibrate_with_report

    rng = np.random.default_rng(5)
    classes = [LocalizeClass(name, label, 40.0) for label, name in enumerate("abc", start=1)]
    probabilities, truth = {}, {}
    for run in ("r1", "r2"):
        logits = ndi.gaussian_filter(rng.normal(size=(4, 32, 40, 40)), (0, 2, 2, 2)) * 40
        probabilities[run] = (np.exp(logits) / np.exp(logits).sum(axis=0)).astype(np.float16)
        truth[run] = {c.name: rng.uniform(0, 320, size=(6, 3)) for c in classes}
    evaluation = EvaluationConfig(class_weights={"a": 1.0, "b": 2.0, "c": 1.0})
    results = {
        workers: calibrate_with_report(
            probabilities,
            truth,
            classes,
            VOXEL,
            SETTINGS,
            evaluation,
            workers=workers,
        )
        for workers in (1, 3)
    }
    (one, one_report), (three, three_report) = results[1], results[3]
    assert three == one
    assert three_report.per_class == one_report.per_class
    assert sum(c.n_predicted for c in one_report.per_class.values()) > 0


def test_calibration_workers_run_the_grid_in_other_processes(monkeypatch):
    """With workers, the grid's tasks run in forked processes, not in this one."""
    import os

    import octopi.evaluation.calibration as calibration
    from octopi.evaluation.calibration import calibrate_with_report

    pids = []
    run_task = calibration._task_counts

    def recording(grid, task):
        pids.append(os.getpid())  # in a worker, this list is the worker's copy
        return run_task(grid, task)

    monkeypatch.setattr(calibration, "_task_counts", recording)
    probabilities, truth = constructed_volume()
    result, _ = calibrate_with_report(
        {"run": probabilities}, {"run": truth}, [CLASS], VOXEL, SETTINGS, EVALUATION, workers=2
    )
    assert result.classes["ribosome"].fbeta == pytest.approx(1.0)
    assert pids == []  # nothing ran here
    calibrate({"run": probabilities}, {"run": truth}, [CLASS], VOXEL, SETTINGS, EVALUATION)
    assert pids and set(pids) == {os.getpid()}  # small grids run here by default
