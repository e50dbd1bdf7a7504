"""Results JSON → markdown table (between markers in docs/benchmarks.md) and the F4 plot.

The generated block of a suite sits between ``<!-- benchmarks:SUITE:start -->`` and
``<!-- benchmarks:SUITE:end -->``; :func:`update_doc` replaces only that block (appending it
when the markers are missing), so the hand-written text around it is kept.

Goals (from the issue), each row marked ``met`` / ``not met`` (``n/a`` when not measured):

- training throughput ≥ 2× octopi (every ``--dim-in`` of the suite);
- inference ≥ 5× faster (seconds per tomogram ours/octopi ≤ 0.2) at equal or better F4;
- F4 ≥ octopi + 0.05 at equal epochs;
- 200-trial dry-run < 2 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

THROUGHPUT_GOAL = 2.0
INFERENCE_GOAL = 5.0
F4_MARGIN = 0.05
DRY_RUN_GOAL_SECONDS = 2.0

MET, NOT_MET, NA = "met", "not met", "n/a"


def markers(suite: str) -> tuple[str, str]:
    return f"<!-- benchmarks:{suite}:start -->", f"<!-- benchmarks:{suite}:end -->"


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def _find(rows: list[dict], **match) -> dict | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _fastest(rows: list[dict], **match) -> dict:
    """The matching row with the highest ``patches_per_s`` (repeats: keep the fastest)."""
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    timed = [r for r in found if r.get("patches_per_s") is not None]
    if timed:
        return max(timed, key=lambda r: r["patches_per_s"])
    return found[0] if found else {}


def _span(row: dict) -> float | None:
    """Seconds the throughput was timed over (epochs 2..N-1; the bars have 1 s resolution)."""
    rate, per_epoch, epochs = (row.get(k) for k in ("patches_per_s", "patches_per_epoch", "epochs"))
    if not rate or not per_epoch or not epochs:
        return None
    return (epochs - 2) * per_epoch / rate


def _status(condition: bool | None) -> str:
    return NA if condition is None else (MET if condition else NOT_MET)


def _per_tomogram(row: dict | None) -> float | None:
    if not row or "segment" not in row or not row["segment"].get("ok", True):
        return None
    seg = row["segment"]
    if seg.get("returncode", 0) != 0:
        return None
    return seg.get("seconds_per_tomogram_in_tool") or seg.get("seconds_per_tomogram_wall")


def _row(
    measurement: str,
    octopi: Any,
    ours: Any,
    ratio: float | None = None,
    goal: str = "—",
    status: str = "—",
    **extra: Any,
) -> dict:
    """One table row; ``difference`` (if given) sits before the goal, ``note`` after all."""
    row: dict = {"measurement": measurement, "octopi": octopi, "ours": ours, "ratio": ratio}
    if "difference" in extra:
        row["difference"] = extra.pop("difference")
    return row | {"goal": goal, "status": status} | extra


def build_rows(results: dict) -> list[dict]:
    """Table rows: measurement, octopi, ours, ours/octopi, goal, status."""
    return (
        _training_rows(results.get("training_throughput", []))
        + _inference_rows(results.get("inference", []), results.get("quality", []))
        + _overhead_rows(results.get("study_overhead", {}))
    )


def _training_rows(throughput: list[dict]) -> list[dict]:
    """Patches/s against the goal, then peak memory, per crop size."""
    dims = sorted({r["dim_in"] for r in throughput if "dim_in" in r})
    rows, memory = [], []
    for dim in dims:
        theirs = _fastest(throughput, tool="published", dim_in=dim)
        mine = _fastest(throughput, tool="ours", dim_in=dim)
        t, o = theirs.get("patches_per_s"), mine.get("patches_per_s")
        ratio = _ratio(o, t)
        spans = f"timed {_fmt(_span(theirs), 0)} s / {_fmt(_span(mine), 0)} s"
        ok = None if ratio is None else ratio >= THROUGHPUT_GOAL
        rows.append(
            _row(f"Training throughput, dim-in {dim} (patches/s; {spans})", t, o, ratio,
                 f"ours/octopi ≥ {THROUGHPUT_GOAL:g}", _status(ok))
        )  # fmt: skip
        t, o = theirs.get("peak_pss_mb"), mine.get("peak_pss_mb")
        memory.append(_row(f"Training peak memory, dim-in {dim} (MB)", t, o, _ratio(o, t)))
    return rows + memory


def _segment_value(row: dict | None, key: str) -> Any:
    return row["segment"].get(key) if row and "segment" in row else None


def _inference_rows(inference: list[dict], quality: list[dict]) -> list[dict]:
    """Seconds per tomogram against the goal, wall and memory, then F4 at equal epochs and
    equal wall-clock, and the published tool's own score."""
    inf_t = _find(inference, tool="published", comparison="equal-epochs")
    inf_o = _find(inference, tool="ours", comparison="equal-epochs")
    f4_t = inf_t.get("f4") if inf_t else None
    f4_o = inf_o.get("f4") if inf_o else None
    sec_t, sec_o = _per_tomogram(inf_t), _per_tomogram(inf_o)
    time_ratio = _ratio(sec_o, sec_t)
    if time_ratio is None or f4_t is None or f4_o is None:
        inference_ok = None
    else:
        inference_ok = time_ratio <= 1.0 / INFERENCE_GOAL and f4_o >= f4_t
    wall_t = _segment_value(inf_t, "seconds_per_tomogram_wall")
    wall_o = _segment_value(inf_o, "seconds_per_tomogram_wall")
    mem_t, mem_o = _segment_value(inf_t, "peak_pss_mb"), _segment_value(inf_o, "peak_pss_mb")
    rows = [
        _row("Inference, seconds per tomogram (each tool's defaults)", sec_t, sec_o, time_ratio,
             f"ours/octopi ≤ {1 / INFERENCE_GOAL:g} at equal or better F4", _status(inference_ok)),
        _row("Inference, process wall / tomograms (with start-up) (s)", wall_t, wall_o,
             _ratio(wall_o, wall_t)),
        _row("Inference peak memory (MB)", mem_t, mem_o, _ratio(mem_o, mem_t)),
    ]  # fmt: skip
    return rows + _quality_rows(inference, quality, f4_t, f4_o, inf_t)


