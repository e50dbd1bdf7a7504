"""The data-preparation commands of `octopi`, and `python -m octopi.demo`, through click."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from octopi.cli import main
from octopi.config import workflow_json_schema

DATA_COMMANDS = ["synthesize", "import", "create-targets", "discover-runs", "split-runs", "schema"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_failure(result: Result, *fragments: str) -> str:
    """The command failed with a short message (no traceback) containing ``fragments``."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 6, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    return result.output


# --------------------------------------------------------------------------- help


def test_help_lists_the_data_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0, repr(result.exception)  # e.g. a listed module is missing
    commands = result.output.split("Commands:")[1]
    for name in DATA_COMMANDS:
        assert f"\n  {name} " in commands


def test_help_does_not_import_torch() -> None:
    # `octopi --help` (and Snakemake dry runs) must not pay for the heavy imports.
    code = (
        "import sys; from click.testing import CliRunner; from octopi.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); "
        "assert r.exit_code == 0, repr(r.exception); "
        "print(sorted({'torch', 'monai', 'copick', 'optuna', 'mlflow'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- end to end


def test_synthesize_targets_discover_split_end_to_end(tmp_path: Path) -> None:
    project = tmp_path / "project"
    result = invoke(
        "synthesize", "--output", project, "--runs", 4, "--shape", "16,24,24",
        "--voxel-size", 30, "--seed", 3,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 4 runs of shape (16, 24, 24) at 30 Å" in result.output
    config = project / "copick.json"
    assert f"copick config: {config.resolve()}" in result.output
    resolved = yaml.safe_load((project / "synthesize_config.yaml").read_text())
    assert resolved["command"] == "synthesize"
    assert (resolved["runs"], resolved["shape_zyx"], resolved["seed"]) == (4, [16, 24, 24], 3)
    assert resolved["picks"] == {"user_id": "curation", "session_id": "0"}

    result = invoke(
        "create-targets", "--config", config, "--voxel-size", 30, "--output", tmp_path / "targets"
    )
    assert result.exit_code == 0, result.output
    assert "wrote target segmentation targets,octopi,1 for 4 runs" in result.output
    resolved = yaml.safe_load((tmp_path / "targets" / "create-targets_config.yaml").read_text())
    assert resolved["command"] == "create-targets"
    assert resolved["target"] == {"name": "targets", "user_id": "octopi", "session_id": "1"}
    assert resolved["voxel_size_angstrom"] == 30.0 and resolved["radius_fraction"] == 0.5
    counts = json.loads((tmp_path / "targets" / "targets.json").read_text())
    assert sorted(counts) == ["TS_0", "TS_1", "TS_2", "TS_3"]

    runs_json = tmp_path / "study" / "runs.json"
    result = invoke("discover-runs", "--config", config, "--voxel-size", 30, "--output", runs_json)
    assert result.exit_code == 0, result.output
    assert "4 usable runs, 0 skipped" in result.output
    runs = json.loads(runs_json.read_text())
    assert runs["usable"] == ["TS_0", "TS_1", "TS_2", "TS_3"]
    assert runs["data"]["tomo_algorithms"] == ["wbp"] and runs["data"]["voxel_size_angstrom"] == 30

    split_json = tmp_path / "study" / "split.json"
    result = invoke(
        "split-runs", "--config", config, "--voxel-size", 30, "--runs-file", runs_json,
        "--data-split", "0.6,0.2", "--seed", 7, "--output", split_json,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "train 2, validation 1, test 1" in result.output
    split = json.loads(split_json.read_text())
    assert (len(split["train"]), len(split["validate"]), len(split["test"])) == (2, 1, 1)
    assert sorted(split["train"] + split["validate"] + split["test"]) == runs["usable"]
    assert (split["seed"], split["ratios"], split["data"]["split_seed"]) == (7, [0.6, 0.2], 7)

    # Without --runs-file the split discovers the runs itself and gives the same answer.
    again = tmp_path / "study" / "split-again.json"
    result = invoke(
        "split-runs", "--config", config, "--voxel-size", 30, "--data-split", "0.6,0.2",
        "--seed", 7, "--output", again,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(again.read_text()) == split

    result = invoke(
        "split-runs", "--config", config, "--voxel-size", 30, "--trainRunIDs", "TS_0,TS_1",
        "--validateRunIDs", "TS_3", "--output", split_json,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    split = json.loads(split_json.read_text())
    assert (split["train"], split["validate"], split["test"]) == (["TS_0", "TS_1"], ["TS_3"], [])


def test_schema_command_writes_the_workflow_schema(tmp_path: Path) -> None:
    expected = json.dumps(workflow_json_schema(), indent=2) + "\n"
    result = invoke("schema", "--output", tmp_path / "schema.json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "schema.json").read_text() == expected
    result = invoke("schema")
    assert result.exit_code == 0 and result.output == expected


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("split", "fragments"),
    [
        ("1.5", ["data_split", "strictly between 0 and 1"]),
        ("0.7,0.4", ["sum to less than 1"]),
        ("0.8,abc", ["--data-split", "comma-separated list of floats"]),
    ],
)
def test_bad_data_split(tiny_project, tmp_path: Path, split: str, fragments: list[str]) -> None:
    result = invoke(
        "split-runs", "--config", tiny_project.config_path, "--voxel-size", 20,
        "--data-split", split, "--output", tmp_path / "split.json",
    )  # fmt: skip
    assert_clean_failure(result, *fragments)
    assert not (tmp_path / "split.json").exists()


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("targets,octopi", "expected 'name' or 'name,user_id,session_id'"),
        ("my_targets", "not a valid copick name"),
    ],
)
def test_bad_target_info(tiny_project, tmp_path: Path, target: str, fragment: str) -> None:
    result = invoke(
        "discover-runs", "--config", tiny_project.config_path, "--voxel-size", 20,
        "--target-info", target, "--output", tmp_path / "runs.json",
    )  # fmt: skip
    assert_clean_failure(result, fragment)


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    result = invoke("discover-runs", "--config", missing, "--output", tmp_path / "runs.json")
    assert_clean_failure(result, f"copick config not found: {missing}")
    result = invoke("create-targets", "--config", missing)
    assert_clean_failure(result, "copick config not found")


def test_unknown_tomo_alg(tiny_project, tmp_path: Path) -> None:
    result = invoke(
        "discover-runs", "--config", tiny_project.config_path, "--voxel-size", 20,
        "--tomo-alg", "wbp,ctf", "--output", tmp_path / "runs.json",
    )  # fmt: skip
    output = result.output
    assert result.exit_code != 0 and "Traceback" not in output
    assert "no usable runs found" in output
    assert "TS_0: no tomogram ctf at voxel size 20 (available: denoised, wbp)" in output
    assert not (tmp_path / "runs.json").exists()


def test_shape_needs_three_values(tmp_path: Path) -> None:
    result = invoke("synthesize", "--output", tmp_path / "p", "--shape", "16,24")
    assert_clean_failure(result, "--shape", "expected three values Z,Y,X")
    assert not (tmp_path / "p").exists()


def test_synthesize_into_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "keep.txt").write_text("x")
    result = invoke("synthesize", "--output", tmp_path / "p", "--shape", "16,24,24")
    assert_clean_failure(result, "exists and is not empty")


def test_create_targets_with_unknown_object(tiny_project) -> None:
    result = invoke(
        "create-targets", "--config", tiny_project.config_path, "--voxel-size", 20,
        "--objects", "ribosome,lysozyme",
    )  # fmt: skip
    assert_clean_failure(result, "unknown object(s) lysozyme")


def test_explicit_run_ids_need_both_flags(tiny_project, tmp_path: Path) -> None:
    result = invoke(
        "split-runs", "--config", tiny_project.config_path, "--voxel-size", 20,
        "--trainRunIDs", "TS_0", "--output", tmp_path / "split.json",
    )  # fmt: skip
    assert_clean_failure(result, "give both --trainRunIDs and --validateRunIDs")


# --------------------------------------------------------------------------- demo


def test_demo_builds_a_project_runs_the_study_and_reuses_the_project(
    tmp_path: Path, monkeypatch
) -> None:
    """The demo makes the project and targets, then runs `octopi model-explore` on them with
    its narrowed search space; a rerun reuses the project. (The study itself is stubbed here:
    tests/workflow runs real studies.)"""
    import json

    import octopi.cli as cli
    from octopi.demo import DEMO_SEARCH_SPACE
    from octopi.demo import main as demo_main

    calls: list[list[str]] = []

    def fake_octopi(args, standalone_mode=True):
        calls.append(list(args))
        study = Path(args[args.index("--output") + 1])
        (study / "best").mkdir(parents=True, exist_ok=True)
        summary = {"slot": 2, "metric_name": "fBeta4", "best_metric": 0.5}
        (study / "best" / "summary.json").write_text(json.dumps(summary))
        (study / "test").mkdir(exist_ok=True)
        (study / "test" / "metrics.json").write_text(json.dumps({"weighted_fbeta": 0.25}))

    monkeypatch.setattr(cli.main, "main", fake_octopi)
    output = tmp_path / "demo"
    args = ["--output", str(output), "--runs", "2", "--trials", "3", "--epochs", "8"]
    result = CliRunner().invoke(demo_main, args)
    assert result.exit_code == 0, result.output
    assert "synthesized 2 runs" in result.output
    table = result.output.split("particles per run:")[1].splitlines()
    assert table[1].split()[:2] == ["run", "apo-ferritin"]
    assert [line.split()[0] for line in table[2:4]] == ["TS_0", "TS_1"]
    assert (output / "project" / "create-targets_config.yaml").is_file()
    assert (output / "project" / "synthesize_config.yaml").is_file()
    [explore] = calls
    assert explore[0] == "model-explore"
    options = dict(zip(explore[1::2], explore[2::2], strict=False))
    assert options["--config"] == str((output / "project" / "copick.json").resolve())
    assert (options["--num-trials"], options["--num-epochs"]) == ("3", "8")
    assert options["--val-interval"] == "4"  # validated half-way and at the end
    assert options["--output"] == str((output / "study").resolve())
    space = yaml.safe_load((output / "study" / "search_space.yaml").read_text())
    assert space == DEMO_SEARCH_SPACE
    assert "best trial: slot 2 (fBeta4 0.500" in result.output
    assert "test F4 (CZII weights) of the best model: 0.250" in result.output

    tomogram = next((output / "project" / "data" / "ExperimentRuns" / "TS_0").rglob("wbp.zarr"))
    stamp = tomogram.stat().st_mtime_ns
    result = CliRunner().invoke(demo_main, args)
    assert result.exit_code == 0, result.output
    assert "using the existing project" in result.output and "synthesized" not in result.output
    assert tomogram.stat().st_mtime_ns == stamp
    assert len(calls) == 2
