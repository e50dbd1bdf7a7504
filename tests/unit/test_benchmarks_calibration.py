"""The calibration benchmark's projection to more cores and its table (no network)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO))

from benchmarks import calibration as bench  # noqa: E402


def test_projection_hands_tasks_in_order_to_the_first_free_core() -> None:
    tasks = [5.0, 3.0, 3.0, 2.0, 1.0]
    assert bench.projected_seconds(tasks, 1) == pytest.approx(14.0)
    # core A: 5; core B: 3, then 3 (free at 3), then 2 (free at 6) is A's turn at 5: A 5+2,
    # B 3+3, then 1 goes to B (6 < 7): A 7, B 7.
    assert bench.projected_seconds(tasks, 2) == pytest.approx(7.0)
    assert bench.projected_seconds(tasks, 8) == pytest.approx(5.0)  # the longest task


def test_the_table_shows_every_worker_count_and_flags_a_different_choice() -> None:
    row = {
        "size": "czii", "shape_zyx": [184, 630, 630],
        "passes": [{"workers": 1, "seconds": 380.0, "same": True},
                   {"workers": 2, "seconds": 190.0, "same": False}],
        "tasks": 67, "longest_task_seconds": 22.5,
        "projected_seconds": {"4": 100.0, "8": 52.0, "16": 30.0, "32": 22.5},
        "weighted_fbeta": {"labels": 0.344, "calibrated": 0.724},
    }  # fmt: skip
    results = {"timestamp": "t", "cores": 2, "model": "/w/model", "workers": [1, 2], "rows": [row]}
    table = bench.markdown(results)
    assert "| czii (184×630×630) | 1: 380.0, 2: 190.0 | **no** | 67 (22.5) |" in table
    assert "100.0 / 52.0 / 30.0 / 22.5" in table and "0.344 → 0.724" in table
