"""Run discovery and the train / validation / test split.

Discovery keeps the runs that have every requested tomogram algorithm at the voxel size and
the target segmentation; the split shuffles them with a seeded generator, so the same data
selection always gives the same split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from octopi.config import DataConfig
from octopi.data.copick_io import CopickDataError, CopickProjects
from octopi.errors import InputError, MissingInputError
from octopi.input_files import read_json_file


@dataclass(frozen=True)
class Discovery:
    """Runs usable for training (``usable``) and why the others are not (``skipped``)."""

    usable: list[str]
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunSplit:
    """Run keys per role; ``test`` is empty for a two-way split."""

    train: list[str]
    validate: list[str]
    test: list[str] = field(default_factory=list)
    seed: int | None = None
    ratios: list[float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunSplit:
        return cls(**data)


def read_split(path: Path) -> RunSplit:
    """The split of a ``split.json`` from ``octopi split-runs``; a one-line error when it is
    missing or not one."""
    if not path.is_file():
        raise MissingInputError(
            f"run split {path} not found; make it with `octopi split-runs --output {path}` "
            "or pass --split"
        )
    data = read_json_file(path, "run split")
    keys = ("train", "validate", "test", "seed", "ratios")
    data = data if isinstance(data, dict) else {}
    missing = [key for key in ("train", "validate") if key not in data]
    if missing:
        raise InputError(f"{path} lacks {', '.join(missing)}: not a split.json of split-runs")
    return RunSplit.from_dict({key: data[key] for key in keys if key in data})


def discover_runs(projects: CopickProjects, data: DataConfig) -> Discovery:
    """Check every run of the projects for the tomograms and targets ``data`` asks for."""
    usable: list[str] = []
    skipped: dict[str, str] = {}
    for ref in projects.runs():
        present = projects.tomogram_algorithms(ref, data.voxel_size_angstrom)
        missing = [alg for alg in data.tomo_algorithms if alg not in present]
        if missing:
            skipped[ref.key] = (
                f"no tomogram {', '.join(missing)} at voxel size {data.voxel_size_angstrom:g} "
                f"(available: {', '.join(present) or 'none'})"
            )
        elif not projects.has_segmentation(ref, data.voxel_size_angstrom, data.target):
            skipped[ref.key] = f"no target segmentation {data.target}"
        else:
            usable.append(ref.key)
    if not usable:
        reasons = "\n".join(f"  {key}: {why}" for key, why in sorted(skipped.items()))
        raise CopickDataError(
            "no usable runs found: a run needs tomograms "
            f"{', '.join(data.tomo_algorithms)} at voxel size {data.voxel_size_angstrom:g} and "
            f"the target segmentation {data.target} (make it with `octopi create-targets`)"
            + (f"\n{reasons}" if reasons else "; the projects have no runs")
        )
    return Discovery(usable=usable, skipped=skipped)


def _count(n_runs: int, ratio: float) -> int:
    return int(np.floor(n_runs * ratio + 0.5))


def split_runs(
    usable: Sequence[str], data: DataConfig, projects: CopickProjects | None = None
) -> RunSplit:
    """Split the usable run keys by ``data.data_split`` or take the explicit run IDs.

    Explicit IDs may be given as ``run`` or ``session/run``; with ``projects`` they are
    resolved to run keys. Raises ``ValueError`` for a split that would leave a role empty.
    """
    if data.train_run_ids is not None and data.validate_run_ids is not None:
        train = _explicit(data.train_run_ids, usable, projects, "--trainRunIDs")
        validate = _explicit(data.validate_run_ids, usable, projects, "--validateRunIDs")
        overlap = sorted(set(train) & set(validate))
        if overlap:
            raise InputError(f"runs both in training and validation: {', '.join(overlap)}")
        return RunSplit(train=train, validate=validate, test=[])

    keys = sorted(usable)
    order = np.random.default_rng(data.split_seed).permutation(len(keys))
    shuffled = [keys[i] for i in order]
    n_train = _count(len(keys), data.data_split[0])
    if len(data.data_split) == 1:
        n_validate = len(keys) - n_train
        n_test = 0
    else:
        n_validate = _count(len(keys), data.data_split[1])
        n_test = len(keys) - n_train - n_validate
    counts = {"train": n_train, "validation": n_validate}
    if len(data.data_split) == 2:
        counts["test"] = n_test
    empty = [role for role, n in counts.items() if n < 1]
    if empty:
        raise InputError(
            f"data split {data.data_split} of {len(keys)} usable runs gives "
            + ", ".join(f"{n} {role}" for role, n in counts.items())
            + f": the {' and '.join(empty)} set would be empty; add runs or change --data-split"
        )
    return RunSplit(
        train=sorted(shuffled[:n_train]),
        validate=sorted(shuffled[n_train : n_train + n_validate]),
        test=sorted(shuffled[n_train + n_validate :]),
        seed=data.split_seed,
        ratios=list(data.data_split),
    )


def _explicit(
    ids: Sequence[str], usable: Sequence[str], projects: CopickProjects | None, flag: str
) -> list[str]:
    keys = []
    for run_id in ids:
        key = projects.resolve(run_id).key if projects is not None else run_id
        if key not in usable:
            raise CopickDataError(
                f"{flag}: run {run_id!r} lacks the requested tomograms or targets; "
                f"usable runs: {', '.join(sorted(usable)) or 'none'}"
            )
        keys.append(key)
    return keys
