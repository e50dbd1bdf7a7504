"""The benchmark data builder passes the synthesize preset on, and reuses default data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO))

from benchmarks import data  # noqa: E402
from benchmarks.__main__ import with_preset  # noqa: E402
from benchmarks.suites import SUITES  # noqa: E402


def _fake_build(tmp_path: Path, monkeypatch, spec: data.DataSpec) -> list[list[str]]:
    calls: list[list[str]] = []

    def fake_run(argv, *, log_path, **_):
        calls.append([str(a) for a in argv])
        return SimpleNamespace(ok=True, returncode=0, log=log_path)

    monkeypatch.setattr(data, "run_measured", fake_run)
    monkeypatch.setattr(data.published, "create_targets", lambda config: ["published", "targets"])
    data.build(spec, tmp_path / "data", log_dir=tmp_path / "logs")
    return calls


def test_preset_reaches_synthesize(tmp_path: Path, monkeypatch) -> None:
    spec = data.DataSpec(1, (16, 24, 24), 1, (16, 24, 24), preset="hard")
    calls = _fake_build(tmp_path, monkeypatch, spec)
    synthesize = [argv for argv in calls if "synthesize" in argv]
    assert len(synthesize) == 2
    for argv in synthesize:
        assert argv[argv.index("--preset") + 1] == "hard"
    stamp = json.loads((tmp_path / "data" / "data.json").read_text())
    assert stamp["wanted"]["spec"]["preset"] == "hard"


def test_default_preset_keeps_the_old_stamp(tmp_path: Path, monkeypatch) -> None:
    spec = data.DataSpec(1, (16, 24, 24), 1, (16, 24, 24))
    calls = _fake_build(tmp_path, monkeypatch, spec)
    assert all(
        argv[argv.index("--preset") + 1] == "default" for argv in calls if "--preset" in argv
    )
    assert "preset" not in spec.stamp()
    assert spec.stamp()["train_shape"] == [16, 24, 24]


def test_with_preset_renames_the_suite() -> None:
    quick = SUITES["quick"]
    assert with_preset(quick, "default") is quick
    hard = with_preset(quick, "hard")
    assert hard.name == "quick-hard" and hard.data.preset == "hard"
    assert hard.data.train_shape == quick.data.train_shape


def test_data_made_with_another_target_radius_is_rebuilt(tmp_path: Path, monkeypatch) -> None:
    """Targets drawn at an older default radius (0.7, stamps without the key) are not reused."""
    spec = data.DataSpec(1, (16, 24, 24), 1, (16, 24, 24), preset="hard")
    _fake_build(tmp_path, monkeypatch, spec)
    assert _fake_build(tmp_path, monkeypatch, spec) == []  # same description: reused
    stamp_path = tmp_path / "data" / "data.json"
    stamp = json.loads(stamp_path.read_text())
    assert stamp["wanted"]["our_radius_fraction"] == 0.5
    del stamp["wanted"]["our_radius_fraction"]  # as written before the default was 0.5
    stamp_path.write_text(json.dumps(stamp))
    calls = _fake_build(tmp_path, monkeypatch, spec)
    assert sum("create-targets" in argv for argv in calls) == 1
