"""Every file a command reads, corrupt, truncated or of the wrong kind: the command stops with
one line naming the file and what is wrong, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner, Result

from octopi import workflow_runner
from octopi.cli import main
from octopi.config import CopickSource, DataConfig, SearchConfig, UnetConfig, WorkflowConfig
from octopi.data.copick_io import CopickProjects, write_project_config
from octopi.data.synthetic import czii_objects
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import build_model


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def files(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path → (size, mtime in ns) of every file under ``root``."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file()
    }


def assert_one_line(result: Result, path: Path, *fragments: str) -> None:
    """Failed with one line, ``Error: ...``, naming ``path`` and ``fragments``."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert str(path) in result.output, result.output
    assert "weights_only" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def corrupt(path: Path, kind: str) -> None:
    content = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(content[: len(content) // 2])
    elif kind == "binary":
        path.write_bytes(b"\x00\xff\xfe" + content[:100])
    elif kind == "objects":  # a pickle octopi did not write: never unpickled
        torch.save({"state": {"w": torch.zeros(2)}, "opt": torch.optim.SGD}, path)
    elif kind == "wrong kind":
        path.write_text(yaml.safe_dump({"data": {"voxel_size_angstrom": 10}}))


# --------------------------------------------------------------------------- models


def save_model(directory: Path, project) -> tuple[Path, Path]:
    objects = CopickProjects([CopickSource(path=project.config_path)]).objects()
    card = ModelCard(
        architecture=UnetConfig(channels=[4, 8, 16], strides=[2, 2]),
        dim_in=32,
        classes=[ClassInfo(name=o.name, label=o.label, radius_angstrom=50.0) for o in objects],
        voxel_size_angstrom=project.voxel_size_angstrom,
        tomo_algorithms=["wbp"],
    )
    directory.mkdir(parents=True, exist_ok=True)
    card.save(directory / "model_config.yaml")
    torch.save(build_model(card).state_dict(), directory / "best_model_weights.pth")
    return directory / "model_config.yaml", directory / "best_model_weights.pth"


@pytest.mark.parametrize(
    ("which", "kind", "fragment"),
    [
        ("weights", "truncated", "is corrupt, truncated or not a PyTorch file"),
        ("weights", "objects", "holds Python objects besides tensors"),
        ("config", "binary", "is not a text file"),
        ("config", "wrong kind", "is not valid: "),
    ],
)
def test_segment(tiny_project_copy, tmp_path: Path, which: str, kind: str, fragment: str):
    project = tiny_project_copy
    config, weights = save_model(tmp_path / "model", project)
    bad = weights if which == "weights" else config
    corrupt(bad, kind)
    before = files(project.root)
    result = invoke(
        "segment", "--config", project.config_path, "--model-config", config,
        "--model-weights", weights,
    )  # fmt: skip
    assert_one_line(result, bad, fragment)
    assert files(project.root) == before


def test_train_from_a_corrupt_checkpoint_or_weights(tiny_project, tmp_path: Path) -> None:
    output = tmp_path / "results"
    output.mkdir()
    (output / "checkpoint.pt").write_bytes(b"PK\x03\x04 half a zip archive")
    before = files(output)
    args = [
        "train", "--config", tiny_project.config_path, "--voxel-size", 20, "--output", output,
        "--num-epochs", 1, "--val-interval", 1, "--dim-in", 16, "--channels", "8,16,32",
        "--strides", "2,2", "--tracking-uri", "none",
    ]  # fmt: skip
    result = invoke(*args)
    assert_one_line(result, output / "checkpoint.pt", "delete it to start over")
    assert files(output) == before

    config, weights = save_model(tmp_path / "model", tiny_project)
    corrupt(weights, "truncated")
    tuned = tmp_path / "tuned"
    result = invoke(
        "train", "--config", tiny_project.config_path, "--voxel-size", 20, "--output", tuned,
        "--model-config", config, "--model-weights", weights, "--tracking-uri", "none",
    )  # fmt: skip
    assert_one_line(result, weights, "is corrupt, truncated or not a PyTorch file")
    assert not tuned.exists()


# --------------------------------------------------------------------------- studies


def write_study(study: Path, project) -> None:
    data = DataConfig(configs=[project.source], voxel_size_angstrom=project.voxel_size_angstrom)
    workflow = WorkflowConfig(data=data, search=SearchConfig(num_trials=2))
    study.mkdir(parents=True)
    (study / "config.yaml").write_text(yaml.safe_dump(workflow.model_dump(mode="json")))
    split = {"train": project.run_names[:2], "validate": project.run_names[2:]}
    (study / "split.json").write_text(json.dumps(split))


def test_a_corrupt_optuna_journal(tiny_project, tmp_path: Path) -> None:
    study = tmp_path / "study"
    write_study(study, tiny_project)
    journal = study / "optuna.journal"
    content = b'{"op_code": 0, "study_name": "s"}\n{"op_code": 4, "trial_\n{}\n'
    journal.write_bytes(content)
    before = files(study)
    result = invoke("select-best", "--study-dir", study)
    assert_one_line(result, journal, "is corrupt or not an Optuna journal")
    assert files(study) == before
    result = invoke("explore-trial", "--study-dir", study, "--slot", 0, "--tracking-uri", "none")
    assert_one_line(result, journal, "is corrupt or not an Optuna journal")
    assert set(files(study)) - set(before) <= {"trials/0/.lock"}  # the slot's lock, no output
    assert journal.read_bytes() == content


def test_a_study_config_that_is_not_yaml(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(workflow_runner, "run_snakemake", lambda *a, **k: pytest.fail("ran"))
    study = tmp_path / "study"
    study.mkdir()
    (study / "config.yaml").write_text("data:\n  configs: [copick.json\n")
    before = files(study)
    result = invoke("model-explore", "--output", study)
    assert_one_line(result, study / "config.yaml", "is not valid YAML")
    assert files(study) == before


# --------------------------------------------------------------------------- copick and MRC


@pytest.mark.parametrize("kind", ["truncated", "binary"])
def test_a_corrupt_copick_config(tiny_project, tmp_path: Path, kind: str) -> None:
    config = tmp_path / "copick.json"
    config.write_bytes(tiny_project.config_path.read_bytes())
    corrupt(config, kind)
    result = invoke("discover-runs", "--config", config, "--output", tmp_path / "runs.json")
    assert_one_line(result, config, "not a text file" if kind == "binary" else "not valid JSON")
    assert not (tmp_path / "runs.json").exists()


def test_a_copick_config_path_with_a_comma(tiny_project, tmp_path: Path) -> None:
    folder = tmp_path / "lab,2024"
    folder.mkdir()
    config = folder / "copick.json"  # its overlay_root is absolute: the same project
    config.write_bytes(tiny_project.config_path.read_bytes())
    result = invoke(
        "discover-runs", "--config", config, "--voxel-size", 20, "--output", tmp_path / "runs.json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "runs.json").read_text())["usable"] == tiny_project.run_names


def test_a_truncated_run_list(tiny_project, tmp_path: Path) -> None:
    runs = tmp_path / "runs.json"
    runs.write_text('{"usable": ["TS_0", "TS_1"')
    result = invoke(
        "split-runs", "--config", tiny_project.config_path, "--voxel-size", 20,
        "--runs-file", runs, "--output", tmp_path / "split.json",
    )  # fmt: skip
    assert_one_line(result, runs, "is not valid JSON")
    assert not (tmp_path / "split.json").exists()


def test_a_truncated_mrc_file(tmp_path: Path) -> None:
    project = write_project_config(tmp_path / "copick.json", tmp_path / "data", czii_objects())
    folder = tmp_path / "mrc"
    folder.mkdir()
    for name in ("TS_1", "TS_2"):
        with mrcfile.new(folder / f"{name}.mrc") as mrc:
            mrc.set_data(np.zeros((4, 8, 8), dtype=np.float32))
            mrc.voxel_size = 10.0
    corrupt(folder / "TS_2.mrc", "truncated")
    result = invoke("import", "--config", project, "--input", folder)
    assert_one_line(result, folder / "TS_2.mrc", "is truncated")
    assert CopickProjects([CopickSource(path=project)]).runs() == []
