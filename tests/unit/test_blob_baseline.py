"""The no-training LoG baseline of benchmarks/blob_baseline.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO))

from benchmarks.blob_baseline import best_threshold, log_candidates, main  # noqa: E402


def test_log_finds_bright_balls_strongest_first() -> None:
    volume = np.random.default_rng(0).normal(0, 0.05, (32, 48, 48)).astype(np.float32)
    grid = np.indices(volume.shape).transpose(1, 2, 3, 0)
    centres = np.array([[16.0, 12.0, 12.0], [16.0, 34.0, 30.0]])
    for centre, amplitude in zip(centres, (1.0, 2.0), strict=True):
        volume[np.linalg.norm(grid - centre, axis=-1) <= 5] += amplitude
    positions, values = log_candidates(volume, radius_voxel=5.0)
    assert np.all(np.diff(values) <= 0)
    np.testing.assert_allclose(positions[0], centres[1], atol=1.0)
    np.testing.assert_allclose(positions[1], centres[0], atol=1.0)
    threshold = best_threshold([(positions, values)], [centres], hit_distance_voxel=2.5)
    kept = positions[values >= threshold]
    assert len(kept) == 2  # both balls, none of the noise peaks


def test_runs_on_a_synthetic_project(tmp_path: Path, capsys) -> None:
    from octopi.config import SynthesizeConfig
    from octopi.data.synthetic import synthesize_project

    config = SynthesizeConfig(output=tmp_path / "p", runs=3, shape_zyx=(32, 64, 64), preset="hard")
    synthesize_project(config, show_progress=False)
    assert main(["--project", str(tmp_path / "p" / "copick.json"), "--train-runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "LoG baseline test F4 on ['TS_2']" in out and "weighted F4" in out
