"""All access to copick projects. This is the only module of octopi that imports copick.

Conventions: tomograms and label volumes are numpy arrays indexed (Z, Y, X); particle
positions leave this module either as copick stores them, (N, 3) (x, y, z) in Å, or as
(N, 3) (z, y, x) voxel coordinates (``position_angstrom / voxel_size_angstrom``).
Several projects can be open at once; a run is then named ``session/run``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from octopi.config import CopickSource, PickSpec, TargetSpec
from octopi.data.copick_config import write_project_config as write_project_config
from octopi.data.copick_types import CopickDataError, ParticleObject, RunRef
from octopi.data.probability_store import (
    ProbabilityWriter,
    probability_calibration,
    probability_channels,
    read_probability,
)
from octopi.input_files import check_file, read_text_file

# copick logs every missing overlay file at INFO; users do not need that.
logging.getLogger("copick").setLevel(logging.WARNING)


def _available(items: Sequence[str]) -> str:
    return ", ".join(sorted(items)) if items else "none"


def _config_problem(error: Exception) -> str:
    """What copick found wrong with a config file, in one line."""
    if isinstance(error, CopickDataError):
        return str(error)
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
    if hasattr(error, "errors"):  # pydantic: the config's fields
        problems = [
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        ]
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        return "; ".join(problems[:5]) + more
    return f"{type(error).__name__}: {error}"


def _open_project(path: Path):
    """The copick project of config ``path``, read once and checked to be a JSON object
    before copick parses it (``copick.from_file`` is a read plus ``from_string``)."""
    import copick

    text = read_text_file(path, "copick config")
    try:
        values = json.loads(text)
        if not isinstance(values, dict):
            raise CopickDataError(f"expected a JSON object, found {type(values).__name__}")
        if values.get("config_type") == "filesystem":
            # What copick.from_string does for this type, without also importing the data
            # portal backend (its GraphQL client: about 0.3 s of every trial's start-up).
            from copick.impl.filesystem import CopickConfigFSSpec, CopickRootFSSpec

            return CopickRootFSSpec(CopickConfigFSSpec(**values))
        return copick.from_string(text)
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise CopickDataError(
            f"{path} is not a usable copick config: {_config_problem(error)}"
        ) from error


class CopickProjects:
    """One or more open copick projects, addressed by run keys."""

    def __init__(self, sources: Sequence[CopickSource]):
        if not sources:
            raise CopickDataError("no copick config given (--config path)")
        self.sources = list(sources)
        self._roots = []
        for source in self.sources:
            self._roots.append(_open_project(check_file(source.path, "copick config")))
        self._runs: dict[str, RunRef] | None = None

    # ------------------------------------------------------------------ objects and runs

    def objects(self, particles_only: bool = True) -> list[ParticleObject]:
        """Pickable objects of the first project, checked to agree with the others."""
        per_root = [self._root_objects(root, particles_only) for root in self._roots]
        for source, objects in zip(self.sources[1:], per_root[1:], strict=True):
            if {(o.name, o.label) for o in objects} != {(o.name, o.label) for o in per_root[0]}:
                raise CopickDataError(
                    f"copick project {source.path} defines other objects or labels than "
                    f"{self.sources[0].path}; all projects must share one object list"
                )
        return per_root[0]

    @staticmethod
    def _root_objects(root, particles_only: bool) -> list[ParticleObject]:
        objects = []
        for obj in root.pickable_objects:
            if particles_only and not obj.is_particle:
                continue
            color = tuple(obj.color) if obj.color is not None else (128, 128, 128, 255)
            objects.append(
                ParticleObject(
                    name=obj.name,
                    label=int(obj.label),
                    radius_angstrom=float(obj.radius or 0.0),
                    is_particle=bool(obj.is_particle),
                    color=color,
                    pdb_id=obj.pdb_id,
                )
            )
        return sorted(objects, key=lambda o: o.label)

    def runs(self) -> list[RunRef]:
        """Every run of every project, sorted by key."""
        return list(self._run_table().values())

    def _run_table(self) -> dict[str, RunRef]:
        if self._runs is None:
            table: dict[str, RunRef] = {}
            for index, (source, root) in enumerate(zip(self.sources, self._roots, strict=True)):
                for run in root.runs:
                    ref = RunRef(index, source.session_name, run.name)
                    table[ref.key] = ref
            self._runs = dict(sorted(table.items()))
        return self._runs

    def resolve(self, key: str) -> RunRef:
        """The run named ``key`` (``run`` or ``session/run``); error lists the runs there are."""
        table = self._run_table()
        if key in table:
            return table[key]
        matches = [ref for ref in table.values() if ref.run_name == key]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise CopickDataError(
                f"run {key!r} exists in several projects; name it as one of "
                f"{_available([m.key for m in matches])}"
            )
        raise CopickDataError(f"unknown run ID {key!r}; available: {_available(list(table))}")

    def _run(self, ref: RunRef):
        run = self._roots[ref.source_index].get_run(ref.run_name)
        if run is None:
            raise CopickDataError(f"run {ref.key} not found in {self.sources[ref.source_index]}")
        return run

    # ------------------------------------------------------------------ tomograms

    def voxel_sizes(self, ref: RunRef) -> list[float]:
        return sorted(float(vs.voxel_size) for vs in self._run(ref).voxel_spacings)

    def tomogram_algorithms(self, ref: RunRef, voxel_size_angstrom: float) -> list[str]:
        """Tomogram types present at the voxel size ([] when the voxel size is absent)."""
        spacing = self._run(ref).get_voxel_spacing(float(voxel_size_angstrom))
        if spacing is None:
            return []
        return sorted({tomo.tomo_type for tomo in spacing.tomograms})

    def _tomogram(self, ref: RunRef, voxel_size_angstrom: float, algorithm: str):
        spacing = self._run(ref).get_voxel_spacing(float(voxel_size_angstrom))
        if spacing is None:
            raise CopickDataError(
                f"no tomograms at voxel size {voxel_size_angstrom:g} in run {ref.key}; "
                f"available voxel sizes: {_available([f'{v:g}' for v in self.voxel_sizes(ref)])}"
            )
        tomograms = spacing.get_tomograms(algorithm)
        if not tomograms:
            raise CopickDataError(
                f"tomogram {algorithm!r} not found at voxel size {voxel_size_angstrom:g} in run "
                f"{ref.key}; available: "
                f"{_available(self.tomogram_algorithms(ref, voxel_size_angstrom))}"
            )
        return tomograms[0]

    def load_tomogram(self, ref: RunRef, voxel_size_angstrom: float, algorithm: str) -> np.ndarray:
        """Full-resolution tomogram as a (Z, Y, X) float32 array."""
        tomogram = self._tomogram(ref, voxel_size_angstrom, algorithm)
        return np.asarray(tomogram.numpy(), dtype=np.float32)

    def tomogram_shape(
        self, ref: RunRef, voxel_size_angstrom: float, algorithm: str
    ) -> tuple[int, int, int]:
        """(Z, Y, X) shape of the full-resolution tomogram, without reading it."""
        import zarr

        store = self._tomogram(ref, voxel_size_angstrom, algorithm).zarr()
        return tuple(int(n) for n in zarr.open(store, mode="r")["0"].shape)  # type: ignore[return-value]

    def write_tomogram(
        self,
        ref_or_name: RunRef | str,
        voxel_size_angstrom: float,
        algorithm: str,
        volume: np.ndarray,
        overwrite: bool = False,
        levels: int = 3,
    ) -> None:
        """Write a (Z, Y, X) volume as a multiscale copick tomogram (the run is created if new)."""
        run = self._run_or_new(ref_or_name)
        spacing = run.get_voxel_spacing(float(voxel_size_angstrom))
        if spacing is None:
            spacing = run.new_voxel_spacing(float(voxel_size_angstrom))
        if spacing.get_tomograms(algorithm) and not overwrite:
            raise CopickDataError(
                f"tomogram {algorithm!r} already exists at voxel size {voxel_size_angstrom:g} in "
                f"run {run.name}; pass overwrite to replace it"
            )
        tomogram = spacing.new_tomogram(algorithm, exist_ok=True)
        tomogram.from_numpy(np.ascontiguousarray(volume, dtype=np.float32), levels=levels)

    def _run_or_new(self, ref_or_name: RunRef | str):
        if isinstance(ref_or_name, RunRef):
            return self._run(ref_or_name)
        root = self._roots[0]
        run = root.get_run(ref_or_name)
        if run is None:
            run = root.new_run(ref_or_name)
            self._runs = None
        return run

    # ------------------------------------------------------------------ segmentations

    def _segmentations(self, ref: RunRef, voxel_size_angstrom: float, target: TargetSpec):
        return self._run(ref).get_segmentations(
            name=target.name,
            user_id=target.user_id,
            session_id=target.session_id,
            voxel_size=float(voxel_size_angstrom),
        )

    def has_segmentation(self, ref: RunRef, voxel_size_angstrom: float, target: TargetSpec) -> bool:
        return bool(self._segmentations(ref, voxel_size_angstrom, target))

    def segmentation_names(self, ref: RunRef, voxel_size_angstrom: float) -> list[str]:
        """Segmentations at the voxel size, as ``name,user_id,session_id``."""
        found = self._run(ref).get_segmentations(voxel_size=float(voxel_size_angstrom))
        return sorted({f"{s.name},{s.user_id},{s.session_id}" for s in found})

    def load_segmentation(
        self, ref: RunRef, voxel_size_angstrom: float, target: TargetSpec
    ) -> np.ndarray:
        """A segmentation as stored: (Z, Y, X) labels (or (C, Z, Y, X) scores if so written)."""
        found = self._segmentations(ref, voxel_size_angstrom, target)
        if not found:
            raise CopickDataError(
                f"segmentation {target} not found at voxel size {voxel_size_angstrom:g} in run "
                f"{ref.key}; available: "
                f"{_available(self.segmentation_names(ref, voxel_size_angstrom))}"
            )
        return np.asarray(found[0].numpy())

    def write_segmentation(
        self,
        ref: RunRef,
        voxel_size_angstrom: float,
        target: TargetSpec,
        labels: np.ndarray,
        multilabel: bool = True,
        probabilities: ProbabilityWriter | None = None,
    ) -> None:
        """Write (Z, Y, X) integer labels as a copick segmentation, replacing an older one (and
        its probabilities); ``probabilities`` (of :meth:`probability_writer`) go in with them.
        Their last writes are awaited first: if one failed, the older segmentation stays."""
        if probabilities is not None:
            probabilities.finish()
        run = self._run(ref)
        for old in self._segmentations(ref, voxel_size_angstrom, target):
            old.delete()  # not a write into the old store, which could mix old chunks
        segmentation = run.new_segmentation(
            voxel_size=float(voxel_size_angstrom),
            name=target.name,
            session_id=target.session_id,
            is_multilabel=multilabel,
            user_id=target.user_id,
            exist_ok=True,
        )
        segmentation.from_numpy(np.ascontiguousarray(labels), levels=1)
        if probabilities is not None:
            probabilities.commit(segmentation.zarr())

    def probability_writer(
        self,
        ref: RunRef,
        voxel_size_angstrom: float,
        target: TargetSpec,
        channels: dict[str, int],
        shape_czyx: tuple[int, int, int, int],
        calibration: dict[str, dict[str, float]] | None = None,
    ) -> ProbabilityWriter:
        """A streaming writer of (C, Z, Y, X) float16 probabilities (``channels``: class name →
        channel; ``calibration`` stored with them) for the multilabel segmentation ``target``;
        see :mod:`probability_store`."""
        from copick.util.segmentation import segmentation_store_name

        run = self._run(ref)
        if not hasattr(run, "fs_overlay"):
            raise CopickDataError(f"run {ref.key} has no filesystem overlay for probabilities")
        fs = getattr(run.fs_overlay, "_fs", run.fs_overlay)  # copick's wrapper cannot mv
        directory = f"{run.overlay_path}/Segmentations"  # the writer makes it if new
        v, user, session = float(voxel_size_angstrom), target.user_id, target.session_id
        store = segmentation_store_name(v, user, session, target.name, is_multilabel=True)
        return ProbabilityWriter(fs, f"{directory}/{store}", channels, shape_czyx, v, calibration)

    def probability_channels(self, ref: RunRef, voxel_size: float, target: TargetSpec) -> dict:
        """Class name → channel of the probabilities stored with ``target``; {} if none."""
        found = self._segmentations(ref, voxel_size, target)
        return probability_channels(found[0].zarr()) if found else {}

    def probability_calibration(
        self, ref: RunRef, voxel_size: float, target: TargetSpec
    ) -> dict[str, dict[str, float]]:
        """Class name → calibrated picking settings stored with ``target``'s probabilities."""
        found = self._segmentations(ref, voxel_size, target)
        return probability_calibration(found[0].zarr()) if found else {}

    def load_probability(
        self, ref: RunRef, voxel_size_angstrom: float, target: TargetSpec, class_name: str
    ) -> np.ndarray:
        """The stored (Z, Y, X) float16 probability of one class of ``target``."""
        channels = self.probability_channels(ref, voxel_size_angstrom, target)
        if class_name not in channels:
            raise CopickDataError(
                f"{target} of run {ref.key} has no {class_name} probabilities: {channels}"
            )
        store = self._segmentations(ref, voxel_size_angstrom, target)[0].zarr()
        return read_probability(store, channels[class_name])

    # ------------------------------------------------------------------ picks

    def load_picks_angstrom(self, ref: RunRef, object_name: str, picks: PickSpec) -> np.ndarray:
        """Positions of one object's picks as (N, 3) float64 (x, y, z) in Å; (0, 3) if none."""
        found = self._run(ref).get_picks(
            object_name=object_name, user_id=picks.user_id, session_id=picks.session_id
        )
        if not found or not found[0].points:
            return np.zeros((0, 3), dtype=np.float64)
        positions, _ = found[0].numpy()
        return np.asarray(positions, dtype=np.float64).reshape(-1, 3)

    def load_picks_voxel(
        self, ref: RunRef, object_name: str, picks: PickSpec, voxel_size_angstrom: float
    ) -> np.ndarray:
        """Positions as (N, 3) float64 (z, y, x) voxel coordinates at the voxel size."""
        return self.load_picks_angstrom(ref, object_name, picks)[:, ::-1] / voxel_size_angstrom

    def pick_sets(self, ref: RunRef) -> list[str]:
        """Pick sets of a run, as ``object,user_id,session_id``."""
        return sorted(
            f"{p.pickable_object_name},{p.user_id},{p.session_id}" for p in self._run(ref).picks
        )

    def write_picks(
        self,
        ref_or_name: RunRef | str,
        object_name: str,
        picks: PickSpec,
        positions_angstrom_xyz: np.ndarray,
        scores: np.ndarray | None = None,
    ) -> None:
        """Write (N, 3) (x, y, z) Å positions as copick picks, replacing older ones."""
        run = self._run_or_new(ref_or_name)
        known = {obj.name for obj in self._root_objects(self._roots[0], particles_only=False)}
        if object_name not in known:
            raise CopickDataError(
                f"object {object_name!r} is not defined in the copick project; "
                f"available: {_available(list(known))}"
            )
        pick_set = run.new_picks(
            object_name=object_name,
            session_id=picks.session_id,
            user_id=picks.user_id,
            exist_ok=True,
        )
        positions = np.asarray(positions_angstrom_xyz, dtype=np.float64).reshape(-1, 3)
        if len(positions):
            pick_set.from_numpy(positions, scores=scores)
        else:
            pick_set.points = []
            pick_set.store()
