"""Picks → label volumes: ball drawing, overlaps, and `create_targets` on a copick project."""

from __future__ import annotations

import numpy as np
import pytest

from octopi.config import PickSpec, TargetsConfig, TargetSpec
from octopi.data.copick_io import CopickDataError, CopickProjects, ParticleObject
from octopi.data.targets import LabelledCentres, create_targets, render_label_volume

# --------------------------------------------------------------------------- render_label_volume


@pytest.mark.parametrize("radius", [5.0, 7.5, 12.0])
def test_ball_volume_is_close_to_four_thirds_pi_r_cubed(radius: float) -> None:
    centre = np.array([[20.3, 19.8, 20.5]])
    ball = LabelledCentres(label=3, centers_voxel=centre, radius_voxel=radius)
    labels = render_label_volume((40, 40, 40), [ball])
    assert labels.dtype == np.uint8 and labels.shape == (40, 40, 40)
    assert set(np.unique(labels)) == {0, 3}
    expected = 4.0 / 3.0 * np.pi * radius**3
    assert np.count_nonzero(labels) == pytest.approx(expected, rel=0.04)


def test_ball_includes_voxels_at_exactly_the_radius() -> None:
    # Integer points with x² + y² + z² ≤ 9: 123 (x² + y² + z² < 9 would give 93).
    ball = LabelledCentres(label=1, centers_voxel=np.array([[8.0, 8.0, 8.0]]), radius_voxel=3.0)
    assert np.count_nonzero(render_label_volume((17, 17, 17), [ball])) == 123


def test_ball_is_centred_on_z_y_x() -> None:
    ball = LabelledCentres(label=1, centers_voxel=np.array([[2.0, 10.0, 20.0]]), radius_voxel=1.0)
    labels = render_label_volume((5, 15, 25), [ball])
    assert sorted(map(tuple, np.argwhere(labels))) == sorted(
        [(2, 10, 20), (1, 10, 20), (3, 10, 20), (2, 9, 20), (2, 11, 20), (2, 10, 19), (2, 10, 21)]
    )


def test_balls_at_the_border_are_clipped() -> None:
    radius = 6.0
    corner = LabelledCentres(
        label=2, centers_voxel=np.array([[0.0, 0.0, 0.0]]), radius_voxel=radius
    )
    labels = render_label_volume((10, 10, 10), [corner])
    # One octant of the ball (plus the voxels on the three bounding planes).
    octant = 4.0 / 3.0 * np.pi * radius**3 / 8.0
    assert octant < np.count_nonzero(labels) < 1.6 * octant
    outside = LabelledCentres(label=2, centers_voxel=np.array([[-20.0, 5.0, 5.0]]), radius_voxel=3)
    assert np.count_nonzero(render_label_volume((10, 10, 10), [outside])) == 0


def test_overlap_goes_to_the_nearest_centre_relative_to_its_radius() -> None:
    # Big ball (r=8) at x=10, small ball (r=4) at x=20: at x=17 the distances are 7/8 and 3/4,
    # so the small ball wins although the voxel lies inside both.
    big = LabelledCentres(label=1, centers_voxel=np.array([[10.0, 10.0, 10.0]]), radius_voxel=8.0)
    small = LabelledCentres(label=2, centers_voxel=np.array([[10.0, 10.0, 20.0]]), radius_voxel=4.0)
    labels = render_label_volume((21, 21, 30), [big, small])
    assert labels[10, 10, 17] == 2
    assert labels[10, 10, 16] == 1  # 6/8 < 4/4
    assert labels[10, 10, 10] == 1 and labels[10, 10, 20] == 2
    assert labels[10, 10, 24] == 2 and labels[10, 10, 25] == 0


def test_overlaps_do_not_depend_on_input_order() -> None:
    rng = np.random.default_rng(7)
    objects = [
        LabelledCentres(label=label, centers_voxel=rng.uniform(0, 24, (15, 3)), radius_voxel=r)
        for label, r in [(1, 2.5), (2, 4.0), (5, 3.0)]
    ]
    reference = render_label_volume((24, 24, 24), objects)
    assert set(np.unique(reference)) == {0, 1, 2, 5}
    shuffled = [
        LabelledCentres(o.label, o.centers_voxel[::-1].copy(), o.radius_voxel)
        for o in reversed(objects)
    ]
    np.testing.assert_array_equal(render_label_volume((24, 24, 24), shuffled), reference)


def test_equal_relative_distance_goes_to_the_lower_label() -> None:
    high = LabelledCentres(label=4, centers_voxel=np.array([[5.0, 5.0, 8.0]]), radius_voxel=3.0)
    low = LabelledCentres(label=2, centers_voxel=np.array([[5.0, 5.0, 2.0]]), radius_voxel=3.0)
    for order in ([high, low], [low, high]):
        assert render_label_volume((11, 11, 11), order)[5, 5, 5] == 2


@pytest.mark.parametrize("label", [0, 256, -1])
def test_labels_out_of_range(label: int) -> None:
    ball = LabelledCentres(label=label, centers_voxel=np.zeros((1, 3)), radius_voxel=2.0)
    with pytest.raises(ValueError, match="1..255"):
        render_label_volume((4, 4, 4), [ball])


