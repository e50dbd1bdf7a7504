"""Human-facing training outputs: the per-epoch table ``epochs.csv`` and ``curves.png``.

Both are rewritten whole (atomically) from the epoch history after every epoch, so after a
resume they hold exactly the rows the checkpoint knows about.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from octopi.io_utils import atomic_path, atomic_write_text

BASE_COLUMNS = ("epoch", "train_loss", "lr", "patches_per_s", "train_seconds", "seconds")
VALIDATION_PREFIX = "val_"


def history_columns(history: Sequence[dict]) -> list[str]:
    """The base columns, then every other key in order of first appearance."""
    columns = list(BASE_COLUMNS)
    for row in history:
        columns.extend(key for key in row if key not in columns)
    return columns


def write_epochs_csv(path: str | Path, history: Sequence[dict]) -> None:
    """One row per epoch; validation columns (``val_*``) are empty on other epochs."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=history_columns(history), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({key: _format(value) for key, value in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _format(value: object) -> object:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def plot_curves(path: str | Path, history: Sequence[dict], metric_name: str) -> None:
    """Training loss, learning rate and validation metrics against epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, lr_axis, metric_axis) = plt.subplots(1, 3, figsize=(13, 3.6))
    loss_axis.plot(epochs, [row["train_loss"] for row in history], color="tab:blue")
    loss_axis.set(title="training loss", xlabel="epoch")
    lr_axis.plot(epochs, [row["lr"] for row in history], color="tab:orange")
    lr_axis.set(title="learning rate (end of epoch)", xlabel="epoch")
    lr_axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    validated = [row for row in history if f"{VALIDATION_PREFIX}{metric_name}" in row]
    names = [metric_name] + [n for n in ("avg_f1", "weighted_fbeta") if n != metric_name]
    for name in names:
        key = f"{VALIDATION_PREFIX}{name}"
        values = [row.get(key, math.nan) for row in validated]
        style = {"linewidth": 2.0} if name == metric_name else {"linewidth": 1.0, "alpha": 0.7}
        metric_axis.plot(
            [row["epoch"] for row in validated], values, marker="o", label=name, **style
        )
    best = max(validated, key=lambda row: row[f"{VALIDATION_PREFIX}{metric_name}"], default=None)
    if best is not None:
        metric_axis.axvline(best["epoch"], color="grey", linestyle=":", linewidth=1)
    metric_axis.set(title="validation", xlabel="epoch", ylim=(-0.02, 1.02))
    metric_axis.legend(loc="lower right", fontsize="small")
    for axis in (loss_axis, lr_axis, metric_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=100)
    plt.close(figure)
