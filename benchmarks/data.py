"""The benchmark data: synthetic copick projects that both tools read.

Two projects, both made with OUR ``octopi synthesize`` (six CZII particle classes, ``wbp`` and
``denoised`` tomograms at 10 Å, ground-truth picks ``curation,0``; ``DataSpec.preset`` picks
the generator's preset, ``default`` or ``hard``, set by ``python -m benchmarks run --preset``):

- ``train/``: training runs ``TS_0 .. TS_{n-2}`` and one validation run ``TS_{n-1}``;
- ``test/``: test runs (different seed; CZII-size 184×630×630 in the full suite), never seen
  in training, on which inference speed and pick quality are measured.

Segmentation targets (training only, on every run of ``train/``):

- ours: ``octopi create-targets`` → ``targets,octopi,1`` (our default radius fraction);
- published: octopi 1.7.0's training also needs the ``logs/targets-<user>_<session>_<name>.yaml``
  label file that only ITS ``create-targets`` writes (it reads the class names from there), so
  we run ITS ``octopi create-targets`` on the same project under another session:
  ``targets:octopi/2`` (its default radius scale 0.7). Each tool thus trains on the targets its
  own pipeline would make from the same picks.

Everything is built once per data description and reused (a ``data.json`` stamp holds the
description and our default target radius; a different one rebuilds). Building is atomic per
project (our ``synthesize`` writes to a temporary folder and renames it into place).
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import ours, published
from benchmarks.procs import run_measured, tail

VOXEL_SIZE = 10.0
TOMO_ALG = "wbp"
GT_PICKS = ("curation", "0")
OUR_TARGETS = ("targets", "octopi", "1")
PUBLISHED_TARGETS = ("targets", "octopi", "2")


@dataclass(frozen=True)
class DataSpec:
    """Sizes of the benchmark projects (Z, Y, X in voxels)."""

    train_runs: int  # training runs (one more run is made for validation)
    train_shape: tuple[int, int, int]
    test_runs: int
    test_shape: tuple[int, int, int]
    seed: int = 7
    preset: str = "default"  # `octopi synthesize --preset`: default or hard

    def stamp(self) -> dict:
        """The description a built data set is reused for (JSON types). The default preset
        is left out, so data built before presets existed is still reused."""
        spec = json.loads(json.dumps(asdict(self)))  # tuples → lists
        if spec["preset"] == "default":
            del spec["preset"]
        return spec


@dataclass(frozen=True)
class BenchData:
    """Paths and run roles of a built benchmark data set."""

    root: Path
    train_config: Path
    test_config: Path
    train_run_ids: list[str]
    validate_run_ids: list[str]
    test_run_ids: list[str]
    spec: DataSpec
    build_seconds: dict

    def describe(self) -> dict:
        return {
            "root": str(self.root),
            "train_config": str(self.train_config),
            "test_config": str(self.test_config),
            "train_run_ids": self.train_run_ids,
            "validate_run_ids": self.validate_run_ids,
            "test_run_ids": self.test_run_ids,
            "train_shape_zyx": list(self.spec.train_shape),
            "test_shape_zyx": list(self.spec.test_shape),
            "voxel_size_angstrom": VOXEL_SIZE,
            "tomo_alg": TOMO_ALG,
            "ground_truth_picks": ",".join(GT_PICKS),
            "our_targets": ",".join(OUR_TARGETS),
            "published_targets": ",".join(PUBLISHED_TARGETS),
            "seed": self.spec.seed,
            "preset": self.spec.preset,
            "build_seconds": self.build_seconds,
        }


def _our_target_settings() -> dict:
    """What our targets depend on besides the picks: our default ball radius (× the particle
    radius; stamps without it were made at 0.7, the default until 2026-12-04). Data made at
    another default is rebuilt, so a suite never trains on targets of an older default."""
    from octopi.config import TargetsConfig

    return {"our_radius_fraction": TargetsConfig.model_fields["radius_fraction"].default}


def _shape_arg(shape: tuple[int, int, int]) -> str:
    return ",".join(str(n) for n in shape)


def _check(result, what: str) -> None:
    if not result.ok:
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}); log {result.log}:\n{tail(result.log)}"
        )


def build(
    spec: DataSpec, root: Path, *, log_dir: Path, published_targets: bool = True
) -> BenchData:
    """Build (or reuse) the two projects and both tools' targets under ``root`` (our targets
    alone when not ``published_targets``: then the published tool need not be installed)."""
    stamp = root / "data.json"
    wanted = {"spec": spec.stamp(), "format": 1, **_our_target_settings()}
    n_total = spec.train_runs + 1
    runs = [f"TS_{i}" for i in range(n_total)]
    data = dict(
        root=root,
        train_config=root / "train" / "copick.json",
        test_config=root / "test" / "copick.json",
        train_run_ids=runs[:-1],
        validate_run_ids=runs[-1:],
        test_run_ids=[f"TS_{i}" for i in range(spec.test_runs)],
        spec=spec,
    )
    if stamp.exists():
        saved = json.loads(stamp.read_text())
        has_published = saved.get("published_targets", True)
        if saved.get("wanted") == wanted and (has_published or not published_targets):
            return BenchData(**data, build_seconds=saved["build_seconds"])
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    seconds: dict[str, float] = {}

    def timed(name: str, argv: list[str]) -> None:
        start = time.perf_counter()
        result = run_measured(argv, log_path=log_dir / f"data-{name}.log")
        _check(result, f"building benchmark data ({name})")
        seconds[name] = round(time.perf_counter() - start, 1)

    preset = ["--preset", spec.preset]
    train_shape, test_shape = _shape_arg(spec.train_shape), _shape_arg(spec.test_shape)
    # The two projects are independent processes, built side by side: on a machine of many
    # cores (the GPU check's) that halves the data time; each step's seconds are its own wall.
    synthesis = {
        "synthesize-train": ours.synthesize(root / "train", n_total, train_shape, spec.seed),
        "synthesize-test": ours.synthesize(
            root / "test", spec.test_runs, test_shape, spec.seed + 1
        ),
    }
    with ThreadPoolExecutor(max_workers=len(synthesis)) as pool:
        started = [pool.submit(timed, name, [*argv, *preset]) for name, argv in synthesis.items()]
        for future in started:
            future.result()
    timed("targets-ours", ours.create_targets(data["train_config"]))
    if published_targets:
        timed("targets-published", published.create_targets(data["train_config"]))
    saved = {"wanted": wanted, "published_targets": published_targets, "build_seconds": seconds}
    stamp.write_text(json.dumps(saved, indent=1))
    return BenchData(**data, build_seconds=seconds)
