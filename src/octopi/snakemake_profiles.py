"""Snakemake profiles: find the folder ``--profile NAME`` means, read its executor, and
install octopi's Slurm profile where Snakemake looks for the user's profiles."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import yaml

from octopi.workflow_runner import workflow_root

PROFILE_MANIFEST = ".octopi-profile.json"


class ProfileModifiedError(RuntimeError):
    """The installed profile was edited (or is not octopi's): it is kept unless forced."""


def profile_executor(profile: str | Path) -> str | None:
    """The ``executor`` a Snakemake profile folder sets (None: local)."""
    path = Path(profile)
    for name in ("config.yaml", "profile.yaml", "config.v8+.yaml"):
        if (path / name).is_file():
            values = yaml.safe_load((path / name).read_text()) or {}
            return values.get("executor")
    return None


def snakemake_profile_dir() -> Path:
    """Where ``snakemake --profile NAME`` looks for profiles of this user (~/.config/snakemake)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("snakemake", "snakemake"))


def find_profile(name: str) -> Path | None:
    """The folder ``--profile NAME`` means: a path, the user's installed copy, or octopi's own."""
    import platformdirs

    candidates = [
        Path(name).expanduser(),
        snakemake_profile_dir() / name,
        Path(platformdirs.site_config_dir("snakemake", "snakemake")) / name,
        workflow_root() / "profiles" / name,
    ]
    return next((c.resolve() for c in candidates if c.is_dir()), None)


def install_profile(
    name: str = "slurm", dest: str | Path | None = None, force: bool = False
) -> tuple[Path, str]:
    """Copy octopi's ``profiles/slurm`` to ``DEST/NAME`` (DEST: :func:`snakemake_profile_dir`).

    Returns (folder, what happened: ``installed``, ``updated``, ``up to date`` or ``replaced``,
    the last with the old copy moved to ``NAME.bak-<time>``). A copy that was edited since
    octopi installed it (the hashes in ``.octopi-profile.json`` differ) or that octopi did not
    install is replaced only with ``force``; otherwise :class:`ProfileModifiedError`.
    """
    from octopi import __version__

    source = workflow_root() / "profiles" / "slurm"
    target = (Path(dest).expanduser() if dest is not None else snakemake_profile_dir()) / name
    wanted = _file_hashes(source)
    manifest = {"octopi": __version__, "source": "profiles/slurm", "files": wanted}
    action = "installed"
    if target.exists():
        present = _file_hashes(target)
        try:
            recorded = json.loads((target / PROFILE_MANIFEST).read_text())["files"]
        except (OSError, ValueError, KeyError):
            recorded = None
        if present == wanted:
            action = "up to date"
        elif present == recorded:
            action = "updated"
        elif not force:
            reference = recorded or wanted
            keys = {*present, *reference}
            changed = sorted(k for k in keys if present.get(k) != reference.get(k))
            raise ProfileModifiedError(
                f"{target} exists and "
                + ("was changed since octopi installed it" if recorded else "is not octopi's")
                + f" ({', '.join(changed)}): your site settings would be lost. Compare with "
                f"`diff -ru {source} {target}`; give --force to replace it (the old copy is "
                "kept as a backup), or --name for another profile name"
            )
        else:
            backup = target.with_name(f"{name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
            target.rename(backup)
            action = f"replaced (old copy: {backup})"
    if action != "up to date":
        target.mkdir(parents=True, exist_ok=True)
        for relative in wanted:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, target / relative)
    (target / PROFILE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return target, action


def _file_hashes(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` but the manifest."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != PROFILE_MANIFEST and "__pycache__" not in path.parts
    }
