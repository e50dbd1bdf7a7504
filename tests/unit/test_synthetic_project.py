"""Synthetic copick projects: readable by plain copick, reproducible, and built atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from octopi.config import PickSpec, SynthesizeConfig
from octopi.data import synthetic
from octopi.data.synthetic import czii_objects, synthesize_project

CZII_NAMES = [
    "apo-ferritin",
    "beta-amylase",
    "beta-galactosidase",
    "ribosome",
    "thyroglobulin",
    "virus-like-particle",
]


def test_project_reads_back_through_the_copick_api(tiny_project) -> None:
    import copick

    root = copick.from_file(str(tiny_project.config_path))
    assert sorted(run.name for run in root.runs) == ["TS_0", "TS_1", "TS_2", "TS_3"]
    objects = {obj.name: obj for obj in root.pickable_objects}
    assert sorted(objects) == CZII_NAMES
    assert [objects[name].label for name in CZII_NAMES] == [1, 2, 3, 4, 5, 6]
    assert objects["ribosome"].radius == 150.0 and objects["ribosome"].is_particle

    upper_angstrom = np.array(tiny_project.shape_zyx[::-1]) * 20.0  # (x, y, z) extent
    for run in root.runs:
        spacing = run.get_voxel_spacing(20.0)
        assert spacing is not None, run.name
        assert sorted(t.tomo_type for t in spacing.tomograms) == ["denoised", "wbp"]
        for algorithm in ("wbp", "denoised"):
            volume = spacing.get_tomograms(algorithm)[0].numpy()
            assert volume.shape == tiny_project.shape_zyx
            assert volume.dtype == np.float32 and np.isfinite(volume).all()
            assert volume.std() > 0
        expected_counts = tiny_project.summary.runs[run.name]
        assert sum(expected_counts.values()) > 0
        for name in CZII_NAMES:
            picks = run.get_picks(object_name=name, user_id="curation", session_id="0")
            assert len(picks) == 1, (run.name, name)
            positions = picks[0].numpy()[0] if picks[0].points else np.zeros((0, 3))
            assert len(positions) == expected_counts.get(name, 0)
            assert np.all(positions >= 0) and np.all(positions < upper_angstrom)
        segmentations = run.get_segmentations(
            name="targets", user_id="octopi", session_id="1", voxel_size=20.0
        )
        assert len(segmentations) == 1
        assert segmentations[0].numpy().shape == tiny_project.shape_zyx


def test_picks_mark_the_particles_in_the_denoised_tomogram(tiny_project) -> None:
    # The synthetic particles are dense: at the pick positions the denoised tomogram is
    # brighter than on average, so picks are in (z, y, x) order and in the right unit.
    import copick

    root = copick.from_file(str(tiny_project.config_path))
    at_picks, mean = [], []
    for run in root.runs:
        volume = run.get_voxel_spacing(20.0).get_tomograms("denoised")[0].numpy()
        for picks in run.get_picks(user_id="curation", session_id="0"):
            if not picks.points:
                continue
            xyz = picks.numpy()[0] / 20.0
            z, y, x = np.rint(xyz[:, ::-1]).astype(int).T
            at_picks.extend(volume[z, y, x])
        mean.append(volume.mean())
    assert np.mean(at_picks) > np.mean(mean) + 0.5


def test_same_seed_same_tomograms(tiny_project, tmp_path: Path) -> None:
    import copick

    again = synthesize_project(
        SynthesizeConfig(
            output=tmp_path / "again",
            runs=1,
            shape_zyx=tiny_project.shape_zyx,
            voxel_size_angstrom=20.0,
            seed=1,
        ),
        show_progress=False,
    )
    assert again.runs["TS_0"] == tiny_project.summary.runs["TS_0"]

    def wbp(config_path: Path, run: str) -> np.ndarray:
        root = copick.from_file(str(config_path))
        return root.get_run(run).get_voxel_spacing(20.0).get_tomograms("wbp")[0].numpy()

    np.testing.assert_array_equal(
        wbp(again.config_path, "TS_0"), wbp(tiny_project.config_path, "TS_0")
    )
    assert not np.array_equal(wbp(again.config_path, "TS_0"), wbp(tiny_project.config_path, "TS_1"))


def test_custom_picks_and_run_prefix(tmp_path: Path) -> None:
    import copick

    summary = synthesize_project(
        SynthesizeConfig(
            output=tmp_path / "p",
            runs=1,
            shape_zyx=(16, 24, 24),
            voxel_size_angstrom=30.0,
            picks=PickSpec(user_id="truth", session_id="9"),
            run_prefix="tomo",
        ),
        show_progress=False,
    )
    assert list(summary.runs) == ["tomo_0"]
    run = copick.from_file(str(summary.config_path)).get_run("tomo_0")
    assert {(p.user_id, p.session_id) for p in run.picks} == {("truth", "9")}


def test_existing_non_empty_output_is_refused_and_left_alone(tmp_path: Path) -> None:
    output = tmp_path / "busy"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    config = SynthesizeConfig(output=output, runs=1, shape_zyx=(16, 24, 24), voxel_size_angstrom=30)
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        synthesize_project(config, show_progress=False)
    assert [p.name for p in output.iterdir()] == ["notes.txt"]
    assert (output / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_existing_empty_output_is_used(tmp_path: Path) -> None:
    output = tmp_path / "empty"
    output.mkdir()
    config = SynthesizeConfig(output=output, runs=1, shape_zyx=(16, 24, 24), voxel_size_angstrom=30)
    summary = synthesize_project(config, show_progress=False)
    assert summary.config_path == output.resolve() / "copick.json"
    assert sorted(p.name for p in output.iterdir()) == ["copick.json", "data", "synthesis.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_failure_midway_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    calls = []
    real_simulate_run = synthetic.simulate_run

    def failing_simulate_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash in run 2")
        return real_simulate_run(*args, **kwargs)

    monkeypatch.setattr(synthetic, "simulate_run", failing_simulate_run)
    config = SynthesizeConfig(
        output=tmp_path / "project", runs=3, shape_zyx=(16, 24, 24), voxel_size_angstrom=30
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        synthesize_project(config, show_progress=False)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # neither the project nor its staging folder


def test_copick_config_points_at_the_final_location(tiny_project) -> None:
    import json

    config = json.loads(tiny_project.config_path.read_text())
    assert config["overlay_root"] == f"local://{(tiny_project.root / 'data').resolve()}"
    assert [o["name"] for o in config["pickable_objects"]] == CZII_NAMES
    assert [o.pdb_id for o in czii_objects()] == ["4V1W", "1FA2", "6X1Q", "6EK0", "6SCJ", "6N4V"]


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    output = tmp_path / "project"
    output.write_text("a file")
    config = SynthesizeConfig(output=output, runs=1, shape_zyx=(16, 24, 24), voxel_size_angstrom=30)
    with pytest.raises(FileExistsError, match="exists"):
        synthesize_project(config, show_progress=False)
    assert output.read_text() == "a file"
    assert [p.name for p in tmp_path.iterdir()] == ["project"]
