"""How a command fails: known bad input as one short message, anything else with its traceback
(so that bugs get reported); ``OCTOPI_DEBUG=1`` / ``octopi --debug`` show every traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from octopi.cli import main
from octopi.cli.options import UNEXPECTED_NOTE, friendly_errors
from octopi.config import TrainingConfig
from octopi.errors import DEBUG_ENV, InputError, MissingInputError


@click.command()
@click.argument("kind")
@friendly_errors
def fail(kind: str) -> None:
    if kind == "input":
        raise InputError("'a,b': expected 'name'")
    if kind == "missing":
        raise MissingInputError("copick config not found: x.json")
    if kind == "settings":
        TrainingConfig(num_epochs=0)
    if kind == "key":
        _ = {}["usable"]  # a bug, not bad input
    if kind == "file":
        Path("/nonexistent/octopi/file").read_text()
    raise ValueError("operands could not be broadcast together")  # e.g. deep in numpy


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch) -> None:
    monkeypatch.setenv(DEBUG_ENV, "0")  # restored after the test, also when main sets it


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("input", "'a,b': expected 'name'"),
        ("missing", "copick config not found: x.json"),
        ("settings", "invalid settings:\n  num_epochs: Input should be greater than or equal"),
    ],
)
def test_known_bad_input_is_a_message_without_traceback(kind: str, message: str) -> None:
    result = CliRunner().invoke(fail, [kind])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.startswith(f"Error: {message}"), result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [("key", KeyError), ("value", ValueError), ("file", FileNotFoundError)],
)
def test_unexpected_errors_keep_their_traceback(kind: str, error_type: type) -> None:
    result = CliRunner().invoke(fail, [kind])
    assert type(result.exception) is error_type  # not turned into a click error
    assert UNEXPECTED_NOTE in result.exception.__notes__


def test_the_traceback_and_the_note_reach_the_terminal() -> None:
    script = (
        "import click\n"
        "from octopi.cli.options import friendly_errors\n"
        "@click.command()\n"
        "@friendly_errors\n"
        "def bug():\n"
        "    return {}['usable']\n"
        "bug.main([], prog_name='octopi')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "Traceback (most recent call last)" in run.stderr
    assert "KeyError: 'usable'" in run.stderr and UNEXPECTED_NOTE in run.stderr


def test_debug_shows_the_traceback_of_known_errors(monkeypatch) -> None:
    monkeypatch.setenv(DEBUG_ENV, "1")
    result = CliRunner().invoke(fail, ["input"])
    assert isinstance(result.exception, InputError)


def test_debug_flag(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    args = ["discover-runs", "--config", str(missing), "--output", str(tmp_path / "runs.json")]
    quiet = CliRunner().invoke(main, args)
    assert quiet.output == f"Error: copick config not found: {missing}\n"
    loud = CliRunner().invoke(main, ["--debug", *args])
    assert isinstance(loud.exception, MissingInputError)