def _quality_rows(
    inference: list[dict], quality: list[dict], f4_t: Any, f4_o: Any, inf_t: dict | None
) -> list[dict]:
    """F4 at equal epochs (against the goal) and at equal wall-clock; octopi's own score."""
    epochs = (_find(quality, tool="published", comparison="equal-epochs") or {}).get("epochs", "N")
    diff = None if f4_t is None or f4_o is None else f4_o - f4_t
    eq_time = _find(inference, tool="ours", comparison="equal-time")
    eq_time_train = _find(quality, tool="ours", comparison="equal-time") or {}
    budget = eq_time_train.get("budget_seconds")
    f4_time = eq_time.get("f4") if eq_time else None
    own = inf_t.get("published_own_evaluate", {}).get("f4") if inf_t else None
    return [
        _row(f"F4 on test runs, equal epochs ({epochs}; our evaluate)", f4_t, f4_o, None,
             f"ours ≥ octopi + {F4_MARGIN:g}",
             _status(None if diff is None else diff >= F4_MARGIN - 1e-12), difference=diff),
        _row(f"F4 on test runs, equal wall-clock ({_fmt(budget, 0)} s; ours "
             f"{eq_time_train.get('epochs', '?')} epochs)", f4_t, f4_time,
             difference=None if f4_time is None or f4_t is None else f4_time - f4_t),
        _row("octopi's own `evaluate` score of its picks (reference)", own, None),
    ]  # fmt: skip


