"""What a finished trial is ranked by: its calibrated validation F-beta where that is the
study metric."""

from __future__ import annotations

import pytest

from octopi.search.slot_results import objective_value

CALIBRATED = {
    "best_metric": 0.3,
    "calibration": {"beta": 4.0, "weighted_fbeta": {"labels": 0.3, "calibrated": 0.8}},
}


@pytest.mark.parametrize(
    ("summary", "metric", "expected"),
    [
        (CALIBRATED, "fBeta4", 0.8),  # the picks segment + localize make
        (CALIBRATED, "avg_f1", 0.3),  # another metric: the validation value
        (CALIBRATED, "fBeta2", 0.3),  # calibrated for beta 4, not 2
        ({"best_metric": 0.3, "calibration": {}}, "fBeta4", 0.3),  # calibration off
        ({"best_metric": 0.3}, "fBeta4", 0.3),  # a result from before calibration
    ],
)
def test_objective_value(summary, metric, expected):
    assert objective_value(summary, metric) == expected
