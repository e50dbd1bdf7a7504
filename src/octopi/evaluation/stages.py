"""Copick-level evaluation: score predicted picks against ground-truth picks (CZII rules)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from octopi.config import DEFAULT_PREDICTED_PICKS, CopickSource, EvaluationConfig, PickSpec
from octopi.data.copick_io import CopickDataError, CopickProjects, ParticleObject, RunRef
from octopi.errors import InputError
from octopi.evaluation.scoring import ScoreReport, score
from octopi.inference.localize_stages import select_objects


def _has_picks(
    projects: CopickProjects, ref: RunRef, objects: Sequence[ParticleObject], picks: PickSpec
) -> bool:
    """Whether the run holds a pick set of ``picks`` for any of ``objects`` (even an empty one)."""
    present = set(projects.pick_sets(ref))
    return any(f"{obj.name},{picks.user_id},{picks.session_id}" in present for obj in objects)


def _pick_set_listing(projects: CopickProjects, ref: RunRef) -> str:
    pick_sets = projects.pick_sets(ref)
    return ", ".join(pick_sets) if pick_sets else "none"


def runs_to_score(
    projects: CopickProjects,
    run_ids: Sequence[str] | None,
    objects: Sequence[ParticleObject],
    ground_truth: PickSpec,
) -> list[RunRef]:
    """The runs named (each must have ground truth), or every run that has ground truth."""
    gt = f"{ground_truth.user_id},{ground_truth.session_id}"
    if run_ids is not None:
        if not run_ids:
            raise InputError("--run-ids is empty; name at least one run or leave it out")
        refs = [projects.resolve(key) for key in run_ids]
        for ref in refs:
            if not _has_picks(projects, ref, objects, ground_truth):
                raise CopickDataError(
                    f"run {ref.key} has no ground-truth picks {gt}; pick sets there "
                    f"(object,user,session): {_pick_set_listing(projects, ref)}. "
                    "Choose them with --gt-info user,session."
                )
        return refs
    refs = [ref for ref in projects.runs() if _has_picks(projects, ref, objects, ground_truth)]
    if not refs:
        sample = projects.runs()[:1]
        listing = _pick_set_listing(projects, sample[0]) if sample else "no runs"
        raise CopickDataError(
            f"no run has ground-truth picks {gt} for "
            f"{', '.join(obj.name for obj in objects)}; pick sets in "
            f"{sample[0].key if sample else 'the project'} (object,user,session): {listing}. "
            "Choose them with --gt-info user,session."
        )
    return refs


def evaluate_runs(
    sources: Sequence[CopickSource],
    run_ids: Sequence[str] | None,
    predicted: PickSpec = DEFAULT_PREDICTED_PICKS,
    ground_truth: PickSpec = PickSpec(),
    settings: EvaluationConfig = EvaluationConfig(),
    objects: Sequence[str] | None = None,
) -> ScoreReport:
    """Score ``predicted`` picks against ``ground_truth`` picks, both (x, y, z) Å from copick.

    Objects default to every particle object of the project, with radii from its config; runs
    default to those holding ground-truth picks. Raises when none of the runs holds a
    predicted pick set (most likely a wrong ``--pred-info``).
    """
    projects = CopickProjects(sources)
    chosen = select_objects(projects, objects)
    refs = runs_to_score(projects, run_ids, chosen, ground_truth)
    if not any(_has_picks(projects, ref, chosen, predicted) for ref in refs):
        raise CopickDataError(
            f"no predicted picks {predicted.user_id},{predicted.session_id} in runs "
            f"{', '.join(ref.key for ref in refs)}; pick sets in {refs[0].key} "
            f"(object,user,session): {_pick_set_listing(projects, refs[0])}. "
            "Run `octopi localize` first or choose them with --pred-info user,session."
        )

    picks: dict[str, dict[str, np.ndarray]] = {}
    truth: dict[str, dict[str, np.ndarray]] = {}
    for ref in refs:
        picks[ref.key] = {
            obj.name: projects.load_picks_angstrom(ref, obj.name, predicted) for obj in chosen
        }
        truth[ref.key] = {
            obj.name: projects.load_picks_angstrom(ref, obj.name, ground_truth) for obj in chosen
        }
    return score(
        picks,
        truth,
        radii_angstrom={obj.name: obj.radius_angstrom for obj in chosen},
        distance_fraction=settings.distance_fraction,
        beta=settings.beta,
        class_weights=settings.class_weights,
    )
