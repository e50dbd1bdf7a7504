"""The best model of a study on its test runs: segment, localize, score (``test/metrics.json``).

Predictions go into the copick project under a user and session of their own (user
``octopi-explore``, session = the study name; ``<study>-ensemble`` for the top-k ensemble),
so they never mix with ground truth, training targets or the output of a plain ``octopi
localize``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from octopi.config import PickSpec, TargetSpec, WorkflowConfig
from octopi.data.split import RunSplit
from octopi.errors import InputError, MissingInputError
from octopi.inference.ensemble_folder import ensemble_file
from octopi.search.ensemble import ENSEMBLE_DIR

TEST_USER_ID = "octopi-explore"
METRICS_PATH = Path("test") / "metrics.json"


def study_session_id(study_name: str) -> str:
    """A copick-safe session ID for ``study_name`` (letters, digits, '-' and '.')."""
    return re.sub(r"[^A-Za-z0-9.\-]+", "-", study_name).strip("-") or "study"


def evaluate_test(
    study_dir: str | Path, workflow: WorkflowConfig, split: RunSplit, show_progress: bool = False
) -> dict[str, Any]:
    """Score ``study_dir/best`` (and the ensemble ``best_ensemble/`` where select-best wrote
    one) on ``split.test``; write and return ``test/metrics.json``.

    The model (``best/model_config.yaml`` + ``best/best_model_weights.pth``) segments each
    test run with ``workflow.inference``; particles are localized with ``workflow.localize``
    (calibrated thresholds by default) and matched to ``workflow.data.ground_truth`` picks
    with ``workflow.evaluation``. The ensemble's figures go under ``ensemble`` (None without
    one); its segmentations and picks use the session ``<study>-ensemble``. Raises
    ``ValueError`` when the split has no test runs and ``FileNotFoundError`` when ``best/``
    is incomplete; nothing is written then.
    """
    study_dir = Path(study_dir)
    if not split.test:
        raise InputError(
            "the split has no test runs: give --data-split two ratios (e.g. 0.7,0.1 → 20 % "
            "test) to keep runs for testing"
        )
    model_config = study_dir / "best" / "model_config.yaml"
    weights = study_dir / "best" / "best_model_weights.pth"
    for path in (model_config, weights):
        if not path.is_file():
            raise MissingInputError(f"{path} not found: run select-best on the study first")
    session = study_session_id(workflow.search.study_name)
    metrics = {
        "study_name": workflow.search.study_name,
        "test_runs": list(split.test),
        **_score_model(workflow, split, [model_config], [weights], session, show_progress),
    }
    ensemble = study_dir / ENSEMBLE_DIR
    metrics["ensemble"] = (
        _score_model(workflow, split, [ensemble], [], f"{session}-ensemble", show_progress)
        if ensemble_file(ensemble) is not None
        else None
    )
    from octopi.io_utils import atomic_write_json

    atomic_write_json(study_dir / METRICS_PATH, metrics)
    return metrics


def _score_model(
    workflow: WorkflowConfig,
    split: RunSplit,
    model_configs: list[Path],
    weights: list[Path],
    session: str,
    show_progress: bool,
) -> dict[str, Any]:
    """Segment, localize and score the test runs with one model (or ensemble folder); the
    predictions go to segmentation ``predict`` and picks of user octopi-explore, ``session``."""
    from octopi.evaluation.stages import evaluate_runs
    from octopi.inference.localize_stages import localize_runs
    from octopi.inference.stages import segment_runs

    sources = workflow.data.configs
    seg_target = TargetSpec(name="predict", user_id=TEST_USER_ID, session_id=session)
    picks = PickSpec(user_id=TEST_USER_ID, session_id=session)
    segmented = segment_runs(
        sources,
        split.test,
        model_configs,
        weights,
        seg_target=seg_target,
        settings=workflow.inference,
        voxel_size_angstrom=workflow.data.voxel_size_angstrom,
        show_progress=show_progress,
    )
    counts = localize_runs(
        sources,
        split.test,
        seg_target=seg_target,
        picks_out=picks,
        settings=workflow.localize,
        voxel_size_angstrom=segmented.voxel_size_angstrom,
    )
    report = evaluate_runs(
        sources,
        split.test,
        predicted=picks,
        ground_truth=workflow.data.ground_truth,
        settings=workflow.evaluation,
    )
    metric = workflow.training.best_metric
    return {
        "best_metric": metric,
        "best_metric_value": report.metric(metric),
        "segmentation": str(seg_target),
        "predicted_picks": picks.model_dump(),
        "ground_truth": workflow.data.ground_truth.model_dump(),
        "picks_per_run": counts,
        "segment": segmented.to_dict(),
        **report.to_dict(),
    }
