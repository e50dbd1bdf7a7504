"""The benchmark report generator: results dict → table rows, markdown, docs block in place."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO))

from benchmarks import report  # noqa: E402


def _segment(in_tool: float, wall: float, pss: float) -> dict:
    return {
        "returncode": 0,
        "seconds_per_tomogram_in_tool": in_tool,
        "seconds_per_tomogram_wall": wall,
        "peak_pss_mb": pss,
    }


@pytest.fixture
def results() -> dict:
    return {
        "suite": "quick",
        "timestamp": "2026-01-01T00:00:00",
        "machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 24, "gpu": None},
        "versions": {"ours": {"torch": "2.13.0"}, "published": {"octopi": "1.7.0"}},
        "settings": {"batch_size": 2},
        "data": {"train_run_ids": ["TS_0"], "test_run_ids": ["TS_0", "TS_1"]},
        "published_install": {"install_seconds": 300.0, "cached": False},
        "training_throughput": [
            {
                "tool": "published",
                "dim_in": 64,
                "patches_per_s": 1.0,
                "peak_pss_mb": 2000.0,
                "epochs": 4,
                "patches_per_epoch": 4,
            },
            {
                "tool": "ours",
                "dim_in": 64,
                "patches_per_s": 2.5,
                "peak_pss_mb": 1000.0,
                "epochs": 4,
                "patches_per_epoch": 4,
            },
            {"tool": "published", "dim_in": 96, "patches_per_s": 0.5, "peak_pss_mb": 3000.0},
            {"tool": "ours", "dim_in": 96, "patches_per_s": 0.75, "peak_pss_mb": 1500.0},
        ],
        "quality": [
            {
                "tool": "published",
                "comparison": "equal-epochs",
                "epochs": 8,
                "ok": True,
                "wall_seconds": 100.0,
            },
            {
                "tool": "ours",
                "comparison": "equal-epochs",
                "epochs": 8,
                "ok": True,
                "wall_seconds": 50.0,
            },
            {
                "tool": "ours",
                "comparison": "equal-time",
                "epochs": 16,
                "ok": True,
                "wall_seconds": 98.0,
                "budget_seconds": 100.0,
            },
        ],
        "inference": [
            {
                "tool": "published",
                "comparison": "equal-epochs",
                "f4": 0.40,
                "segment": _segment(10.0, 20.0, 900.0),
                "published_own_evaluate": {"f4": 0.55},
            },
            {
                "tool": "ours",
                "comparison": "equal-epochs",
                "f4": 0.50,
                "segment": _segment(1.0, 3.0, 450.0),
            },
            {
                "tool": "ours",
                "comparison": "equal-time",
                "f4": 0.60,
                "segment": _segment(1.0, 3.0, 450.0),
            },
        ],
        "study_overhead": {
            "dry_run": {"status": "ok", "wall_seconds": 3.5, "trials": 200},
            "scheduler": {"status": "ok", "seconds_per_job": 0.4},
        },
    }


def _row(rows: list[dict], startswith: str) -> dict:
    return next(r for r in rows if r["measurement"].startswith(startswith))


def test_rows_have_ratios_and_goal_flags(results: dict) -> None:
    rows = report.build_rows(results)
    tp64 = _row(rows, "Training throughput, dim-in 64")
    assert tp64["ratio"] == pytest.approx(2.5)
    assert tp64["status"] == report.MET
    tp96 = _row(rows, "Training throughput, dim-in 96")
    assert tp96["ratio"] == pytest.approx(1.5)
    assert tp96["status"] == report.NOT_MET
    memory = _row(rows, "Training peak memory, dim-in 64")
    assert memory["ratio"] == pytest.approx(0.5)
    assert memory["status"] == "—"
    inference = _row(rows, "Inference, seconds per tomogram")
    assert inference["ratio"] == pytest.approx(0.1)  # 10× faster, F4 0.50 ≥ 0.40
    assert inference["status"] == report.MET
    f4 = _row(rows, "F4 on test runs, equal epochs")
    assert f4["difference"] == pytest.approx(0.10)
    assert f4["status"] == report.MET
    assert _row(rows, "F4 on test runs, equal wall-clock")["ours"] == pytest.approx(0.60)
    assert _row(rows, "octopi's own")["octopi"] == pytest.approx(0.55)
    dry = _row(rows, "200-trial")
    assert dry["ours"] == pytest.approx(3.5)
    assert dry["status"] == report.NOT_MET


def test_inference_goal_needs_equal_or_better_f4(results: dict) -> None:
    results["inference"][1]["f4"] = 0.39  # 10× faster but worse picks
    inference = _row(report.build_rows(results), "Inference, seconds per tomogram")
    assert inference["status"] == report.NOT_MET


def test_small_f4_gain_is_not_enough(results: dict) -> None:
    results["inference"][1]["f4"] = 0.44
    f4 = _row(report.build_rows(results), "F4 on test runs, equal epochs")
    assert f4["status"] == report.NOT_MET


def test_missing_measurements_are_not_applicable(results: dict) -> None:
    results["training_throughput"][1]["patches_per_s"] = None
    results["study_overhead"]["dry_run"] = {"status": "not available", "reason": "no workflow"}
    rows = report.build_rows(results)
    assert _row(rows, "Training throughput, dim-in 64")["status"] == report.NA
    dry = _row(rows, "200-trial")
    assert dry["status"] == report.NA
    assert dry["note"] == "no workflow"
    assert "no workflow" in report.markdown(results)


def test_markdown_table(results: dict) -> None:
    text = report.markdown(results, plot="img/f4.png")
    assert "| Measurement | octopi 1.7.0 | ours | ours/octopi | goal | status |" in text
    assert "dim-in 64 (patches/s; timed 8 s / 3 s) | 1.000 | 2.500 | 2.50× |" in text
    assert "+0.100" in text
    assert "![F4 vs training time](img/f4.png)" in text
    assert "300 s" in text


def test_update_doc_replaces_only_the_marked_block(tmp_path: Path, results: dict) -> None:
    doc = tmp_path / "benchmarks.md"
    start, end = report.markers("quick")
    full_start, full_end = report.markers("full")
    doc.write_text(
        f"# Benchmarks\n\nIntro stays.\n\n{start}\nOLD TABLE\n{end}\n\nOutro stays.\n\n"
        f"{full_start}\nFULL TABLE\n{full_end}\n"
    )
    report.update_doc(doc, "quick", report.markdown(results))
    text = doc.read_text()
    assert "OLD TABLE" not in text
    assert "Intro stays." in text and "Outro stays." in text
    assert "FULL TABLE" in text
    assert text.count(start) == 1 and text.count(end) == 1
    assert text.index("Intro stays.") < text.index(start) < text.index("2.50×")
    assert text.index("2.50×") < text.index(end) < text.index("Outro stays.")
    once = text
    report.update_doc(doc, "quick", report.markdown(results))
    assert doc.read_text() == once  # idempotent


def test_update_doc_appends_block_when_markers_missing(tmp_path: Path, results: dict) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written.\n")
    report.update_doc(doc, "quick", "TABLE")
    text = doc.read_text()
    start, end = report.markers("quick")
    assert text.startswith("# Benchmarks\n\nHand-written.\n")
    assert f"{start}\nTABLE\n{end}" in text


def test_plot_is_written(tmp_path: Path, results: dict) -> None:
    path = tmp_path / "img" / "f4.png"
    assert report.plot_f4_vs_time(results, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_footnote_says_whether_the_cores_were_oversubscribed(results: dict) -> None:
    """It read 'above the core count' at a load of 3 on 16 cores (the GPU check's report)."""
    machine = {"cores": 16}
    quiet = report._footnotes({"step": {"load_average": [0.6, 3.1]}}, machine, None)
    busy = report._footnotes({"step": {"load_average": [9.0, 17.5]}}, machine, None)
    assert "at most the core count" in "\n".join(quiet) and "above" not in "\n".join(quiet)
    assert "above the core count: other work competed" in "\n".join(busy)


def test_a_carried_published_environment_is_not_reported_as_an_install(results: dict) -> None:
    carried = {"published_install": {"install_seconds": 0, "from": "x.tar.xz", "cached": True}}
    lines = "\n".join(report._footnotes(carried, {"cores": 16}, None))
    assert "carried in `x.tar.xz`" in lines and "One-time install" not in lines
    installed = "\n".join(report._footnotes(results, results["machine"], None))
    assert "One-time install of octopi 1.7.0" in installed and "300 s" in installed
