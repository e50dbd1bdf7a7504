"""The GPU check's harness parts, without a GPU: the gpu suite, ``--ours-only``,
``--time-limit``, inference with the throughput models, and ``benchmarks/gpu_check.py``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO))

from benchmarks import __main__ as cli  # noqa: E402
from benchmarks import data, gpu_check, measure  # noqa: E402
from benchmarks.suites import SUITES  # noqa: E402

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_the_gpu_suite_is_czii_size_at_the_published_defaults() -> None:
    gpu, dry = SUITES["gpu"], SUITES["gpu-dry"]
    assert gpu.data.test_shape == (184, 630, 630) and gpu.data.test_runs == 1
    assert gpu.batch_size == 16 and gpu.throughput_dims == (96,) == (gpu.quality_dim,)
    assert gpu.tools == ("published", "ours") and not gpu.score_picks
    assert dry.throughput_dims == (dry.quality_dim,) and not dry.score_picks
    assert SUITES["quick"].score_picks  # the other suites still score picks


def _fake_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fake_run(argv, *, log_path, **_):
        calls.append(Path(log_path).stem)
        return SimpleNamespace(ok=True, returncode=0, log=log_path)

    monkeypatch.setattr(data, "run_measured", fake_run)
    monkeypatch.setattr(data.published, "create_targets", lambda config: ["published"])
    return calls


def test_data_for_ours_alone_skips_and_later_adds_the_published_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_runs(monkeypatch)
    spec = data.DataSpec(1, (16, 24, 24), 1, (16, 24, 24))
    root, logs = tmp_path / "data", tmp_path / "logs"
    data.build(spec, root, log_dir=logs, published_targets=False)
    assert "data-targets-published" not in calls and "data-targets-ours" in calls
    calls.clear()
    data.build(spec, root, log_dir=logs, published_targets=False)
    assert calls == []  # reused
    data.build(spec, root, log_dir=logs)
    assert "data-targets-published" in calls  # rebuilt with the published targets
    calls.clear()
    data.build(spec, root, log_dir=logs, published_targets=False)
    assert calls == []  # data with both tools' targets serves ours alone too


def _runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suite) -> measure.Runner:
    monkeypatch.setattr(measure.ours, "has_command", lambda name: (True, ""))
    bench = SimpleNamespace(test_config=tmp_path / "test" / "copick.json", test_run_ids=["TS_0"])
    return measure.Runner(suite, tmp_path / "work", bench, {})


def test_inference_without_a_quality_phase_uses_the_throughput_models_unscored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = _runner(tmp_path, monkeypatch, SUITES["gpu"])
    runner.results["training_throughput"] = [
        {"tool": t, "tag": "tp96", "dim_in": 96, "ok": True, "repeat": 0, "model_dir": "m"}
        for t in ("published", "ours")
    ]
    steps: list[str] = []
    log = tmp_path / "segment.log"  # octopi 1.7.0's bar: 1 tomogram in 5 s
    log.write_text("Segmenting Tomograms on GPU: 100%|##########| 1/1 [00:05<00:00,  5.0s/it]\n")

    def fake_run(name, argv, **_):
        steps.append(name)
        return SimpleNamespace(ok=True, wall_seconds=8.0, log=str(log))

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(measure, "proc_record", lambda result, **extra: extra)
    runner.phase_inference()
    assert steps == ["segment-published-tp96", "segment-ours-tp96"]  # no localize, evaluate
    rows = runner.results["inference"]
    assert [(r["tool"], r["comparison"]) for r in rows] == [
        ("published", "equal-epochs"),
        ("ours", "equal-epochs"),
    ]
    assert rows[0]["segment"]["seconds_per_tomogram_in_tool"] == 5.0
    assert rows[1]["segment"]["seconds_per_tomogram_wall"] == 8.0


def test_a_time_limit_cuts_the_running_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = _runner(tmp_path, monkeypatch, SUITES["gpu"])
    timeouts: list[float] = []

    def fake_measured(argv, *, log_path, timeout_seconds, **_):
        timeouts.append(timeout_seconds)
        return SimpleNamespace(ok=False, returncode=124, wall_seconds=1.0, peak_pss_mb=0.0, log="")

    monkeypatch.setattr(measure, "run_measured", fake_measured)
    runner.run("a", ["true"])
    runner.deadline = time.monotonic() + 100
    runner.run("b", ["true"])
    runner.deadline = time.monotonic() - 5
    runner.run("c", ["true"])
    assert timeouts[0] == SUITES["gpu"].step_timeout_seconds
    assert 95 < timeouts[1] <= 100 and timeouts[2] == 1.0


def test_ours_only_needs_no_published_environment_and_the_limit_skips_phases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the published tool was used")

    monkeypatch.setattr(measure.published, "ensure_env", refuse)
    monkeypatch.setattr(measure.published, "versions", refuse)
    monkeypatch.setattr(measure.ours, "has_command", lambda name: (True, ""))
    monkeypatch.setattr(measure, "our_versions", lambda: {})
    built: list[bool] = []

    def fake_build(spec, root, *, log_dir, published_targets):
        built.append(published_targets)
        return SimpleNamespace(describe=lambda: {})

    monkeypatch.setattr(measure, "build", fake_build)
    monkeypatch.setattr(measure.Runner, "phase_throughput", refuse)
    suite = dataclasses.replace(SUITES["gpu-dry"], tools=("ours",))
    results = measure.run_suite(suite, phases=("throughput",), work=tmp_path, time_limit_seconds=0)
    assert built == [False] and results["versions"]["published"] == {"skipped": "--ours-only"}
    assert "published_install" not in results
    assert results["errors"] == {"throughput": "not run: the time limit had passed"}


def test_the_cli_passes_ours_only_and_the_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def fake_run_suite(suite, **kwargs):
        seen.update(tools=suite.tools, name=suite.name, **kwargs)
        return {"suite": suite.name}

    monkeypatch.setattr(cli.measure, "run_suite", fake_run_suite)
    monkeypatch.setattr(cli, "save_results", lambda results, stamp: Path("x.json"))
    monkeypatch.setattr(cli.report, "markdown", lambda results: "")
    args = ["run", "--suite", "gpu", "--phases", "throughput,inference", "--no-docs"]
    assert cli.main([*args, "--ours-only", "--time-limit", "200"]) == 0
    assert seen["tools"] == ("ours",) and seen["name"] == "gpu"
    assert seen["time_limit_seconds"] == 200.0 and seen["phases"] == ("throughput", "inference")
    assert cli.main(args) == 0
    assert seen["tools"] == ("published", "ours") and seen["time_limit_seconds"] is None


# --------------------------------------------------------------------------- gpu_check.py

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest"
errors="{errors}" failures="{failures}" skipped="{skipped}" tests="{tests}"></testsuite>
</testsuites>"""