def _overhead_rows(study: dict) -> list[dict]:
    """The study's planning and per-job overhead."""
    dry = study.get("dry_run", {})
    dry_seconds = dry.get("wall_seconds") if dry.get("status") == "ok" else None
    trials = dry.get("trials", 200)
    note = (
        f"CPU {dry['cpu_seconds']:.1f} s"
        if dry_seconds is not None and dry.get("cpu_seconds") is not None
        else dry.get("reason") or dry.get("error")
    )
    ok = None if dry_seconds is None else dry_seconds < DRY_RUN_GOAL_SECONDS
    rows = [
        _row(f"{trials}-trial `octopi model-explore --dry-run` (s)", None, dry_seconds, None,
             f"< {DRY_RUN_GOAL_SECONDS:g} s", _status(ok), note=note),
    ]  # fmt: skip
    snake = dry.get("snakemake_n", {})
    if snake:
        seconds = snake.get("wall_seconds") if snake.get("returncode") == 0 else None
        cpu = f"CPU {snake['cpu_seconds']:.1f} s" if "cpu_seconds" in snake else None
        rows.append(_row(f"{trials}-trial `snakemake -n` alone (s)", None, seconds, note=cpu))
    sched = study.get("scheduler", {})
    rows.append(
        _row("Snakemake overhead per trial job, local (s)", None, sched.get("seconds_per_job"),
             note=None if sched.get("status") == "ok" else sched.get("reason"))
    )  # fmt: skip
    imports = study.get("import_seconds", {})
    if imports:
        rows.append(
            _row("Start-up every trial job pays: python + `import torch, monai` (s)", None,
                 imports.get("seconds") if imports.get("ok") else None)
        )  # fmt: skip
    return rows


def goals(results: dict) -> dict[str, str]:
    """``{row measurement: status}`` of the rows that carry a goal."""
    return {r["measurement"]: r["status"] for r in build_rows(results) if r["goal"] != "—"}


