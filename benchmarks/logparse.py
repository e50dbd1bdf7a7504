"""Timings read back from the tools' own progress output and files.

Both tools draw a tqdm bar over epochs (octopi 1.7.0: ``Training on GPU: cpu: ... 2/3 [00:41<00:20,
...]``; ours: ``train: ... 2/3 [00:41<00:20, ...]``) and octopi 1.7.0 one over tomograms
(``Segmenting Tomograms on GPU: ...``). tqdm redraws a bar with the same count and a later
elapsed time whenever a message is printed, so the moment count ``k`` was reached is the
SMALLEST elapsed time printed with count ``k``. Resolution: one second.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

_BAR = re.compile(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<")

PUBLISHED_TRAIN_BAR = "Training on GPU"
OUR_TRAIN_BAR = "train:"
PUBLISHED_SEGMENT_BAR = "Segmenting Tomograms"


def bar_times(text: str, desc: str) -> dict[int, float]:
    """``{count: elapsed seconds when the bar first showed that count}`` for bars named ``desc``."""
    times: dict[int, float] = {}
    for line in re.split(r"[\r\n]", text):
        if desc not in line:
            continue
        tail = line[line.index(desc) :]
        match = _BAR.search(tail)
        if match is None:
            continue
        count = int(match.group(1))
        hours = int(match.group(3) or 0)
        elapsed = hours * 3600 + int(match.group(4)) * 60 + int(match.group(5))
        times[count] = min(elapsed, times.get(count, elapsed))
    return times


def steady_epoch_seconds(log_path: str | Path, desc: str, num_epochs: int) -> float | None:
    """Mean seconds of epochs 2..N-1 (the first pays worker start-up, the last validates)."""
    times = bar_times(Path(log_path).read_text(errors="replace"), desc)
    first, last = 1, num_epochs - 1
    if last <= first or first not in times or last not in times:
        return None
    seconds = times[last] - times[first]
    return seconds / (last - first) if seconds > 0 else None


def published_seconds_per_tomogram(log_path: str | Path, n_tomograms: int) -> float | None:
    """Mean seconds per tomogram from octopi 1.7.0's segmentation bar (loop start to last)."""
    times = bar_times(Path(log_path).read_text(errors="replace"), PUBLISHED_SEGMENT_BAR)
    if n_tomograms not in times:
        return None
    return times[n_tomograms] / n_tomograms


def our_seconds_per_tomogram(output_dir: str | Path) -> float | None:
    """Mean seconds per tomogram (load to write) from our ``segment.json``."""
    path = Path(output_dir) / "segment.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    runs = summary.get("runs")
    if isinstance(runs, dict):
        runs = list(runs.values())
    seconds = [r["seconds"] for r in runs or [] if isinstance(r, dict) and "seconds" in r]
    return sum(seconds) / len(seconds) if seconds else None


def our_epoch_rows(train_dir: str | Path) -> list[dict]:
    """Rows of our ``epochs.csv`` (numbers as floats)."""
    path = Path(train_dir) / "epochs.csv"
    if not path.exists():
        return []
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        parsed = {}
        for key, value in row.items():
            try:
                parsed[key] = float(value)
            except (TypeError, ValueError):
                parsed[key] = value
        out.append(parsed)
    return out


def our_f4(metrics_path: str | Path) -> float | None:
    path = Path(metrics_path)
    if not path.exists():
        return None
    return float(json.loads(path.read_text())["weighted_fbeta"])


def published_f4(output_dir: str | Path) -> float | None:
    """``final_fbeta_score`` of octopi 1.7.0's ``average_metrics.yaml``."""
    import yaml

    path = Path(output_dir) / "average_metrics.yaml"
    if not path.exists():
        return None
    return float(yaml.safe_load(path.read_text())["final_fbeta_score"])