def _junit(path: Path, tests: int, skipped: int = 0, failures: int = 0, errors: int = 0) -> Path:
    counts = {"tests": tests, "skipped": skipped, "failures": failures, "errors": errors}
    path.write_text(JUNIT.format(**counts))
    return path


def test_gpu_test_verdicts(tmp_path: Path) -> None:
    verdict = gpu_check.gpu_tests_verdict
    passed = gpu_check.junit_counts(_junit(tmp_path / "a.xml", 12, skipped=1))
    assert passed == {"tests": 12, "failed": 0, "errors": 0, "skipped": 1, "passed": 11}
    assert verdict(passed)[0] == 0
    skipped = gpu_check.junit_counts(_junit(tmp_path / "b.xml", 12, skipped=12))
    assert verdict(skipped)[0] == 2 and verdict(skipped, allow_skipped=True)[0] == 0
    failed = gpu_check.junit_counts(_junit(tmp_path / "c.xml", 12, failures=1))
    assert verdict(failed, allow_skipped=True)[0] == 1
    assert verdict(gpu_check.junit_counts(tmp_path / "missing.xml"))[0] == 2


def _results(patches_per_s: float | None, seconds: float | None) -> dict:
    return {
        "suite": "gpu",
        "complete": True,
        "settings": {"batch_size": 16},
        "training_throughput": [
            {"tool": "ours", "dim_in": 96, "ok": True, "patches_per_s": patches_per_s}
        ],
        "inference": [
            {"tool": "ours", "segment": {"returncode": 0, "seconds_per_tomogram_in_tool": seconds}}
        ],
    }


