"""Synthetic copick projects for demos, tests and benchmarks.

The volumes come from :mod:`octopi.data.synthetic_volume` (particles, tilt series, weighted
back-projection); this module lays them out as a copick project: a ``copick.json`` beside a
``data/`` overlay, tomograms ``wbp`` and ``denoised``, and ground-truth picks under
``config.picks`` (default user ``curation``, session ``0``, as in the CZII data), and a
``synthesis.json`` beside ``copick.json`` that records the preset and its settings.
The project is built in a temporary directory and renamed into place, so a failed or killed
run never leaves a project that looks complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from octopi.config import CopickSource, SynthesizeConfig
from octopi.data.copick_io import CopickProjects, ParticleObject, write_project_config
from octopi.data.synthetic_presets import preset_settings
from octopi.data.synthetic_run import simulate_run
from octopi.data.synthetic_volume import CZII_PARTICLES
from octopi.errors import OutputExistsError

TOMOGRAM_ALGORITHMS = ("wbp", "denoised")

# Colours and PDB IDs as in the CZII challenge's copick config.
_CZII_METADATA = {
    "apo-ferritin": ((0, 117, 220, 128), "4V1W"),
    "beta-amylase": ((153, 63, 0, 128), "1FA2"),
    "beta-galactosidase": ((76, 0, 92, 128), "6X1Q"),
    "ribosome": ((0, 92, 49, 128), "6EK0"),
    "thyroglobulin": ((43, 206, 72, 128), "6SCJ"),
    "virus-like-particle": ((255, 204, 153, 128), "6N4V"),
}


@dataclass(frozen=True)
class SynthesisSummary:
    """What `octopi synthesize` made."""

    config_path: Path
    runs: dict[str, dict[str, int]]  # run -> object -> number of particles
    shape_zyx: tuple[int, int, int]
    voxel_size_angstrom: float


def czii_objects() -> list[ParticleObject]:
    """The six CZII particle classes as copick objects."""
    return [
        ParticleObject(
            name=particle.name,
            label=particle.label,
            radius_angstrom=particle.radius_angstrom,
            color=_CZII_METADATA[particle.name][0],
            pdb_id=_CZII_METADATA[particle.name][1],
        )
        for particle in CZII_PARTICLES
    ]


def run_names(config: SynthesizeConfig) -> list[str]:
    return [f"{config.run_prefix}_{index}" for index in range(config.runs)]


def synthesis_record(config: SynthesizeConfig) -> dict:
    """What made the project: preset, its full settings, seed, shape and voxel size (JSON-able).

    Written as ``synthesis.json`` beside ``copick.json`` (with ``run_defocus_um``, each run's
    drawn defocus, where the preset has a CTF) so that a benchmark can say what data it ran on.
    """
    return {
        "generator": "octopi synthesize",
        "preset": config.preset,
        "settings": preset_settings(config.preset).to_dict(),
        "seed": config.seed,
        "run_seeds": {name: run_seed(config, i) for i, name in enumerate(run_names(config))},
        "shape_zyx": list(config.shape_zyx),
        "voxel_size_angstrom": config.voxel_size_angstrom,
    }


def run_seed(config: SynthesizeConfig, index: int) -> int:
    return config.seed * 10_000 + index


def _write_config(root: Path, data_dir: Path, config: SynthesizeConfig) -> Path:
    return write_project_config(
        root / "copick.json",
        data_dir,
        czii_objects(),
        name="octopi synthetic project",
        description=f"octopi synthesize, preset {config.preset}, seed {config.seed}, "
        f"shape {config.shape_zyx}",
    )


def _write_run(
    projects: CopickProjects, name: str, index: int, config: SynthesizeConfig
) -> tuple[dict[str, int], float | None]:
    """Simulate run ``index`` and write its tomograms and picks.

    Returns the particles per object and the run's CTF defocus in µm (None: no CTF).
    """
    run = simulate_run(
        config.shape_zyx, config.voxel_size_angstrom, seed=run_seed(config, index),
        preset=config.preset,
    )  # fmt: skip
    for algorithm in TOMOGRAM_ALGORITHMS:
        projects.write_tomogram(
            name, config.voxel_size_angstrom, algorithm, getattr(run, algorithm)
        )
    counts = {}
    for obj in czii_objects():
        centers = run.centers_voxel.get(obj.name)
        if centers is None:
            continue
        positions_angstrom_xyz = centers[:, ::-1] * config.voxel_size_angstrom
        projects.write_picks(name, obj.name, config.picks, positions_angstrom_xyz)
        counts[obj.name] = len(centers)
    return counts, run.defocus_um


def synthesize_project(config: SynthesizeConfig, show_progress: bool = True) -> SynthesisSummary:
    """Build the project described by ``config`` at ``config.output``.

    Raises ``FileExistsError`` when ``config.output`` already holds files.
    """
    from tqdm import tqdm

    output = Path(config.output).resolve()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise OutputExistsError(f"{output} exists and is not empty; choose a new --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        config_path = _write_config(staging, staging / "data", config)
        projects = CopickProjects([CopickSource(path=config_path)])
        counts: dict[str, dict[str, int]] = {}
        record = synthesis_record(config)
        names = run_names(config)
        for index, name in enumerate(
            tqdm(names, desc="synthesize", unit="run", disable=not show_progress)
        ):
            counts[name], defocus_um = _write_run(projects, name, index, config)
            if defocus_um is not None:
                record.setdefault("run_defocus_um", {})[name] = round(defocus_um, 4)
        (staging / "synthesis.json").write_text(json.dumps(record, indent=1))
        # Point copick.json at the final location before the rename makes the project visible.
        _write_config(staging, output / "data", config)
        if output.exists():
            output.rmdir()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SynthesisSummary(
        config_path=output / "copick.json",
        runs=counts,
        shape_zyx=tuple(config.shape_zyx),
        voxel_size_angstrom=config.voxel_size_angstrom,
    )
