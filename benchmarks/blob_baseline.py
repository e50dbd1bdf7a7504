"""A picker with no training: Laplacian-of-Gaussian blob detection per particle class.

``.venv/bin/python -m benchmarks.blob_baseline --project PATH/copick.json [--train-runs N]``

For every class the tomogram is filtered with a scale-normalised LoG at the class's scale
(sigma = radius / sqrt(3), the best scale for a solid sphere), local maxima within half a
radius are candidates, and one threshold per class is chosen to maximise that class's F-beta
on the first ``--train-runs`` runs (sorted by name). Only the remaining runs are scored, with
octopi's scoring (CZII rule: hit within half a radius, CZII class weights, beta 4). If this
detector scores well, the data are too easy to tell a trained picker from a blob finder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from octopi.config import CopickSource, PickSpec
from octopi.data.copick_io import CopickProjects
from octopi.evaluation.scoring import ClassCounts, match_points, score

BETA = 4.0
DISTANCE_FRACTION = 0.5


def log_candidates(tomogram: np.ndarray, radius_voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of the negated, scale-normalised LoG of a ``(Z, Y, X)`` tomogram.

    Returns the candidates' ``(N, 3)`` (z, y, x) voxel positions and their ``(N,)`` responses,
    strongest first. Bright blobs of radius ``radius_voxel`` give the largest responses.
    """
    sigma = max(radius_voxel / np.sqrt(3.0), 1.0)
    response = -(sigma**2) * ndimage.gaussian_laplace(tomogram.astype(np.float32), sigma)
    size = max(3, int(round(radius_voxel)) | 1)  # odd window about one radius wide
    peaks = (response == ndimage.maximum_filter(response, size=size)) & (response > 0)
    positions = np.argwhere(peaks).astype(np.float64)
    values = response[peaks]
    order = np.argsort(-values, kind="stable")
    return positions[order], values[order]


def best_threshold(
    candidates: list[tuple[np.ndarray, np.ndarray]],
    truths: list[np.ndarray],
    hit_distance_voxel: float,
) -> float:
    """Response threshold maximising F-beta summed over runs (candidates strongest first)."""
    values = np.concatenate([v for _, v in candidates]) if candidates else np.zeros(0)
    if values.size == 0:
        return float("inf")
    grid = np.unique(np.quantile(values, np.linspace(0.0, 0.995, 200)))
    best, best_f = float(grid[-1]), -1.0
    for threshold in grid:
        counts = ClassCounts()
        for (positions, responses), truth in zip(candidates, truths, strict=True):
            kept = positions[responses >= threshold]
            counts = counts + match_points(kept, truth, hit_distance_voxel)
        f_beta = counts.fbeta(BETA)
        if f_beta > best_f:
            best, best_f = float(threshold), f_beta
    return best


def run_baseline(
    config: Path, n_train: int, tomo_alg: str, voxel_size_angstrom: float, picks: PickSpec
) -> dict:
    """Choose thresholds on the first ``n_train`` runs, score the rest; a JSON-able dict."""
    projects = CopickProjects([CopickSource(path=config)])
    refs = sorted(projects.runs(), key=lambda r: r.key)
    if not 0 < n_train < len(refs):
        raise SystemExit(f"--train-runs must be in 1..{len(refs) - 1} ({len(refs)} runs)")
    objects = [o for o in projects.objects() if o.radius_angstrom > 0]
    tomograms = {r.key: projects.load_tomogram(r, voxel_size_angstrom, tomo_alg) for r in refs}
    truth_voxel = {
        r.key: {
            o.name: projects.load_picks_voxel(r, o.name, picks, voxel_size_angstrom)
            for o in objects
        }
        for r in refs
    }
    train, test = refs[:n_train], refs[n_train:]
    thresholds: dict[str, float] = {}
    picked: dict[str, dict[str, np.ndarray]] = {r.key: {} for r in test}
    for obj in objects:
        radius_voxel = obj.radius_angstrom / voxel_size_angstrom
        found = {r.key: log_candidates(tomograms[r.key], radius_voxel) for r in refs}
        threshold = best_threshold(
            [found[r.key] for r in train],
            [truth_voxel[r.key][obj.name] for r in train],
            DISTANCE_FRACTION * radius_voxel,
        )
        thresholds[obj.name] = threshold
        for r in test:
            positions, responses = found[r.key]
            picked[r.key][obj.name] = positions[responses >= threshold] * voxel_size_angstrom
    report = score(
        picked,
        {r.key: {n: p * voxel_size_angstrom for n, p in truth_voxel[r.key].items()} for r in test},
        {o.name: o.radius_angstrom for o in objects},
        distance_fraction=DISTANCE_FRACTION,
        beta=BETA,
    )
    return {
        "project": str(config),
        "tomo_alg": tomo_alg,
        "train_runs": [r.key for r in train],
        "test_runs": [r.key for r in test],
        "thresholds": thresholds,
        "test_f4": report.weighted_fbeta,
        "per_class": {name: report.fbeta(name) for name in report.per_class},
        "table": report.format_table(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.blob_baseline", description=__doc__)
    parser.add_argument("--project", type=Path, required=True, help="copick.json of the project")
    parser.add_argument("--train-runs", type=int, default=4, help="runs to choose thresholds on")
    parser.add_argument("--tomo-alg", default="wbp")
    parser.add_argument("--voxel-size", type=float, default=10.0)
    parser.add_argument("--pick-info", default="curation,0", help="ground truth user,session")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run_baseline(
        args.project,
        args.train_runs,
        args.tomo_alg,
        args.voxel_size,
        PickSpec.parse(args.pick_info),
    )
    print(result.pop("table"))
    print(f"LoG baseline test F{BETA:g} on {result['test_runs']}: {result['test_f4']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
