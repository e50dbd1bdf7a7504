"""Study plots for ``<study_dir>/plots/``: Optuna's matplotlib views and the best trial's curves.

Every plot is written atomically; a plot that cannot be made (too few trials, a degenerate
search space) is skipped with a note instead of failing the selection.
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from octopi.io_utils import atomic_path

log = logging.getLogger(__name__)

PLOT_NAMES = {
    "history": "optimization_history.png",
    "importances": "param_importances.png",
    "parallel": "parallel_coordinate.png",
    "best_curves": "best_trial_curves.png",
}


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, dpi=110, format="png")
    plt.close(figure)


def _optuna_plot(draw: Callable[[], Any], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna.visualization.matplotlib is "experimental"
        axes = draw()
    figure = axes.ravel()[0].figure if hasattr(axes, "ravel") else axes.figure
    figure.set_size_inches(max(figure.get_size_inches()[0], 8), 5)
    _save(figure, path)


def write_study_plots(
    study: optuna.Study,
    metric_name: str,
    best_epochs_csv: Path | None,
    plots_dir: Path,
    best_label: str = "best trial",
) -> dict[str, str]:
    """Write the study plots into ``plots_dir``; returns name → file name, or the reason a plot
    was skipped (``"skipped: ..."``)."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as optuna_plots

    plots_dir.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    target_name = metric_name
    outcome: dict[str, str] = {}
    jobs: dict[str, tuple[Callable[[], Any], int]] = {
        "history": (
            lambda: optuna_plots.plot_optimization_history(study, target_name=target_name),
            1,
        ),
        "importances": (
            lambda: optuna_plots.plot_param_importances(study, target_name=target_name),
            2,
        ),
        "parallel": (
            lambda: optuna_plots.plot_parallel_coordinate(study, target_name=target_name),
            1,
        ),
    }
    for name, (draw, needed) in jobs.items():
        if len(complete) < needed:
            outcome[name] = (
                f"skipped: needs {needed} complete trials, the study has {len(complete)}"
            )
            continue
        if name == "importances" and len({t.value for t in complete}) < 2:
            outcome[name] = f"skipped: every complete trial has {metric_name} {complete[0].value}"
            continue
        try:
            _optuna_plot(draw, plots_dir / PLOT_NAMES[name])
            outcome[name] = PLOT_NAMES[name]
        except Exception as error:  # noqa: BLE001 - a plot must not fail the selection
            log.warning("plot %s skipped: %s", name, error)
            outcome[name] = f"skipped: {type(error).__name__}: {error}"
    if best_epochs_csv is not None and best_epochs_csv.is_file():
        plot_training_curves(
            best_epochs_csv, metric_name, plots_dir / PLOT_NAMES["best_curves"], best_label
        )
        outcome["best_curves"] = PLOT_NAMES["best_curves"]
    else:
        outcome["best_curves"] = f"skipped: {best_epochs_csv} not found"
    return outcome


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _read_epochs(path: Path) -> list[dict[str, float]]:
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append({k: _float(v) for k, v in row.items() if v not in ("", None)})
    return rows


def plot_training_curves(
    epochs_csv: Path, metric_name: str, path: Path, label: str = "training"
) -> None:
    """Training loss and validation ``metric_name`` (``val_<metric>``) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_epochs(epochs_csv)
    with plt.style.context("default"):  # optuna's plots switch the global style to ggplot
        figure, loss_axes = plt.subplots(figsize=(8, 4.5))
        trained = [row for row in rows if "train_loss" in row]
        loss_axes.plot([r["epoch"] for r in trained], [r["train_loss"] for r in trained], "C0-")
        loss_axes.set_xlabel("epoch")
        loss_axes.set_ylabel("training loss", color="C0")
        column = f"val_{metric_name}"
        validated = [row for row in rows if column in row and math.isfinite(row[column])]
        if validated:
            metric_axes = loss_axes.twinx()
            metric_axes.plot(
                [row["epoch"] for row in validated], [row[column] for row in validated], "C1o-"
            )
            metric_axes.set_ylabel(f"validation {metric_name}", color="C1")
        loss_axes.set_title(f"{label}: training loss and validation {metric_name}")
        _save(figure, path)