def test_no_picks_give_an_empty_volume() -> None:
    empty = LabelledCentres(label=1, centers_voxel=np.zeros((0, 3)), radius_voxel=2.0)
    labels = render_label_volume((3, 4, 5), [empty])
    assert labels.shape == (3, 4, 5) and not labels.any()


# --------------------------------------------------------------------------- create_targets


def targets_config(project, **overrides) -> TargetsConfig:
    return TargetsConfig(
        configs=[project.source], voxel_size_angstrom=project.voxel_size_angstrom, **overrides
    )


def test_every_run_gets_a_target_with_the_object_labels(tiny_project) -> None:
    projects = CopickProjects([tiny_project.source])
    objects = projects.objects()
    assert [o.label for o in objects] == [1, 2, 3, 4, 5, 6]
    for name in tiny_project.run_names:
        ref = projects.resolve(name)
        labels = projects.load_segmentation(ref, 20.0, tiny_project.target)
        assert labels.shape == tiny_project.shape_zyx
        present = set(np.unique(labels)) - {0}
        expected = {o.label for o in objects if tiny_project.summary.runs[name].get(o.name)}
        assert present == expected
        for obj in objects:
            centres = projects.load_picks_voxel(ref, obj.name, PickSpec(), 20.0)
            for z, y, x in np.rint(centres).astype(int):
                assert labels[z, y, x] == obj.label, (name, obj.name, (z, y, x))


def test_create_targets_returns_pick_counts_and_writes_a_new_target(tiny_project_copy) -> None:
    target = TargetSpec(name="small", user_id="me", session_id="5")
    summary = create_targets(
        targets_config(
            tiny_project_copy,
            target=target,
            objects=["ribosome", "apo-ferritin"],
            run_ids=["TS_1"],
        ),
        show_progress=False,
    )
    expected = tiny_project_copy.summary.runs["TS_1"]
    assert summary == {
        "TS_1": {"ribosome": expected["ribosome"], "apo-ferritin": expected["apo-ferritin"]}
    }
    projects = CopickProjects([tiny_project_copy.source])
    labels = projects.load_segmentation(projects.resolve("TS_1"), 20.0, target)
    assert set(np.unique(labels)) == {0, 1, 4}
    assert not projects.has_segmentation(projects.resolve("TS_0"), 20.0, target)


def test_unknown_object(tiny_project) -> None:
    with pytest.raises(CopickDataError, match="unknown object.*lysozyme.*defines: apo-ferritin"):
        create_targets(targets_config(tiny_project, objects=["lysozyme"]), show_progress=False)


def test_unknown_run(tiny_project) -> None:
    with pytest.raises(CopickDataError, match="unknown run ID 'TS_7'"):
        create_targets(targets_config(tiny_project, run_ids=["TS_7"]), show_progress=False)


def test_wrong_pick_user_lists_the_pick_sets(tiny_project) -> None:
    config = targets_config(tiny_project, picks=PickSpec(user_id="someone", session_id="0"))
    with pytest.raises(
        CopickDataError,
        match=r"no picks by user 'someone', session '0'.*apo-ferritin,curation,0",
    ):
        create_targets(config, show_progress=False)


def test_run_without_tomograms_at_the_voxel_size(tiny_project) -> None:
    with pytest.raises(
        CopickDataError,
        match="run TS_0 has no tomogram at voxel size 10.*available voxel sizes: 20",
    ):
        create_targets(
            TargetsConfig(configs=[tiny_project.source], voxel_size_angstrom=10.0),
            show_progress=False,
        )


def test_nothing_is_written_when_validation_fails(tiny_project_copy) -> None:
    import copick

    root = copick.from_file(str(tiny_project_copy.config_path))
    root.new_run("TS_9")  # a run with no tomograms, sorted after the good runs
    target = TargetSpec(name="fresh")
    with pytest.raises(CopickDataError, match="run TS_9 has no tomogram"):
        create_targets(targets_config(tiny_project_copy, target=target), show_progress=False)
    projects = CopickProjects([tiny_project_copy.source])
    assert [ref.key for ref in projects.runs()] == [*tiny_project_copy.run_names, "TS_9"]
    for ref in projects.runs():
        assert not projects.has_segmentation(ref, 20.0, target), ref.key


class _Objects:
    """A stand-in for CopickProjects: only its particle objects."""

    def __init__(self, *objects: ParticleObject) -> None:
        self._objects = list(objects)

    def objects(self) -> list[ParticleObject]:
        return self._objects


def test_one_object_selection_for_create_targets_localize_and_evaluate() -> None:
    from octopi.data.targets import select_objects
    from octopi.inference import localize_stages as stages

    apo, ribo = ParticleObject("apo", 1, 60.0), ParticleObject("ribo", 2, 0.0)
    projects = _Objects(apo, ribo)
    assert select_objects(projects, ["apo"]) == [apo]
    with pytest.raises(CopickDataError, match="unknown object.*nope.*defines: apo, ribo"):
        select_objects(projects, ["nope"])
    # create-targets now gives the same fix as localize: set the radius or leave it out.
    with pytest.raises(CopickDataError, match="ribo have no radius.*leave them out with --objects"):
        select_objects(projects, None)
    assert select_objects(_Objects(), None) == []
    with pytest.raises(CopickDataError, match="defines no particle objects"):
        stages.select_objects(_Objects(), None)
    with pytest.raises(CopickDataError, match="defines: none"):
        stages.select_objects(_Objects(), ["apo"])
