"""MRC tomograms → copick tomograms.

Labs keep reconstructions as MRC files; this reads each ``.mrc`` / ``.rec`` file of a folder,
takes the voxel size from its header, optionally resamples it in Fourier space to a target
voxel size, and writes it as tomogram ``algorithm`` of the run named after the file.

copick keeps one voxel size per tomogram, so a header with different sizes along Z, Y and X
(anisotropic voxels) is resampled per axis to isotropic voxels: of the target size when one
is given, else of the header's X size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from octopi.config import CopickSource, ImportConfig
from octopi.data.copick_io import CopickDataError, CopickProjects
from octopi.errors import InputError, MissingInputError

MRC_SUFFIXES = (".mrc", ".rec", ".map")
# Run names become directory names and the session/run separator is "/".
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


@dataclass(frozen=True)
class ImportedTomogram:
    """One file's import: ``shape_zyx`` and ``voxel_size_angstrom`` as written to copick,
    ``source_voxel_size_zyx_angstrom`` as the MRC header gives it."""

    run_name: str
    source: Path
    shape_zyx: tuple[int, int, int]
    source_voxel_size_zyx_angstrom: tuple[float, float, float]
    voxel_size_angstrom: float

    @property
    def resampled(self) -> bool:
        return any(v != self.voxel_size_angstrom for v in self.source_voxel_size_zyx_angstrom)


def _scaled_shape(shape: tuple[int, ...], factors: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(max(1, int(round(n * f))) for n, f in zip(shape, factors, strict=True))


def fourier_rescale(volume: np.ndarray, factor: float | tuple[float, float, float]) -> np.ndarray:
    """Resample a (Z, Y, X) volume by ``factor`` (new shape = round(shape × factor)), one
    factor for all axes or one per axis (Z, Y, X).

    Crops (factor < 1, binning without aliasing) or zero-pads (factor > 1) the centred
    spectrum, keeping the mean value. Returns float32.
    """
    factors = (factor,) * volume.ndim if np.isscalar(factor) else tuple(factor)
    new_shape = _scaled_shape(volume.shape, factors)
    spectrum = np.fft.fftshift(np.fft.fftn(volume.astype(np.float32)))
    out = np.zeros(new_shape, dtype=np.complex64)
    src, dst = [], []
    for old_n, new_n in zip(volume.shape, new_shape, strict=True):
        keep = min(old_n, new_n)
        src.append(slice(old_n // 2 - keep // 2, old_n // 2 - keep // 2 + keep))
        dst.append(slice(new_n // 2 - keep // 2, new_n // 2 - keep // 2 + keep))
    out[tuple(dst)] = spectrum[tuple(src)]
    result = np.fft.ifftn(np.fft.ifftshift(out)).real
    result *= np.prod(new_shape) / np.prod(volume.shape)
    return result.astype(np.float32)


def _read_header(path: Path) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Shape (Z, Y, X) in voxels and voxel size (Z, Y, X) in Å from the MRC header.

    Raises :class:`InputError` naming the file when it is not an MRC file or is shorter than
    its header says (truncated), so a bad file stops the import before anything is written.
    """
    import warnings

    import mrcfile
    from mrcfile.utils import dtype_from_mode

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # permissive: header oddities warn; checked below
            with mrcfile.open(path, permissive=True, header_only=True) as mrc:
                header = mrc.header
                shape = (int(header.nz), int(header.ny), int(header.nx))
                size = mrc.voxel_size
                voxel_zyx = (float(size.z), float(size.y), float(size.x))
                mode, extended = int(header.mode), int(header.nsymbt)
        itemsize = dtype_from_mode(mode).itemsize
    except (ValueError, TypeError, OverflowError) as error:
        raise InputError(f"{path} is not a readable MRC file ({error})") from error
    if min(shape) < 1:
        raise InputError(f"{path} is not a readable MRC file (its header gives shape {shape})")
    expected = 1024 + extended + itemsize * shape[0] * shape[1] * shape[2]
    found = path.stat().st_size
    if found < expected:
        raise InputError(
            f"{path} is truncated: its header announces {' × '.join(map(str, shape))} voxels "
            f"({expected} bytes with the header), the file holds {found} bytes"
        )
    return shape, voxel_zyx


def import_mrc_tomograms(
    config: ImportConfig, show_progress: bool = True
) -> list[ImportedTomogram]:
    """Import every MRC file of ``config.input_dir`` into the copick project ``config.config``.

    All files are checked (names, headers, existing tomograms) before the first is written.
    """
    import mrcfile
    from tqdm import tqdm

    folder = Path(config.input_dir)
    if not folder.is_dir():
        raise MissingInputError(f"input folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MRC_SUFFIXES)
    if not files:
        raise CopickDataError(f"no {'/'.join(MRC_SUFFIXES)} files in {folder}")
    projects = CopickProjects([CopickSource(path=config.config)])
    plan = _plan_imports(files, config, projects)

    for item in tqdm(plan, desc="import", unit="tomogram", disable=not show_progress):
        with mrcfile.open(item.source, permissive=True) as mrc:
            volume = np.asarray(mrc.data, dtype=np.float32)
        if item.resampled:
            target = item.voxel_size_angstrom
            volume = fourier_rescale(
                volume, tuple(v / target for v in item.source_voxel_size_zyx_angstrom)
            )
        projects.write_tomogram(
            item.run_name,
            item.voxel_size_angstrom,
            config.tomo_algorithm,
            volume,
            overwrite=config.overwrite,
        )
    return plan


def _plan_imports(
    files: list[Path], config: ImportConfig, projects: CopickProjects
) -> list[ImportedTomogram]:
    """One import per file, every file checked; raises before anything is written."""
    existing = {ref.run_name: ref for ref in projects.runs()}
    plan: list[ImportedTomogram] = []
    for path in files:
        name = path.stem
        if not _RUN_NAME.match(name):
            raise CopickDataError(
                f"{path.name}: run name {name!r} is not usable in copick; rename the file to "
                "letters, digits, '.', '_' and '-' (starting with a letter or digit)"
            )
        same_run = [item.source.name for item in plan if item.run_name == name]
        if same_run:
            raise CopickDataError(
                f"{same_run[0]} and {path.name} would both be run {name!r}; keep one of them "
                f"in {path.parent}"
            )
        shape, voxel_zyx = _read_header(path)
        if min(voxel_zyx) <= 0:
            sizes = " × ".join(f"{v:g}" for v in voxel_zyx)
            raise CopickDataError(
                f"{path.name}: the MRC header has no voxel size (Z × Y × X: {sizes} Å); set "
                "it (e.g. `alterheader`)"
            )
        target_voxel = config.output_voxel_size_angstrom or voxel_zyx[2]
        new_shape = _scaled_shape(shape, tuple(v / target_voxel for v in voxel_zyx))
        if name in existing and not config.overwrite:
            present = projects.tomogram_algorithms(existing[name], target_voxel)
            if config.tomo_algorithm in present:
                raise CopickDataError(
                    f"run {name} already has tomogram {config.tomo_algorithm!r} at voxel size "
                    f"{target_voxel:g}; pass --overwrite to replace it"
                )
        plan.append(ImportedTomogram(name, path, new_shape, voxel_zyx, target_voxel))
    return plan