def markdown(results: dict, *, plot: str | None = None) -> str:
    """The generated block (without markers) for one results dict."""
    machine = results.get("machine", {})
    versions = results.get("versions", {})
    data = results.get("data", {})
    settings = results.get("settings", {})
    ours_v = versions.get("ours", {})
    theirs_v = versions.get("published", {})
    lines = [
        f"### Suite `{results.get('suite')}` — {results.get('timestamp', '')}",
        "",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
        f"{machine.get('ram_gib', '?')} GiB RAM, GPU: {machine.get('gpu') or 'none'}; "
        f"load average at start {machine.get('load_average_at_start', '?')}. "
        f"Ours: octopi-workflow {ours_v.get('octopi-workflow', '?')}, torch "
        f"{ours_v.get('torch', '?')}, monai {ours_v.get('monai', '?')}. Published: octopi "
        f"{theirs_v.get('octopi', '?')}, torch {theirs_v.get('torch', '?')}, monai "
        f"{theirs_v.get('monai', '?')}.",
        "",
        f"Data: {len(data.get('train_run_ids', []))} training + "
        f"{len(data.get('validate_run_ids', []))} validation runs of "
        f"{tuple(data.get('train_shape_zyx', []))}, {len(data.get('test_run_ids', []))} test "
        f"runs of {tuple(data.get('test_shape_zyx', []))} (Z, Y, X) at 10 Å. Batch size "
        f"{settings.get('batch_size', '?')}; default UNet (channels 32,64,96,96, strides 2,2,1, "
        f"1 residual unit). Total run time {_fmt(results.get('total_seconds'), 0)} s.",
        "",
        "| Measurement | octopi 1.7.0 | ours | ours/octopi | goal | status |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    lines += [_table_line(row) for row in build_rows(results)]
    lines += _footnotes(results, machine, plot)
    return "\n".join(lines)


def _table_line(row: dict) -> str:
    """One markdown table line of a :func:`build_rows` row."""
    if row.get("difference") is not None:
        rel = f"{row['difference']:+.3f}"
    else:
        rel = f"{row['ratio']:.2f}×" if row.get("ratio") is not None else "—"
    measurement = row["measurement"]
    if row.get("note"):
        measurement += f" — {row['note']}"
    return (
        f"| {measurement} | {_fmt(row['octopi'], 3)} | {_fmt(row['ours'], 3)} | {rel} | "
        f"{row['goal']} | {row['status']} |"
    )


def _footnotes(results: dict, machine: dict, plot: str | None) -> list[str]:
    """Load, the published tool's install, what failed, and the plot, below the table."""
    lines: list[str] = []
    loads = [x for x in _loads(results) if isinstance(x, int | float)]
    if loads:
        cores = machine.get("cores")
        busy = isinstance(cores, int) and max(loads) > cores
        meaning = (
            "above the core count: other work competed for the CPU and wall times stretch"
            if busy
            else "at most the core count"
        )
        lines += [
            "",
            f"1-minute load average during the measurements: {min(loads):.1f}–{max(loads):.1f} "
            f"on {cores or '?'} cores ({meaning}; CPU seconds per step are in the JSON).",
        ]
    install = results.get("published_install", {})
    if install.get("from"):  # benchmarks/gpu_check_offline.sh: carried, not installed here
        lines += ["", f"octopi 1.7.0's packages were carried in `{install['from']}`."]
    elif install:
        cached = " (cached from an earlier run)" if install.get("cached") else ""
        lines += [
            "",
            f"One-time install of octopi 1.7.0 into `benchmarks/.envs/octopi-1.7.0`: "
            f"{_fmt(install.get('install_seconds'), 0)} s{cached}.",
        ]
    failures = _failures(results)
    if failures:
        lines += ["", "Not measured / failed:", ""]
        lines += [f"- {item}" for item in failures]
    if plot:
        lines += ["", f"![F4 vs training time]({plot})"]
    return lines


def _loads(node) -> list[float]:
    """Every 1-minute load average recorded in the results (start and end of each step)."""
    if isinstance(node, dict):
        values = list(node.get("load_average") or []) if "load_average" in node else []
        return values + [x for v in node.values() for x in _loads(v)]
    if isinstance(node, list):
        return [x for v in node for x in _loads(v)]
    return []


def _failures(results: dict) -> list[str]:
    out = []
    for section in ("training_throughput", "quality"):
        for row in results.get(section, []):
            if not row.get("ok", True):
                what = f"{section} {row.get('tool')} {row.get('tag', row.get('comparison', ''))}"
                error = (row.get("error") or "").strip().splitlines()
                out.append(f"{what}: {error[-1] if error else 'failed'}")
    for row in results.get("inference", []):
        for step in ("segment", "localize", "evaluate"):
            rec = row.get(step)
            if step == "evaluate" and row.get("note"):
                out.append(f"{row.get('tool')} {row.get('session')}: {row['note']}")
            elif rec and rec.get("returncode", 0) != 0:
                error = (rec.get("error") or "").strip().splitlines()
                out.append(
                    f"{step} {row.get('tool')} {row.get('session')}: "
                    f"{error[-1] if error else 'failed'}"
                )
    return out


def update_doc(doc: Path, suite: str, block: str) -> None:
    """Replace the suite's marked block in ``doc`` (append it if absent); keep the rest."""
    start, end = markers(suite)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    generated = f"{start}\n{block}\n{end}"
    if start in text and end in text:
        before = text[: text.index(start)]
        after = text[text.index(end) + len(end) :]
        text = before + generated + after
    else:
        text = text.rstrip("\n") + "\n\n" + generated + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def plot_f4_vs_time(results: dict, path: Path) -> bool:
    """F4 against training wall time, one line per tool; False when nothing to plot."""
    points: dict[str, list[tuple[int, float, float, str]]] = {"published": [], "ours": []}
    quality = results.get("quality", [])
    for row in results.get("inference", []):
        train = _find(quality, tool=row.get("tool"), comparison=row.get("comparison"))
        if train and row.get("f4") is not None and train.get("wall_seconds"):
            label = f"{train.get('epochs')} ep"
            point = (train.get("epochs", 0), train["wall_seconds"], row["f4"], label)
            points[row["tool"]].append(point)
    if not any(points.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    names = {"published": "octopi 1.7.0", "ours": "ours (octopi-workflow)"}
    for tool, marker in (("published", "s"), ("ours", "o")):
        pts = sorted(points[tool])  # in training order (epochs), whatever the wall times
        if not pts:
            continue
        ax.plot([p[1] for p in pts], [p[2] for p in pts], marker=marker, label=names[tool])
        for _, x, y, label in pts:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("F4 on test runs (CZII weights)")
    ax.set_title(f"F4 vs training time — suite {results.get('suite')}")
    top = max(p[2] for pts in points.values() for p in pts)
    ax.set_ylim(-0.02, max(0.1, top * 1.15))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
