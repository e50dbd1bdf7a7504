"""The Python side of ``benchmarks/gpu_check.sh``: environment, test verdict, summary JSON.

``python -m benchmarks.gpu_check env --out FILE [--require-cuda]``
    torch and CUDA versions, the GPUs torch sees (name, memory in GiB, bf16) and the driver;
    exit 1 with ``--require-cuda`` when torch sees no CUDA device.
``python -m benchmarks.gpu_check tests JUNIT_XML [--allow-skipped]``
    the counts of a ``pytest --junitxml`` run; exit 1 when a test failed or errored, exit 2
    when none ran (no report, or every test skipped: no GPU visible; ``--allow-skipped``:
    exit 0 then).
``python -m benchmarks.gpu_check summary --steps TSV --env JSON --tests XML --results JSON
--started EPOCH --budget S --out FILE [--allow-skipped]``
    the summary: each step (name, status, seconds), the environment, the test counts, the
    benchmark's figures per tool (training patches/s per crop size, inference seconds per
    tomogram) when its results file was written after ``--started`` (Unix seconds), and
    ``problems``; exit 1 when there are any: a step that neither passed nor was skipped, GPU
    tests that failed or did not run, or a figure of ours missing (octopi 1.7.0's figures are
    reported, not required).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

TOOLS = ("ours", "published")


def environment() -> dict:
    """Versions and the CUDA devices torch sees (an empty ``gpus`` list: none)."""
    import platform

    import torch

    from benchmarks.machine_info import machine

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
        gpus[0]["bf16"] = torch.cuda.is_bf16_supported()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "gpus": gpus,
        "nvidia_smi": machine()["gpu"],
    }


def junit_counts(junit_xml: Path) -> dict:
    """``{tests, passed, failed, errors, skipped}`` of a pytest JUnit XML report."""
    if not junit_xml.is_file():
        return {"error": f"no report {junit_xml}"}
    root = ElementTree.parse(junit_xml).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {"tests": 0, "failed": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key, attribute in (("tests", "tests"), ("failed", "failures")):
            counts[key] += int(suite.get(attribute, 0))
        counts["errors"] += int(suite.get("errors", 0))
        counts["skipped"] += int(suite.get("skipped", 0))
    counts["passed"] = counts["tests"] - counts["failed"] - counts["errors"] - counts["skipped"]
    return counts


def gpu_tests_verdict(counts: dict, allow_skipped: bool = False) -> tuple[int, str]:
    """(exit code, one line) for the GPU tests: 0 passed, 1 failures or errors, 2 none ran."""
    if "error" in counts:
        return 2, counts["error"]
    line = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "errors", "skipped"))
    if counts["failed"] or counts["errors"]:
        return 1, f"GPU tests FAILED: {line}"
    if counts["passed"] == 0 and not allow_skipped:
        return 2, f"no GPU test ran ({line}): torch sees no CUDA device"
    return 0, f"GPU tests: {line}"


def read_steps(path: Path) -> list[dict]:
    """The ``name<TAB>status<TAB>seconds`` lines the script appends after each step."""
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        name, status, seconds = (line.split("\t") + ["", ""])[:3]
        steps.append({"name": name, "status": status, "seconds": int(seconds or 0)})
    return steps


def benchmark_figures(results: dict) -> dict:
    """Per tool: training patches/s by crop size and inference seconds per tomogram."""
    figures: dict = {
        "suite": results.get("suite"),
        "complete": results.get("complete"),
        "errors": sorted(results.get("errors", {})),
        "data": {k: results.get("data", {}).get(k) for k in ("train_shape_zyx", "test_shape_zyx")},
    }
    settings = results.get("settings", {})
    figures["batch_size"] = settings.get("batch_size")
    for tool in TOOLS:
        rows = [r for r in results.get("training_throughput", []) if r.get("tool") == tool]
        inference = [r for r in results.get("inference", []) if r.get("tool") == tool]
        if not rows and not inference:
            figures[tool] = None
            continue
        segment = inference[0].get("segment", {}) if inference else {}
        figures[tool] = {
            "training_patches_per_s": {str(r.get("dim_in")): r.get("patches_per_s") for r in rows},
            "training_patches_per_s_epochs_csv": {
                str(r.get("dim_in")): r.get("our_logged_patches_per_s") for r in rows
            },
            "training_ok": all(r.get("ok") for r in rows) if rows else None,
            "inference_seconds_per_tomogram": segment.get("seconds_per_tomogram_in_tool"),
            "inference_seconds_per_tomogram_wall": segment.get("seconds_per_tomogram_wall"),
            "inference_ok": segment.get("returncode") == 0 if segment else None,
        }
    return figures


def problems(out: dict, allow_skipped: bool = False) -> list[str]:
    """Why a summary (of :func:`summary`) fails the check; empty when it passes."""
    found = [
        f"step {step['name']}: {step['status']}"
        for step in out["steps"]
        if not step["status"].startswith(("ok", "skipped"))
    ]
    code, line = gpu_tests_verdict(out["gpu_tests"], allow_skipped)
    if code:
        found.append(line)
    benchmark = out["benchmark"]
    if "error" in benchmark:
        return [*found, benchmark["error"]]
    ours = benchmark.get("ours") or {}
    rates = {**(ours.get("training_patches_per_s_epochs_csv") or {})}
    rates.update({k: v for k, v in (ours.get("training_patches_per_s") or {}).items() if v})
    if not rates or None in rates.values():
        found.append(f"training patches/s of ours missing: {rates or 'no training'}")
    if ours.get("inference_seconds_per_tomogram") is None:
        found.append("inference seconds per tomogram of ours missing")
    return found


def summary(args: argparse.Namespace) -> dict:
    """The summary dict of one ``gpu_check.sh`` run (see the module docstring)."""
    out: dict = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "budget_seconds": args.budget,
        "total_seconds": round(time.time() - args.started, 1),
        "steps": read_steps(args.steps),
    }
    out["environment"] = json.loads(args.env.read_text()) if args.env.is_file() else None
    out["gpu_tests"] = junit_counts(args.tests)
    results = args.results
    if results.is_file() and results.stat().st_mtime >= args.started:
        out["results_file"] = str(results)
        out["benchmark"] = benchmark_figures(json.loads(results.read_text()))
    else:
        out["benchmark"] = {"error": f"{results} was not written by this run"}
    out["problems"] = problems(out, args.allow_skipped)
    out["ok"] = not out["problems"]
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check")
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="versions and the GPUs torch sees")
    env.add_argument("--out", type=Path, required=True)
    env.add_argument("--require-cuda", action="store_true")
    tests = sub.add_parser("tests", help="verdict of the GPU tests")
    tests.add_argument("junit_xml", type=Path)
    tests.add_argument("--allow-skipped", action="store_true")
    summ = sub.add_parser("summary", help="write the summary JSON")
    for name in ("steps", "env", "tests", "results", "out"):
        summ.add_argument(f"--{name}", type=Path, required=True)
    summ.add_argument("--started", type=float, required=True, help="Unix seconds")
    summ.add_argument("--budget", type=float, required=True, help="seconds")
    summ.add_argument("--allow-skipped", action="store_true", help="GPU tests may all skip")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "env":
        info = environment()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(info, indent=1) + "\n")
        print(json.dumps(info, indent=1))
        if args.require_cuda and not info["gpus"]:
            print("torch sees no CUDA device (a CPU build of torch in .venv? see the script)")
            return 1
        return 0
    if args.command == "tests":
        code, line = gpu_tests_verdict(junit_counts(args.junit_xml), args.allow_skipped)
        print(line)
        return code
    data = summary(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(json.dumps({k: data[k] for k in ("gpu_tests", "benchmark", "total_seconds")}, indent=1))
    for problem in data["problems"]:
        print(f"problem: {problem}")
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
