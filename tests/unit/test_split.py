"""Run discovery and the train / validation / test split."""

from __future__ import annotations

import pytest

from octopi.config import CopickSource, DataConfig, TargetSpec
from octopi.data.copick_io import CopickDataError, CopickProjects
from octopi.data.split import Discovery, RunSplit, discover_runs, split_runs

RUN_KEYS = [f"run{i:02d}" for i in range(20)]


def data_for(project, **overrides) -> DataConfig:
    values = {"configs": [project.source], "voxel_size_angstrom": project.voxel_size_angstrom}
    return DataConfig(**{**values, **overrides})


def data_without_project(**overrides) -> DataConfig:
    return DataConfig(configs=[CopickSource.parse("unused/copick.json")], **overrides)


# --------------------------------------------------------------------------- discovery


def test_discovery_finds_every_run_of_the_tiny_project(tiny_project) -> None:
    data = data_for(tiny_project, tomo_algorithms=["denoised", "wbp"])
    discovery = discover_runs(CopickProjects(data.configs), data)
    assert discovery == Discovery(usable=tiny_project.run_names, skipped={})
    assert discovery.to_dict() == {"usable": tiny_project.run_names, "skipped": {}}


def test_runs_without_tomograms_or_targets_are_skipped_with_the_reason(tiny_project_copy) -> None:
    import copick

    root = copick.from_file(str(tiny_project_copy.config_path))
    # TS_0 loses its targets, TS_1 its wbp tomogram.
    root.get_run("TS_0").delete_segmentations(
        name="targets", user_id="octopi", session_id="1", voxel_size=20.0, is_multilabel=True
    )
    root.get_run("TS_1").get_voxel_spacing(20.0).delete_tomograms("wbp")
    data = data_for(tiny_project_copy)
    discovery = discover_runs(CopickProjects(data.configs), data)
    assert discovery.usable == ["TS_2", "TS_3"]
    assert discovery.skipped == {
        "TS_0": "no target segmentation targets,octopi,1",
        "TS_1": "no tomogram wbp at voxel size 20 (available: denoised)",
    }


def test_no_usable_run_says_why_for_each_run(tiny_project) -> None:
    data = data_for(tiny_project, tomo_algorithms=["wbp", "ctf"], target=TargetSpec(name="x"))
    with pytest.raises(CopickDataError) as error:
        discover_runs(CopickProjects(data.configs), data)
    message = str(error.value)
    assert message.startswith("no usable runs found")
    assert "octopi create-targets" in message
    for name in tiny_project.run_names:
        assert f"  {name}: no tomogram ctf at voxel size 20 (available: denoised, wbp)" in message


def test_no_usable_run_because_of_the_voxel_size(tiny_project) -> None:
    data = data_for(tiny_project, voxel_size_angstrom=10.0)
    with pytest.raises(CopickDataError, match=r"TS_3: no tomogram wbp at voxel size 10 \(avail"):
        discover_runs(CopickProjects(data.configs), data)


def test_discovery_over_two_projects_uses_session_keys(tiny_project) -> None:
    data = data_for(
        tiny_project,
        configs=[
            CopickSource(path=tiny_project.config_path, session_name="a"),
            CopickSource(path=tiny_project.config_path, session_name="b"),
        ],
    )
    usable = discover_runs(CopickProjects(data.configs), data).usable
    assert usable == [f"{s}/{r}" for s in "ab" for r in tiny_project.run_names]


# --------------------------------------------------------------------------- ratio split


def assert_partition(split: RunSplit, keys: list[str]) -> None:
    roles = [split.train, split.validate, split.test]
    assert sorted(k for role in roles for k in role) == sorted(keys)
    assert len({k for role in roles for k in role}) == len(keys)
    assert all(role == sorted(role) for role in roles)


@pytest.mark.parametrize(
    ("n_runs", "ratios", "counts"),
    [
        (20, [0.8], (16, 4, 0)),
        (10, [0.8], (8, 2, 0)),
        (4, [0.8], (3, 1, 0)),
        (20, [0.7, 0.1], (14, 2, 4)),
        (10, [0.7, 0.1], (7, 1, 2)),
    ],
)
def test_ratio_split_counts(n_runs: int, ratios: list[float], counts: tuple) -> None:
    keys = RUN_KEYS[:n_runs]
    split = split_runs(keys, data_without_project(data_split=ratios))
    assert (len(split.train), len(split.validate), len(split.test)) == counts
    assert_partition(split, keys)
    assert split.ratios == ratios and split.seed == 42


def test_ratio_split_is_deterministic_per_seed_and_ignores_input_order() -> None:
    data = data_without_project(split_seed=3)
    first = split_runs(RUN_KEYS, data)
    assert split_runs(list(reversed(RUN_KEYS)), data) == first
    assert RunSplit.from_dict(first.to_dict()) == first


