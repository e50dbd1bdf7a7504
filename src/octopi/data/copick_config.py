"""Writing a copick project's config file (filesystem backend). It is JSON only: nothing here
imports copick (:mod:`octopi.data.copick_io` reads projects)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from octopi.data.copick_io import ParticleObject


def write_project_config(
    config_path: str | Path,
    overlay_root: str | Path,
    objects: Sequence[ParticleObject],
    name: str = "octopi project",
    description: str = "",
) -> Path:
    """Write a filesystem copick config JSON whose data lives under ``overlay_root``."""
    config_path = Path(config_path)
    overlay_root = Path(overlay_root).resolve()
    config = {
        "config_type": "filesystem",
        "name": name,
        "description": description,
        "version": "1.31.0",
        "pickable_objects": [
            {
                "name": obj.name,
                "is_particle": obj.is_particle,
                "label": obj.label,
                "color": list(obj.color),
                "radius": obj.radius_angstrom,
                "pdb_id": obj.pdb_id,
                "map_threshold": None,
            }
            for obj in objects
        ],
        "overlay_root": f"local://{overlay_root}",
        "overlay_fs_args": {"auto_mkdir": True},
    }
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return config_path
