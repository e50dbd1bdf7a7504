"""copick access: round trips, unit conversions, several projects, and helpful errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from copick.models import CopickTomogram

from octopi.config import CopickSource, PickSpec, TargetSpec
from octopi.data.copick_io import (
    CopickDataError,
    CopickProjects,
    ParticleObject,
    RunRef,
    write_project_config,
)

OBJECTS = [
    ParticleObject(name="ribosome", label=2, radius_angstrom=150.0),
    ParticleObject(name="apo-ferritin", label=1, radius_angstrom=60.0),
    ParticleObject(name="membrane", label=3, radius_angstrom=0.0, is_particle=False),
]
PICKS = PickSpec(user_id="tester", session_id="3")


@pytest.fixture
def empty_project(tmp_path: Path) -> CopickProjects:
    """A fresh project with no runs, objects ``OBJECTS``."""
    config = write_project_config(tmp_path / "copick.json", tmp_path / "data", OBJECTS)
    return CopickProjects([CopickSource(path=config)])


def reopen(projects: CopickProjects) -> CopickProjects:
    """The same project(s) opened afresh, so reads come from disk, not copick's caches."""
    return CopickProjects(projects.sources)


# --------------------------------------------------------------------------- objects, runs


def test_objects_are_sorted_by_label_and_skip_non_particles(empty_project) -> None:
    assert [(o.name, o.label) for o in empty_project.objects()] == [
        ("apo-ferritin", 1),
        ("ribosome", 2),
    ]
    every = empty_project.objects(particles_only=False)
    assert [o.name for o in every] == ["apo-ferritin", "ribosome", "membrane"]
    assert every[1].radius_angstrom == 150.0


def test_runs_of_the_tiny_project(tiny_project) -> None:
    projects = CopickProjects([tiny_project.source])
    assert [ref.key for ref in projects.runs()] == tiny_project.run_names
    assert projects.resolve("TS_1") == RunRef(0, None, "TS_1")
    assert projects.voxel_sizes(projects.resolve("TS_1")) == [20.0]
    assert projects.tomogram_algorithms(projects.resolve("TS_1"), 20.0) == ["denoised", "wbp"]
    assert projects.tomogram_algorithms(projects.resolve("TS_1"), 10.0) == []


def test_a_filesystem_project_opens_without_the_data_portal_backend(empty_project) -> None:
    """Every trial opens the project before training: copick's data portal backend (a GraphQL
    client, about 0.3 s of imports) is not needed for a filesystem project."""
    config = str(empty_project.sources[0].path)
    code = (
        "import sys; from pathlib import Path; from octopi.config import CopickSource; "
        "from octopi.data.copick_io import CopickProjects; "
        f"projects = CopickProjects([CopickSource(path=Path({config!r}))]); "
        "assert [o.name for o in projects.objects()] == ['apo-ferritin', 'ribosome']; "
        "print(sorted(m for m in sys.modules if 'cryoet_data_portal' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "copick.json"
    with pytest.raises(FileNotFoundError, match=f"copick config not found: {missing}"):
        CopickProjects([CopickSource(path=missing)])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not valid JSON (Expecting value at line 1, column 1)"),
        ("[1, 2]", "expected a JSON object, found list"),
        ('{"name": "x"}', "pickable_objects: Field required"),
    ],
)
def test_a_broken_config_file_names_the_file_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "copick.json"
    path.write_text(text)
    with pytest.raises(CopickDataError, match="is not a usable copick config") as caught:
        CopickProjects([CopickSource(path=path)])
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_no_config_at_all() -> None:
    with pytest.raises(CopickDataError, match="no copick config"):
        CopickProjects([])


def test_unknown_run_lists_the_runs(tiny_project) -> None:
    projects = CopickProjects([tiny_project.source])
    with pytest.raises(CopickDataError, match="unknown run ID 'TS_9'; available: TS_0, TS_1"):
        projects.resolve("TS_9")


# --------------------------------------------------------------------------- tomograms


def test_tomogram_round_trip(empty_project) -> None:
    volume = np.random.default_rng(0).normal(size=(8, 12, 16)).astype(np.float64)
    empty_project.write_tomogram("run-a", 10.0, "wbp", volume, levels=1)
    projects = reopen(empty_project)
    ref = projects.resolve("run-a")
    loaded = projects.load_tomogram(ref, 10.0, "wbp")
    assert loaded.shape == (8, 12, 16)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, volume.astype(np.float32))
    assert projects.tomogram_shape(ref, 10.0, "wbp") == (8, 12, 16)


