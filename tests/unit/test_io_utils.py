"""Atomic writes: all or nothing, no temporary files left behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from octopi.config import PickSpec, SynthesizeConfig
from octopi.io_utils import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    atomic_write_yaml,
    write_resolved_config,
)


def test_atomic_write_text_creates_parents_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "out.txt"
    atomic_write_text(target, "hello\n")
    assert target.read_text() == "hello\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_write_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"b": [1, 2]})
    assert json.loads(target.read_text()) == {"b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_path_keeps_the_old_file_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp != target
        temp.write_text("half-written")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_atomic_path_writes_nothing_for_a_new_file_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "new.txt"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temp:
        temp.write_text("partial")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_yaml_keeps_key_order(tmp_path: Path) -> None:
    target = tmp_path / "c.yaml"
    atomic_write_yaml(target, {"zeta": 1, "alpha": {"b": 2, "a": 3}})
    assert target.read_text().splitlines()[0] == "zeta: 1"
    assert yaml.safe_load(target.read_text()) == {"zeta": 1, "alpha": {"b": 2, "a": 3}}


def test_write_resolved_config_records_every_value(tmp_path: Path) -> None:
    config = SynthesizeConfig(output=tmp_path / "p", runs=2, picks=PickSpec(user_id="me"))
    path = write_resolved_config(tmp_path, "synthesize", config)
    assert path == tmp_path / "synthesize_config.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["command"] == "synthesize"
    assert data["runs"] == 2
    assert data["shape_zyx"] == [64, 128, 128]  # defaults are written too
    assert data["picks"] == {"user_id": "me", "session_id": "0"}
    assert data["output"] == str(tmp_path / "p")
    assert SynthesizeConfig(**{k: v for k, v in data.items() if k != "command"}) == config


def test_atomic_write_gives_the_usual_file_permissions(tmp_path: Path) -> None:
    # Outputs on a shared filesystem must be as readable as any other file the user writes
    # (mkstemp's private 0600 mode must not leak onto the result).
    umask = os.umask(0o022)
    try:
        target = tmp_path / "split.json"
        atomic_write_json(target, {"train": []})
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    finally:
        os.umask(umask)