def _summarize(tmp_path: Path, results: dict, steps: str) -> tuple[int, dict]:
    (tmp_path / "steps.tsv").write_text(steps)
    (tmp_path / "latest-gpu.json").write_text(json.dumps(results))
    _junit(tmp_path / "tests.xml", 12, skipped=1)
    started = time.time() - 60
    args = [f"--{k}={tmp_path / v}" for k, v in (("steps", "steps.tsv"), ("env", "env.json"))]
    args += [f"--tests={tmp_path / 'tests.xml'}", f"--results={tmp_path / 'latest-gpu.json'}"]
    args += [f"--started={started}", "--budget=460", f"--out={tmp_path / 'summary.json'}"]
    code = gpu_check.main(["summary", *args])
    return code, json.loads((tmp_path / "summary.json").read_text())


def test_summary_passes_with_our_figures_and_fails_without(tmp_path: Path) -> None:
    code, out = _summarize(tmp_path, _results(250.0, 4.5), "gpu-tests\tok\t60\n")
    assert code == 0 and out["ok"] and out["problems"] == []
    ours = out["benchmark"]["ours"]
    assert ours["training_patches_per_s"] == {"96": 250.0}
    assert ours["inference_seconds_per_tomogram"] == 4.5 and out["benchmark"]["published"] is None
    code, out = _summarize(tmp_path, _results(None, None), "benchmark\ttimeout\t300\n")
    assert code == 1 and not out["ok"]
    assert len(out["problems"]) == 3 and out["problems"][0] == "step benchmark: timeout"


def test_summary_ignores_results_of_an_earlier_run(tmp_path: Path) -> None:
    results = tmp_path / "latest-gpu.json"
    results.write_text(json.dumps(_results(250.0, 4.5)))
    old = time.time() - 3600
    os.utime(results, (old, old))
    args = SimpleNamespace(
        steps=tmp_path / "none.tsv", env=tmp_path / "none.json", tests=tmp_path / "none.xml",
        results=results, started=time.time() - 60, budget=460.0, allow_skipped=False,
    )  # fmt: skip
    out = gpu_check.summary(args)
    assert "was not written by this run" in out["benchmark"]["error"] and not out["ok"]


def test_the_script_is_executable_bash_that_parses() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in SCRIPT.read_text()
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_published_commands_run_without_our_pythonpath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PYTHONPATH that puts our src/ first (GPU_CHECK_PYTHON setups) must not reach the
    published venv, whose ``octopi`` would then import ours."""
    from benchmarks import published

    env_dir = tmp_path / "octopi-1.7.0"
    (env_dir / "bin").mkdir(parents=True)
    for name in ("octopi", "python"):  # both report the PYTHONPATH they were started with
        fake = env_dir / "bin" / name
        fake.write_text('#!/bin/sh\necho "PYTHONPATH=[${PYTHONPATH:-}]"\n')
        fake.chmod(0o755)
    monkeypatch.setattr(published, "ENV_DIR", env_dir)
    monkeypatch.setattr(published, "gpu_present", lambda: False)
    monkeypatch.setenv("PYTHONPATH", str(REPO / "src"))
    for argv in (published.octopi(), published.octopi(needs_gpu=True)):
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        assert out.strip() == "PYTHONPATH=[]", argv


def test_the_script_refuses_a_gpu_check_python_that_does_not_exist(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_CHECK_DRY": "1", "GPU_CHECK_PYTHON": str(tmp_path / "no-python")}
    proc = subprocess.run(
        ["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert f"GPU_CHECK_PYTHON={tmp_path / 'no-python'}: no such program" in proc.stderr


def test_our_versions_come_from_a_checkout_on_pythonpath_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With src/ on PYTHONPATH and nothing installed (``-S``: no site-packages), our version
    comes from the module and a missing package says so; before, one missing package blanked
    them all and the report read ``octopi-workflow ?, torch ?``."""
    import octopi
    from benchmarks import machine_info

    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={REPO / "src"} exec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    monkeypatch.setattr(machine_info.sys, "executable", str(python))
    versions = machine_info.our_versions()
    assert versions["octopi-workflow"] == octopi.__version__
    assert versions["torch"] == versions["monai"] == "missing"