def test_tomogram_shape_does_not_read_the_volume(tiny_project, monkeypatch) -> None:
    projects = CopickProjects([tiny_project.source])
    ref = projects.resolve("TS_0")

    def no_reading(*args, **kwargs):
        raise AssertionError("tomogram_shape read the voxels")

    monkeypatch.setattr(CopickTomogram, "numpy", no_reading)
    monkeypatch.setattr(zarr.Array, "__getitem__", no_reading)
    assert projects.tomogram_shape(ref, 20.0, "wbp") == tiny_project.shape_zyx


def test_existing_tomogram_needs_overwrite(empty_project) -> None:
    empty_project.write_tomogram("run-a", 10.0, "wbp", np.zeros((4, 4, 4)), levels=1)
    with pytest.raises(CopickDataError, match="already exists.*pass overwrite"):
        empty_project.write_tomogram("run-a", 10.0, "wbp", np.ones((4, 4, 4)), levels=1)
    empty_project.write_tomogram("run-a", 10.0, "wbp", np.ones((4, 4, 4)), overwrite=True, levels=1)
    projects = reopen(empty_project)
    np.testing.assert_array_equal(
        projects.load_tomogram(projects.resolve("run-a"), 10.0, "wbp"), np.ones((4, 4, 4))
    )


def test_missing_tomogram_algorithm_lists_the_algorithms(tiny_project) -> None:
    projects = CopickProjects([tiny_project.source])
    with pytest.raises(
        CopickDataError,
        match=r"tomogram 'ctf' not found at voxel size 20 in run TS_0; available: denoised, wbp",
    ):
        projects.load_tomogram(projects.resolve("TS_0"), 20.0, "ctf")


def test_missing_voxel_size_lists_the_voxel_sizes(tiny_project) -> None:
    projects = CopickProjects([tiny_project.source])
    with pytest.raises(
        CopickDataError,
        match="no tomograms at voxel size 10 in run TS_0; available voxel sizes: 20",
    ):
        projects.tomogram_shape(projects.resolve("TS_0"), 10.0, "wbp")


# --------------------------------------------------------------------------- picks


def test_picks_round_trip_and_unit_conversion(empty_project) -> None:
    positions_xyz = np.array([[100.0, 200.0, 300.0], [15.0, 25.0, 35.0]])
    empty_project.write_picks("run-a", "ribosome", PICKS, positions_xyz)
    projects = reopen(empty_project)
    ref = projects.resolve("run-a")
    angstrom = projects.load_picks_angstrom(ref, "ribosome", PICKS)
    np.testing.assert_allclose(angstrom, positions_xyz)
    voxel = projects.load_picks_voxel(ref, "ribosome", PICKS, voxel_size_angstrom=10.0)
    np.testing.assert_allclose(voxel, [[30.0, 20.0, 10.0], [3.5, 2.5, 1.5]])  # (z, y, x)
    assert projects.pick_sets(ref) == ["ribosome,tester,3"]


def test_picks_are_replaced(empty_project) -> None:
    empty_project.write_picks("run-a", "ribosome", PICKS, np.ones((3, 3)))
    empty_project.write_picks("run-a", "ribosome", PICKS, np.full((1, 3), 7.0))
    projects = reopen(empty_project)
    loaded = projects.load_picks_angstrom(projects.resolve("run-a"), "ribosome", PICKS)
    np.testing.assert_allclose(loaded, [[7.0, 7.0, 7.0]])


def test_empty_picks(empty_project) -> None:
    empty_project.write_picks("run-a", "ribosome", PICKS, np.ones((2, 3)))
    empty_project.write_picks("run-a", "ribosome", PICKS, np.zeros((0, 3)))
    projects = reopen(empty_project)
    ref = projects.resolve("run-a")
    assert projects.pick_sets(ref) == ["ribosome,tester,3"]
    for object_name in ("ribosome", "apo-ferritin"):  # empty set, and no set at all
        loaded = projects.load_picks_angstrom(ref, object_name, PICKS)
        assert loaded.shape == (0, 3)
        assert projects.load_picks_voxel(ref, object_name, PICKS, 10.0).shape == (0, 3)


def test_picks_of_an_unknown_object_list_the_objects(empty_project) -> None:
    with pytest.raises(
        CopickDataError,
        match="object 'lysozyme' is not defined.*available: apo-ferritin, membrane, ribosome",
    ):
        empty_project.write_picks("run-a", "lysozyme", PICKS, np.zeros((1, 3)))


def test_ground_truth_picks_lie_inside_the_tomogram(tiny_project) -> None:
    projects = CopickProjects([tiny_project.source])
    ref = projects.resolve("TS_0")
    centres = projects.load_picks_voxel(ref, "ribosome", PickSpec(), 20.0)
    assert len(centres) == tiny_project.summary.runs["TS_0"]["ribosome"] > 0
    assert np.all(centres >= 0) and np.all(centres < np.array(tiny_project.shape_zyx))


