"""MRC files → copick tomograms."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from octopi.config import CopickSource, ImportConfig
from octopi.data.copick_io import CopickDataError, CopickProjects, write_project_config
from octopi.data.mrc_import import fourier_rescale, import_mrc_tomograms
from octopi.data.synthetic import czii_objects
from octopi.errors import InputError


def write_mrc(path: Path, volume: np.ndarray, voxel_size_angstrom: float | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(volume.astype(np.float32))
        if voxel_size_angstrom is not None:
            mrc.voxel_size = voxel_size_angstrom
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Config path of a fresh, empty copick project."""
    return write_project_config(tmp_path / "copick.json", tmp_path / "data", czii_objects())


def smooth_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(
        *(np.linspace(0, 2 * np.pi, n, endpoint=False) for n in shape), indexing="ij"
    )
    return (3.0 + np.sin(z) + np.cos(2 * y) * np.sin(x) + 0.01 * rng.normal(size=shape)).astype(
        np.float32
    )


def read_back(config_path: Path, run: str, voxel: float, algorithm: str = "wbp") -> np.ndarray:
    projects = CopickProjects([CopickSource(path=config_path)])
    return projects.load_tomogram(projects.resolve(run), voxel, algorithm)


def test_import_keeps_shape_and_values(project: Path, tmp_path: Path) -> None:
    volumes = {"TS_01": smooth_volume((8, 12, 16)), "TS-02": smooth_volume((6, 10, 14), seed=1)}
    for name, volume in volumes.items():
        write_mrc(tmp_path / "mrc" / f"{name}.mrc", volume, 10.0)
    (tmp_path / "mrc" / "README.txt").write_text("not a tomogram")
    imported = import_mrc_tomograms(
        ImportConfig(config=project, input_dir=tmp_path / "mrc", tomo_algorithm="denoised"),
        show_progress=False,
    )
    assert [item.run_name for item in imported] == ["TS-02", "TS_01"]
    assert [item.shape_zyx for item in imported] == [(6, 10, 14), (8, 12, 16)]
    assert {item.voxel_size_angstrom for item in imported} == {10.0}
    for name, volume in volumes.items():
        loaded = read_back(project, name, 10.0, "denoised")
        assert loaded.shape == volume.shape
        np.testing.assert_array_equal(loaded, volume)


def test_fourier_rescale_to_a_coarser_voxel_size(project: Path, tmp_path: Path) -> None:
    volume = smooth_volume((16, 24, 32))
    write_mrc(tmp_path / "mrc" / "run1.rec", volume, 5.0)
    (item,) = import_mrc_tomograms(
        ImportConfig(config=project, input_dir=tmp_path / "mrc", output_voxel_size_angstrom=10.0),
        show_progress=False,
    )
    assert (item.source_voxel_size_zyx_angstrom, item.voxel_size_angstrom) == ((5.0,) * 3, 10.0)
    assert item.shape_zyx == (8, 12, 16)
    loaded = read_back(project, "run1", 10.0)
    assert loaded.shape == (8, 12, 16)
    assert loaded.mean() == pytest.approx(volume.mean(), rel=1e-4)
    # Band-limited content survives binning: compare with plain 2x2x2 averaging.
    binned = volume.reshape(8, 2, 12, 2, 16, 2).mean(axis=(1, 3, 5))
    assert np.abs(loaded - binned).max() < 0.15 * np.ptp(binned)


def test_anisotropic_voxels_are_resampled_to_isotropic(project: Path, tmp_path: Path) -> None:
    volume = smooth_volume((8, 24, 32))
    path = write_mrc(tmp_path / "mrc" / "aniso.mrc", volume, None)
    with mrcfile.open(path, mode="r+") as mrc:
        mrc.voxel_size = (10.0, 10.0, 20.0)  # X, Y, Z: slices twice as thick
    (item,) = import_mrc_tomograms(
        ImportConfig(config=project, input_dir=tmp_path / "mrc"), show_progress=False
    )
    assert item.source_voxel_size_zyx_angstrom == (20.0, 10.0, 10.0)
    assert (item.voxel_size_angstrom, item.shape_zyx) == (10.0, (16, 24, 32))
    loaded = read_back(project, "aniso", 10.0)
    assert loaded.shape == (16, 24, 32)
    assert loaded.mean() == pytest.approx(volume.mean(), rel=1e-4)
    # Y and X are untouched by the Z resampling: averaging Z pairs gives the input back.
    restored = loaded.reshape(8, 2, 24, 32).mean(axis=1)
    assert np.abs(restored - volume).max() < 0.15 * np.ptp(volume)


