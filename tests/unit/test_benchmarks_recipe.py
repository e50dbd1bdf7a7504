"""The recipe benchmark's commands, its reuse of finished variants and its table (no network
is trained here: `octopi train` is replaced by a script that writes a result.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO))

from benchmarks import recipe  # noqa: E402


def _result(calibrated: float, thyroglobulin_threshold: float | None) -> dict:
    classes = {
        "ribosome": {"threshold": 0.4, "fbeta": 0.9, "fbeta_labels": 0.5},
        "thyroglobulin": {"threshold": thyroglobulin_threshold, "fbeta": 0.4, "fbeta_labels": 0.4},
    }
    for c in classes.values():
        c.update(precision=0.3, recall=0.9, min_size_fraction=0.1)
    return {
        "best_epoch": 15,
        "calibration": {
            "weighted_fbeta": {"labels": 0.1, "calibrated": calibrated},
            "classes": classes,
        },
    }


def test_a_variant_picks_its_target_set_and_flags():
    argv = recipe.train_argv(Path("p/copick.json"), Path("out"), ["--lr", "3e-3", "targets=5"])
    assert argv[argv.index("--target-info") + 1] == "targets,octopi,5"
    assert argv[-2:] == ["--lr", "3e-3"] and "targets=5" not in argv
    assert argv[argv.index("--validateRunIDs") + 1] == "TS_3,TS_4,TS_5"
    default = recipe.train_argv(Path("p/copick.json"), Path("out"), [])
    assert default[default.index("--target-info") + 1] == "targets,octopi,1"


def test_finished_variants_are_reused_and_changed_ones_retrained(tmp_path, monkeypatch):
    calls = []

    class Done:
        ok, wall_seconds = True, 12.5

    def fake_run(argv, log_path):
        calls.append(argv)
        output = Path(argv[argv.index("--output") + 1])
        (output / "result.json").write_text(json.dumps(_result(0.3, None)))
        return Done()

    monkeypatch.setattr(recipe, "run_measured", fake_run)
    name = "dice_ce"
    first = recipe.run_variant(tmp_path / "copick.json", tmp_path, 2, name, fresh=False)
    again = recipe.run_variant(tmp_path / "copick.json", tmp_path, 2, name, fresh=False)
    assert len(calls) == 1 and first == again
    assert first["calibrated_f4"] == 0.3 and first["wall_seconds"] == 12.5
    monkeypatch.setitem(recipe.VARIANTS, name, ["--loss", "dice_ce", "--lr", "1e-4"])
    recipe.run_variant(tmp_path / "copick.json", tmp_path, 2, name, fresh=False)
    assert len(calls) == 2  # another command: trained again


def test_the_table_marks_argmax_classes_and_failures():
    rows = [
        {"name": "a", "ok": True, "wall_seconds": 90.0, **recipe._figures_of(_result(0.25, None))},
        {"name": "b", "ok": False, "log": "b.log"},
    ]
    results = {"timestamp": "t", "cores": 2, "load_average": [1.0, 2.0], "variants": rows}
    table = recipe.markdown(results)
    assert "| a | 0.100 | **0.250** | 15 | 90 | 0.90 (0.50) | 0.40 (0.40) a |" in table
    assert "Failed: b" in table


def test_a_partial_run_keeps_the_other_variants_of_the_latest_results(monkeypatch):
    """`--only` reruns some variants; the others' rows come from the latest results, marked
    with that run's date, in the variants' order; a row of a variant since removed is dropped."""
    monkeypatch.setattr(recipe, "VARIANTS", {"a": [], "b": [], "c": []})
    earlier = {
        "timestamp": "2026-12-01T10:00:00+0000",
        "variants": [{"name": "c", "ok": True}, {"name": "b", "ok": True}, {"name": "gone"}],
    }
    rows = recipe.merged_rows([{"name": "b", "ok": False}], earlier)
    assert rows == [
        {"name": "b", "ok": False},
        {"measured": "2026-12-01T10:00:00+0000", "name": "c", "ok": True},
    ]
    assert recipe.merged_rows([{"name": "a"}], None) == [{"name": "a"}]
    row = {"name": "c", "ok": True, "wall_seconds": 90.0, **recipe._figures_of(_result(0.3, 0.2))}
    table = recipe.markdown(
        {"timestamp": "t", "cores": 2, "load_average": [1.0, 1.0],
         "variants": [{"measured": "2026-12-01T10:00:00+0000", **row}]}
    )  # fmt: skip
    assert "| c (run 2026-12-01 10:00) | 0.100 |" in table