# --------------------------------------------------------------------------- segmentations


def test_segmentation_round_trip_and_replacement(empty_project) -> None:
    target = TargetSpec(name="labels", user_id="me", session_id="2")
    empty_project.write_tomogram("run-a", 10.0, "wbp", np.zeros((6, 8, 10)), levels=1)
    ref = empty_project.resolve("run-a")
    first = np.zeros((6, 8, 10), dtype=np.uint8)
    first[1:3, 2:4, 3:9] = 2
    empty_project.write_segmentation(ref, 10.0, target, first)
    projects = reopen(empty_project)
    assert projects.has_segmentation(ref, 10.0, target)
    assert not projects.has_segmentation(ref, 10.0, TargetSpec(name="other"))
    np.testing.assert_array_equal(projects.load_segmentation(ref, 10.0, target), first)

    second = np.zeros((6, 8, 10), dtype=np.uint8)
    second[4, 5, 6] = 1
    projects.write_segmentation(ref, 10.0, target, second)
    projects = reopen(empty_project)
    np.testing.assert_array_equal(projects.load_segmentation(ref, 10.0, target), second)
    assert projects.segmentation_names(ref, 10.0) == ["labels,me,2"]


def test_missing_segmentation_lists_the_segmentations(tiny_project) -> None:
    projects = CopickProjects([tiny_project.source])
    with pytest.raises(
        CopickDataError,
        match=r"segmentation labels,octopi,1 not found .* available: targets,octopi,1",
    ):
        projects.load_segmentation(projects.resolve("TS_2"), 20.0, TargetSpec(name="labels"))


# --------------------------------------------------------------------------- several projects


@pytest.fixture
def two_sessions(tiny_project) -> CopickProjects:
    return CopickProjects(
        [
            CopickSource(path=tiny_project.config_path, session_name="a"),
            CopickSource(path=tiny_project.config_path, session_name="b"),
        ]
    )


def test_several_projects_use_session_run_keys(two_sessions, tiny_project) -> None:
    keys = [ref.key for ref in two_sessions.runs()]
    assert keys == [f"{s}/{r}" for s in "ab" for r in tiny_project.run_names]
    ref = two_sessions.resolve("b/TS_3")
    assert (ref.source_index, ref.session_name, ref.run_name) == (1, "b", "TS_3")
    assert two_sessions.load_tomogram(ref, 20.0, "wbp").shape == tiny_project.shape_zyx
    assert [o.name for o in two_sessions.objects()][0] == "apo-ferritin"


def test_plain_run_name_in_several_projects_is_ambiguous(two_sessions) -> None:
    with pytest.raises(CopickDataError, match="'TS_0' exists in several projects.*a/TS_0, b/TS_0"):
        two_sessions.resolve("TS_0")


def test_plain_run_name_in_one_project_resolves(tiny_project, tmp_path) -> None:
    other = write_project_config(tmp_path / "copick.json", tmp_path / "data", OBJECTS[:2])
    CopickProjects([CopickSource(path=other)]).write_picks(
        "only-here", "ribosome", PICKS, np.ones((1, 3))
    )
    projects = CopickProjects(
        [
            CopickSource(path=tiny_project.config_path, session_name="tiny"),
            CopickSource(path=other, session_name="other"),
        ]
    )
    assert projects.resolve("only-here").key == "other/only-here"
    assert projects.resolve("TS_0").key == "tiny/TS_0"


def test_projects_with_different_objects_are_refused(tiny_project, tmp_path) -> None:
    other = write_project_config(tmp_path / "copick.json", tmp_path / "data", OBJECTS)
    projects = CopickProjects(
        [
            CopickSource(path=tiny_project.config_path, session_name="tiny"),
            CopickSource(path=other, session_name="other"),
        ]
    )
    with pytest.raises(CopickDataError, match="must share one object list"):
        projects.objects()


def test_tiny_project_copy_is_independent_of_the_original(tiny_project, tiny_project_copy) -> None:
    copy = CopickProjects([tiny_project_copy.source])
    copy.write_tomogram("TS_0", 20.0, "extra", np.zeros((2, 2, 2)), levels=1)
    assert "extra" in reopen(copy).tomogram_algorithms(copy.resolve("TS_0"), 20.0)
    original = CopickProjects([tiny_project.source])
    assert original.tomogram_algorithms(original.resolve("TS_0"), 20.0) == ["denoised", "wbp"]
