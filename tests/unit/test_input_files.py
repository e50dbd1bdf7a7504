"""Files a command reads: a corrupt, truncated or wrong kind of file stops it with one line
that names the file and what is wrong, never with advice to unpickle it unsafely."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from octopi.config import UnetConfig
from octopi.errors import InputError, MissingInputError
from octopi.input_files import load_torch_file, read_json_file, read_yaml_mapping
from octopi.models.model_card import ClassInfo, ModelCard
from octopi.models.registry import build_model, load_model
from octopi.search.storage import JOURNAL_NAME, journal_storage
from octopi.training.checkpoint import load_checkpoint
from octopi.workflow_runner import load_study_config

CARD = ModelCard(
    architecture=UnetConfig(channels=[4, 8, 16], strides=[2, 2]),
    dim_in=16,
    classes=[ClassInfo(name="ribosome", label=1, radius_angstrom=150.0)],
    voxel_size_angstrom=10.0,
    tomo_algorithms=["wbp"],
)


class NotTensors:
    """A pickled object of a class: what a file not made by octopi may hold."""


def one_line(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message
    assert "weights_only" not in message and "Traceback" not in message, message
    return message


# --------------------------------------------------------------------------- YAML and JSON


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "is not a text file"),
        (b"model: [Unet\nclasses: 1\n", "is not valid YAML"),
        (b"- Unet\n- 16\n", "holds a list, not a mapping of settings"),
        (b"", "holds nothing, not a mapping of settings"),
    ],
)
def test_bad_yaml_names_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "model_config.yaml"
    path.write_bytes(content)
    with pytest.raises(InputError) as error:
        read_yaml_mapping(path, "model config")
    assert one_line(error, path).startswith(f"model config {path} {problem}")


def test_missing_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="model config not found: .*nothing.yaml"):
        read_yaml_mapping(tmp_path / "nothing.yaml", "model config")
    with pytest.raises(InputError, match=f"run list {tmp_path} is a folder, not a file"):
        read_json_file(tmp_path, "run list")


def test_truncated_json(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text('{"train": ["TS_0", "TS_1"], "valid')
    with pytest.raises(InputError) as error:
        read_json_file(path, "run split")
    assert "is not valid JSON" in one_line(error, path)


def test_model_card_of_the_wrong_kind(tmp_path: Path) -> None:
    path = tmp_path / "model_config.yaml"
    path.write_text("data:\n  voxel_size_angstrom: 10\n")  # a study config, not a model card
    with pytest.raises(InputError) as error:
        ModelCard.load(path)
    message = one_line(error, path)
    assert message.startswith(f"model config {path} is not valid: ")
    assert "classes: Field required" in message and "data: Extra inputs" in message


def test_study_config_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  configs: [copick.json\n")
    with pytest.raises(InputError) as error:
        load_study_config(path)
    assert one_line(error, path).startswith(f"study config {path} is not valid YAML")


# --------------------------------------------------------------------------- torch files


def torch_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pth"
    torch.save(build_model(CARD).state_dict(), path)
    content = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(content[: len(content) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text(CARD.model_dump_json())
    elif kind == "objects":
        torch.save({"model": OrderedDict(), "extra": NotTensors()}, path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    return path


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("truncated", "is corrupt, truncated or not a PyTorch file"),
        ("empty", "is corrupt, truncated or not a PyTorch file"),
        ("text", "is corrupt, truncated or not a PyTorch file"),
        ("pickle", "is corrupt, truncated or not a PyTorch file"),
        ("objects", "holds Python objects besides tensors"),
    ],
)
def test_bad_torch_files(tmp_path: Path, kind: str, problem: str) -> None:
    path = torch_file(tmp_path, kind)
    with pytest.raises(InputError) as error:
        load_torch_file(path, "model weights")
    assert one_line(error, path).startswith(f"model weights {path} {problem}")
    with pytest.raises(InputError) as error:
        load_model(CARD, path)
    assert one_line(error, path).startswith(f"model weights {path} {problem}")
    with pytest.raises(InputError) as error:
        load_checkpoint(path)
    message = one_line(error, path)
    assert message.startswith(f"training checkpoint {path} {problem}")
    assert message.endswith("delete it to start over, or train into a new --output")


def test_weights_file_holding_no_weights(tmp_path: Path) -> None:
    path = tmp_path / "best_model_weights.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(InputError) as error:
        load_model(CARD, path)
    assert one_line(error, path) == f"model weights {path} hold no weights (a Tensor)"
    with pytest.raises(InputError) as error:
        load_checkpoint(path)
    assert "is not an octopi training checkpoint" in one_line(error, path)


def test_good_weights_still_load(tmp_path: Path) -> None:
    path = torch_file(tmp_path, "good")
    model = load_model(CARD, path)
    assert sum(p.numel() for p in model.parameters()) > 0


# --------------------------------------------------------------------------- Optuna journal


@pytest.mark.parametrize(
    "content",
    [
        b'{"op_code": 0, "worker_id": "a", "study_name": "s", "directions": [1]}\n{oops\n{}\n',
        b"\xff\xfe\x00garbage\nmore\n",
        b'{"not": "a journal"}\n{"at": "all"}\n',
    ],
)
def test_corrupt_optuna_journal_is_named_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(content)
    with pytest.raises(InputError) as error:
        journal_storage(tmp_path)
    assert one_line(error, path).startswith(f"Optuna journal {path} is corrupt")
    assert path.read_bytes() == content


def test_missing_copick_configs_are_listed_once_in_order(tmp_path: Path) -> None:
    from octopi.config import DataConfig, WorkflowConfig
    from octopi.workflow_runner import missing_copick_configs

    present = tmp_path / "present.json"
    present.write_text("{}")
    gone, also_gone = tmp_path / "b.json", tmp_path / "a.json"
    sources = [
        {"path": str(gone), "session_name": "one"},
        {"path": str(present), "session_name": "two"},
        {"path": str(also_gone), "session_name": "three"},
        {"path": str(gone), "session_name": "four"},
    ]
    config = WorkflowConfig(data=DataConfig(configs=sources))
    assert missing_copick_configs(config) == [gone, also_gone]


def test_copick_paths_are_made_absolute_by_one_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from octopi.config import DataConfig
    from octopi.input_files import absolute_path
    from octopi.training.plan import _absolute_paths

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert absolute_path("c.json") == tmp_path.resolve() / "c.json"
    assert absolute_path("c.json", tmp_path / "study") == tmp_path.resolve() / "study" / "c.json"
    assert absolute_path("~/c.json", tmp_path / "study") == tmp_path.resolve() / "home" / "c.json"
    # `octopi train` expanded no '~' (it made <cwd>/~/c.json of it), unlike the study's paths.
    data = _absolute_paths(
        DataConfig(
            configs=[
                {"path": "~/c.json", "session_name": "a"},
                {"path": "d.json", "session_name": "b"},
            ]
        )
    )
    assert [s.path for s in data.configs] == [
        tmp_path.resolve() / "home" / "c.json",
        tmp_path.resolve() / "d.json",
    ]