def test_different_seeds_give_different_splits() -> None:
    splits = {
        tuple(split_runs(RUN_KEYS, data_without_project(split_seed=seed)).validate)
        for seed in range(5)
    }
    assert len(splits) > 1


def test_the_default_split_is_shuffled() -> None:
    split = split_runs(RUN_KEYS, data_without_project())
    assert split.train != RUN_KEYS[:16]


@pytest.mark.parametrize(
    ("n_runs", "ratios", "message"),
    [
        (1, [0.8], "data split [0.8] of 1 usable runs gives 1 train, 0 validation"),
        (2, [0.2], "of 2 usable runs gives 0 train, 2 validation: the train set would be empty"),
        (4, [0.7, 0.1], "gives 3 train, 0 validation, 1 test: the validation set would be empty"),
        (3, [0.5, 0.4], "gives 2 train, 1 validation, 0 test: the test set would be empty"),
    ],
)
def test_a_split_with_an_empty_role_is_refused(n_runs, ratios, message) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        split_runs(RUN_KEYS[:n_runs], data_without_project(data_split=ratios))


# --------------------------------------------------------------------------- explicit IDs


def test_explicit_ids_are_taken_as_given(tiny_project) -> None:
    data = data_for(tiny_project, train_run_ids=["TS_2", "TS_0"], validate_run_ids=["TS_3"])
    projects = CopickProjects(data.configs)
    split = split_runs(tiny_project.run_names, data, projects)
    assert split == RunSplit(train=["TS_2", "TS_0"], validate=["TS_3"], test=[])


def test_explicit_ids_resolve_to_session_run_keys(tiny_project) -> None:
    data = data_for(
        tiny_project,
        configs=[
            CopickSource(path=tiny_project.config_path, session_name="a"),
            CopickSource(path=tiny_project.config_path, session_name="b"),
        ],
        train_run_ids=["a/TS_0", "b/TS_1"],
        validate_run_ids=["b/TS_0"],
    )
    projects = CopickProjects(data.configs)
    usable = discover_runs(projects, data).usable
    split = split_runs(usable, data, projects)
    assert (split.train, split.validate) == (["a/TS_0", "b/TS_1"], ["b/TS_0"])


def test_explicit_plain_ids_resolve_when_unambiguous(tiny_project) -> None:
    data = data_for(
        tiny_project,
        configs=[CopickSource(path=tiny_project.config_path, session_name="a")],
        train_run_ids=["TS_0"],
        validate_run_ids=["a/TS_1"],
    )
    projects = CopickProjects(data.configs)
    split = split_runs(discover_runs(projects, data).usable, data, projects)
    assert (split.train, split.validate) == (["a/TS_0"], ["a/TS_1"])


def test_explicit_id_that_does_not_exist(tiny_project) -> None:
    data = data_for(tiny_project, train_run_ids=["TS_0"], validate_run_ids=["TS_8"])
    with pytest.raises(CopickDataError, match="unknown run ID 'TS_8'; available: TS_0"):
        split_runs(tiny_project.run_names, data, CopickProjects(data.configs))


def test_explicit_id_that_is_not_usable(tiny_project) -> None:
    data = data_for(tiny_project, train_run_ids=["TS_0", "TS_1"], validate_run_ids=["TS_2"])
    usable = ["TS_0", "TS_2", "TS_3"]  # as if TS_1 lacked targets
    with pytest.raises(
        CopickDataError,
        match=r"--trainRunIDs: run 'TS_1' lacks .*usable runs: TS_0, TS_2, TS_3",
    ):
        split_runs(usable, data, CopickProjects(data.configs))


def test_explicit_ids_overlapping_after_resolution(tiny_project) -> None:
    data = data_for(
        tiny_project,
        configs=[CopickSource(path=tiny_project.config_path, session_name="a")],
        train_run_ids=["TS_0", "a/TS_1"],
        validate_run_ids=["a/TS_0"],
    )
    projects = CopickProjects(data.configs)
    usable = discover_runs(projects, data).usable
    with pytest.raises(ValueError, match="runs both in training and validation: a/TS_0"):
        split_runs(usable, data, projects)


def test_explicit_ids_without_projects_are_checked_against_usable() -> None:
    data = data_without_project(train_run_ids=["run00"], validate_run_ids=["nope"])
    with pytest.raises(CopickDataError, match="--validateRunIDs: run 'nope'"):
        split_runs(RUN_KEYS, data)


def test_split_of_session_run_keys() -> None:
    keys = [f"s{i % 2}/r{i}" for i in range(6)]
    split = split_runs(keys, data_without_project(data_split=[0.5]))
    assert (len(split.train), len(split.validate)) == (3, 3)
    assert_partition(split, keys)
