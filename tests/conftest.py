"""Shared fixtures: a tiny synthetic copick project, built once per test session.

``tiny_project`` is READ-ONLY: every test in the session sees the same files. A test that
writes into a project (new tomograms, picks, segmentations, runs) must use
``tiny_project_copy``, which gives it a private copy whose ``copick.json`` points at the copy.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from octopi.config import CopickSource, SynthesizeConfig, TargetsConfig, TargetSpec
from octopi.data.synthetic import SynthesisSummary


@pytest.fixture(autouse=True)
def _private_gpu_locks(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """GPU lock files of the tests (and their subprocesses) stay out of the machine's folder."""
    monkeypatch.setenv("OCTOPI_GPU_LOCK_DIR", str(tmp_path_factory.mktemp("gpu-locks")))


TINY_SHAPE_ZYX = (32, 48, 48)
TINY_VOXEL_SIZE_ANGSTROM = 20.0
TINY_RUNS = 4
TINY_SEED = 1
TINY_RADIUS_FRACTION = 0.7


@dataclass(frozen=True)
class TinyProject:
    """A synthetic copick project with targets, as made by :func:`tiny_project`.

    ``root`` is the project folder (``copick.json`` + ``data/``); ``config_path`` its copick
    config. Tomograms ``wbp`` and ``denoised`` of shape ``shape_zyx`` at
    ``voxel_size_angstrom``, ground-truth picks under ``curation/0`` and the target
    segmentation ``target`` (``targets,octopi,1``) exist in every run. ``summary`` is what
    :func:`~octopi.data.synthetic.synthesize_project` returned (particles per run and object);
    in a copy it still names the original's config path, so use ``config_path``.
    """

    root: Path
    config_path: Path
    run_names: list[str]
    summary: SynthesisSummary
    shape_zyx: tuple[int, int, int] = TINY_SHAPE_ZYX
    voxel_size_angstrom: float = TINY_VOXEL_SIZE_ANGSTROM
    target: TargetSpec = TargetSpec()

    @property
    def source(self) -> CopickSource:
        """The project as a :class:`~octopi.config.CopickSource` (no session name)."""
        return CopickSource(path=self.config_path)


def copy_project(project: TinyProject, destination: Path) -> TinyProject:
    """Copy ``project`` to ``destination`` and point its copick.json overlay at the copy."""
    shutil.copytree(project.root, destination)
    config_path = destination / project.config_path.name
    config = json.loads(config_path.read_text())
    config["overlay_root"] = f"local://{(destination / 'data').resolve()}"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return replace(project, root=destination, config_path=config_path)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path → (size, mtime in ns) of every file under ``root``."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file()
    }


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyProject]:
    """4 runs of (32, 48, 48) voxels at 20 Å, seed 1, with targets (balls of 0.7 × the
    particle radius). Do not modify it.

    At the end of the session the fixture checks that no file was added, removed or changed.
    """
    from octopi.data.synthetic import synthesize_project
    from octopi.data.targets import create_targets

    root = tmp_path_factory.mktemp("tiny") / "project"
    summary = synthesize_project(
        SynthesizeConfig(
            output=root,
            runs=TINY_RUNS,
            shape_zyx=TINY_SHAPE_ZYX,
            voxel_size_angstrom=TINY_VOXEL_SIZE_ANGSTROM,
            seed=TINY_SEED,
        ),
        show_progress=False,
    )
    create_targets(
        TargetsConfig(
            configs=[CopickSource(path=summary.config_path)],
            voxel_size_angstrom=TINY_VOXEL_SIZE_ANGSTROM,
            # The published ball size: at 20 Å the default 0.5 leaves apo-ferritin balls of
            # 1.5 voxels, too few for the tests that threshold blurred targets.
            radius_fraction=TINY_RADIUS_FRACTION,
        ),
        show_progress=False,
    )
    project = TinyProject(
        root=summary.config_path.parent,
        config_path=summary.config_path,
        run_names=sorted(summary.runs),
        summary=summary,
    )
    before = _snapshot(project.root)
    yield project
    changed = sorted(set(before.items()) ^ set(_snapshot(project.root).items()))
    assert not changed, (
        "a test modified the shared tiny_project; use tiny_project_copy instead. Changed: "
        + ", ".join(sorted({name for name, _ in changed})[:10])
    )


@pytest.fixture
def tiny_project_copy(tiny_project: TinyProject, tmp_path: Path) -> TinyProject:
    """A private, writable copy of :func:`tiny_project` (same runs, picks and targets)."""
    return copy_project(tiny_project, tmp_path / "project-copy")