def test_fourier_rescale_keeps_the_mean_when_upsampling() -> None:
    volume = smooth_volume((6, 8, 10))
    bigger = fourier_rescale(volume, 2.0)
    assert bigger.shape == (12, 16, 20) and bigger.dtype == np.float32
    assert bigger.mean() == pytest.approx(volume.mean(), rel=1e-4)


def test_file_name_copick_cannot_use_writes_nothing(project: Path, tmp_path: Path) -> None:
    write_mrc(tmp_path / "mrc" / "good.mrc", smooth_volume((4, 4, 4)), 10.0)
    write_mrc(tmp_path / "mrc" / "bad name.mrc", smooth_volume((4, 4, 4)), 10.0)
    with pytest.raises(CopickDataError, match="bad name.mrc: run name 'bad name' is not usable"):
        import_mrc_tomograms(
            ImportConfig(config=project, input_dir=tmp_path / "mrc"), show_progress=False
        )
    assert CopickProjects([CopickSource(path=project)]).runs() == []


def test_missing_voxel_size_in_the_header(project: Path, tmp_path: Path) -> None:
    write_mrc(tmp_path / "mrc" / "a.mrc", smooth_volume((4, 4, 4)), None)
    with pytest.raises(CopickDataError, match="a.mrc: the MRC header has no voxel size"):
        import_mrc_tomograms(
            ImportConfig(config=project, input_dir=tmp_path / "mrc"), show_progress=False
        )


def test_folder_without_mrc_files(project: Path, tmp_path: Path) -> None:
    (tmp_path / "mrc").mkdir()
    (tmp_path / "mrc" / "volume.tif").write_bytes(b"")
    with pytest.raises(CopickDataError, match=r"no \.mrc/\.rec/\.map files in .*mrc"):
        import_mrc_tomograms(
            ImportConfig(config=project, input_dir=tmp_path / "mrc"), show_progress=False
        )


def test_missing_folder(project: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="input folder not found"):
        import_mrc_tomograms(
            ImportConfig(config=project, input_dir=tmp_path / "nope"), show_progress=False
        )


def test_existing_tomogram_needs_overwrite(project: Path, tmp_path: Path) -> None:
    write_mrc(tmp_path / "mrc" / "run1.mrc", np.zeros((4, 6, 8)), 10.0)
    config = ImportConfig(config=project, input_dir=tmp_path / "mrc")
    import_mrc_tomograms(config, show_progress=False)
    write_mrc(tmp_path / "mrc" / "run1.mrc", np.ones((4, 6, 8)), 10.0)
    with pytest.raises(CopickDataError, match="run run1 already has tomogram 'wbp'.*--overwrite"):
        import_mrc_tomograms(config, show_progress=False)
    assert not read_back(project, "run1", 10.0).any()

    import_mrc_tomograms(config.model_copy(update={"overwrite": True}), show_progress=False)
    np.testing.assert_array_equal(read_back(project, "run1", 10.0), np.ones((4, 6, 8)))


def test_two_files_for_one_run_are_refused_before_writing(project: Path, tmp_path: Path) -> None:
    write_mrc(tmp_path / "mrc" / "run1.mrc", np.zeros((4, 4, 4)), 10.0)
    write_mrc(tmp_path / "mrc" / "run1.rec", np.ones((4, 4, 4)), 10.0)
    with pytest.raises(CopickDataError, match="run1.mrc and run1.rec would both be run 'run1'"):
        import_mrc_tomograms(
            ImportConfig(config=project, input_dir=tmp_path / "mrc"), show_progress=False
        )
    assert CopickProjects([CopickSource(path=project)]).runs() == []


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("truncated", "is truncated: its header announces 4 × 4 × 16 voxels (2048 bytes"),
        ("text", "is not a readable MRC file"),
        ("empty", "is not a readable MRC file"),
    ],
)
def test_a_corrupt_file_is_named_and_nothing_is_written(
    project: Path, tmp_path: Path, kind: str, problem: str
) -> None:
    write_mrc(tmp_path / "mrc" / "a.mrc", smooth_volume((4, 4, 4)), 10.0)
    bad = write_mrc(tmp_path / "mrc" / "b.mrc", smooth_volume((4, 4, 16)), 10.0)
    content = bad.read_bytes()
    bad.write_bytes(
        {"truncated": content[:-100], "text": b"voxel_size: 10\n" * 100, "empty": b""}[kind]
    )
    with pytest.raises(InputError) as caught:
        import_mrc_tomograms(
            ImportConfig(config=project, input_dir=tmp_path / "mrc"), show_progress=False
        )
    message = str(caught.value)
    assert message.startswith(f"{bad} {problem}") and "\n" not in message, message
    assert CopickProjects([CopickSource(path=project)]).runs() == []
