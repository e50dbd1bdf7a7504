"""The inference-levers benchmark without a network: the ladder of settings, the interleaved
rounds of :func:`measure_size` (with a stand-in runner), the JSON rows and the table."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO))

from benchmarks import inference_levers as levers  # noqa: E402
from benchmarks.report import markers, update_doc  # noqa: E402
from octopi.config import InferenceConfig  # noqa: E402


def test_every_rung_is_a_valid_inference_config_and_defaults_are_today_s() -> None:
    ladder = levers.ladder()
    for lever in ladder:
        InferenceConfig(**lever.settings)  # raises on a value the config refuses
    assert ladder[0].group == "baseline" and ladder[0].settings == levers.BASELINE
    defaults = InferenceConfig()
    assert levers.DEFAULTS["overlap"] == defaults.overlap
    assert levers.DEFAULTS["window_batch_size"] == defaults.window_batch_size
    assert levers.DEFAULTS["tta"] == defaults.tta
    assert levers.DEFAULTS["save_probabilities"] == defaults.save_probabilities
    cumulative = [lever for lever in ladder if lever.group == "cumulative"]
    assert cumulative[1].settings == levers.DEFAULTS  # "+ batch 4" reaches today's defaults
    assert cumulative[-1].settings["amp"] == "bf16"  # the levers add up
    assert set(levers.CZII_ROWS) <= {lever.name for lever in ladder}


def test_window_count_follows_segment_s_grid() -> None:
    assert levers.window_count((64, 160, 160), 64, 0.25) == 1 * 3 * 3
    assert levers.window_count((64, 160, 160), 64, 0.5) == 1 * 4 * 4
    assert levers.window_count((96, 192, 192), 96, 0.0) == 1 * 2 * 2
    assert levers.window_count((64, 160, 160), 96, 0.0) == 1 * 2 * 2  # Z padded to 96


class _FakeRunner:
    """Seconds from the settings (bf16 halves, batch 4 saves 10%); F4 drops with overlap 0."""

    def __init__(self) -> None:
        self.card = SimpleNamespace(dim_in=64)
        self.tomogram = levers.Tomogram("quick", (64, 160, 160), Path("copick.json"), "TS_0")
        self.calls: list[str] = []
        self.scored: list[str] = []

    def segment(self, settings: dict) -> dict:
        seconds = 4.0 * (0.5 if settings["amp"] == "bf16" else 1.0)
        seconds *= 0.9 if settings["window_batch_size"] > 1 else 1.0
        seconds *= 0.5 if settings.get("window_size") else 1.0
        self.calls.append(json.dumps(settings, sort_keys=True))
        return {"seconds": seconds, "network_seconds": seconds / 2, "load_1min": 1.5}

    def score(self, session: str) -> dict:
        self.scored.append(session)
        setting = json.loads(self.calls[-1])
        return {"f4": 0.3 if setting["overlap"] == 0 else 0.5, "picks": 12}


def _results(rows: list[dict]) -> dict:
    return {
        "timestamp": "2026-01-01T00:00:00",
        "cores": 2,
        "torch": "2.13.0+cpu",
        "threads": 2,
        "repeats": 2,
        "dim_in": 64,
        "sizes": {"quick": [64, 160, 160]},
        "reference_seconds": levers.REFERENCE_SECONDS,
        "load_average": {"start": [1.0, 1.0, 1.0], "end": [2.0, 1.0, 1.0]},
        "rows": rows,
    }


def test_rounds_are_interleaved_after_a_warmup_and_the_last_pass_is_scored() -> None:
    runner = _FakeRunner()
    ladder = levers.ladder()
    rows = levers.measure_size(runner, ladder, repeats=2, warmup=True)  # type: ignore[arg-type]
    assert len(runner.calls) == 3 * len(ladder)  # warm-up round + 2 timed rounds
    assert runner.calls[: len(ladder)] == runner.calls[len(ladder) : 2 * len(ladder)]
    assert len(runner.scored) == len(ladder)  # once per row, in the last round
    row = rows[0]
    assert len(row["passes"]) == 2 and row["warmup_seconds"] == 4.0
    assert row["seconds_min"] == row["seconds_median"] == 4.0
    assert row["windows"] == 9 and row["f4"] == 0.5 and row["picks"] == 12
    json.dumps(_results(rows))  # JSON types only


def test_table_names_the_fastest_row_at_equal_f4_against_the_goal(tmp_path: Path) -> None:
    rows = levers.measure_size(_FakeRunner(), levers.ladder(), repeats=2, warmup=False)  # type: ignore[arg-type]
    best = levers.best_row(rows)
    assert best is not None and best["name"] == "+ window 96"  # "+ overlap 0" loses F4
    table = levers.markdown(_results(rows))
    assert "Fastest at equal F4 (≥ defaults − 0.01): **+ window 96**, 0.90 s, F4 0.500" in table
    assert "6.7× octopi 1.7.0's 6 s (goal 20×, 0.30 s: not met)" in table
    defaults_line = next(line for line in table.splitlines() if "today's defaults" in line)
    assert "| 9 | 1.80 (1.80) | 0.90 | 0.500 | 12 | 1.00× | 3.3× | 1.5–1.5 |" in defaults_line
    assert "bf16, overlap 0.25, batch 4, window 64, TTA none, probabilities" in defaults_line
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Inference levers\n\nhand-written\n")
    update_doc(doc, "inference-levers", table)
    text = doc.read_text()
    start, end = markers("inference-levers")
    assert "hand-written" in text and text.index(start) < text.index("**quick**") < text.index(end)


def test_sizes_not_measured_are_carried_over_with_their_octopi_figures() -> None:
    earlier = _results([{"size": "quick", "name": "old"}, {"size": "issue", "name": "old"}])
    earlier["sizes"] = {"quick": [64, 160, 160], "issue": [96, 192, 192]}
    earlier["published"] = {"quick": {"seconds": 5.5}}
    now = _results([{"size": "czii", "name": "new"}])
    now["timestamp"], now["sizes"] = "2026-02-02T00:00:00", {"czii": [184, 630, 630]}
    now["published"] = {"czii": {"seconds": 750.0}}
    result = levers.merged(now, earlier)
    assert list(result["sizes"]) == ["quick", "issue", "czii"]
    assert [(r["size"], r.get("measured_at")) for r in result["rows"]] == [
        ("czii", None),
        ("quick", "2026-01-01T00:00:00"),
        ("issue", "2026-01-01T00:00:00"),
    ]
    assert result["published"] == {"czii": {"seconds": 750.0}, "quick": {"seconds": 5.5}}
    assert levers.merged(now, None) is now


def test_octopi_timed_in_the_run_replaces_the_reference_figure() -> None:
    rows = levers.measure_size(_FakeRunner(), levers.ladder(), repeats=1, warmup=False)  # type: ignore[arg-type]
    results = _results(rows)
    assert levers.reference_seconds(results, "quick") == levers.REFERENCE_SECONDS["quick"]
    assert levers.reference_seconds(results, "czii") is None
    timed = {"seconds": 18.0, "wall_seconds": 25.0, "peak_rss_mb": 2048.0}
    results["published"] = {"quick": timed}
    table = levers.markdown(results)
    assert "20.0× octopi 1.7.0's 18 s (goal 20×, 0.90 s: met)" in table
    assert "18.0 s per tomogram by its own progress bar, 25 s process wall, peak 2.0 GB" in table


def test_octopi_segment_is_timed_by_its_own_progress_bar(monkeypatch, tmp_path: Path) -> None:
    from benchmarks.procs import ProcResult

    calls = []

    def fake_run(argv, *, log_path):
        calls.append(argv)
        bar = "Segmenting Tomograms on GPU: cpu: 100%|##| 1/1 [12:30<00:00, 750.97s/it]\n"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = "Segmenting Tomograms on GPU: cpu:   0%| | 0/1 [00:00<?, ?it/s]\r"
        log_path.write_text(start + bar)
        return ProcResult(argv, 0, 762.4, 9000.0, 9100.0, 9100.0, 1400.0, (2.0, 2.0), str(log_path))

    monkeypatch.setattr(levers, "run_measured", fake_run)
    tomogram = levers.Tomogram("czii", (184, 630, 630), tmp_path / "copick.json", "TS_0")
    figures = levers.published_segment(tomogram, tmp_path / "model", tmp_path / "logs")
    assert figures["seconds"] == 750.0 and figures["wall_seconds"] == 762.4
    assert "segment" in calls[0] and str(tmp_path / "model" / "best_model.pth") in calls[0]
