"""Fixtures of the model-explore tests (test_explore_cli.py, test_explore_edits.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from octopi import gpu_slots, workflow_runner


@pytest.fixture
def snakemake_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict | None]]:
    """Record Snakemake invocations instead of running them; the machine has no GPUs."""
    calls: list[tuple[list[str], dict | None]] = []

    def fake_run(args, env=None):
        calls.append((list(args), env))
        return 0

    monkeypatch.setattr(workflow_runner, "run_snakemake", fake_run)
    monkeypatch.setattr(gpu_slots, "list_gpus", lambda environ=None: [])
    return calls


@pytest.fixture
def copick_config(tmp_path: Path) -> Path:
    """A copick config file for commands that only check that it exists."""
    path = tmp_path / "copick.json"
    path.write_text("{}\n")
    return path
