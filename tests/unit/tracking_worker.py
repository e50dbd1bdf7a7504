"""A trial-like process for the tracking tests: it logs to MLflow the way a trial does (a
nested run under the study's parent run, metrics after every epoch, ``epochs.csv`` rewritten
every epoch, the run ended at the end), without training.

    python tracking_worker.py URI STUDY_DIR SLOT EPOCHS SECONDS_PER_EPOCH [--sync] [--hold N]

``--sync``: at the end, complete the run from the files as a finished trial does. ``--hold N``:
after epoch N, wait until ``STUDY_DIR/go`` exists (so a test can act mid-study). Prints one
line: ``slot S done: run ID failures N seconds T``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution

from octopi import tracking
from octopi.search.storage import study_parent_run
from octopi.search.tracking_sync import sync_trial_run, trial_run_tags
from octopi.training.outputs import write_epochs_csv

EXPERIMENT = "study"
METRIC = "avg_f1"


def epoch_row(slot: int, epoch: int) -> dict[str, float]:
    """The metrics of one epoch (exact in epochs.csv's 6 significant digits)."""
    row = {"epoch": epoch, "train_loss": round(1.0 / epoch + slot / 100, 5), "lr": 0.001}
    if epoch % 2 == 0:
        row["val_avg_f1"] = round(epoch / 100 + slot / 1000, 4)
    return row


def finished_trial(slot: int) -> optuna.trial.FrozenTrial:
    """The COMPLETE Optuna trial a real slot would have."""
    trial = optuna.trial.create_trial(
        params={"lr": 0.001 * (slot + 1)},
        distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
        value=0.5 + slot / 100,
        user_attrs={"slot": slot},
    )
    trial.number = slot
    return trial


def main(
    uri: str, study_dir: Path, slot: int, epochs: int, seconds: float, sync: bool, hold: int
) -> None:
    start = time.perf_counter()
    folder = study_dir / "trials" / str(slot)
    folder.mkdir(parents=True, exist_ok=True)
    parent = study_parent_run(study_dir, uri, EXPERIMENT)
    run = tracking.try_start_run(
        uri,
        EXPERIMENT,
        f"slot-{slot:03d}",
        parent_run_id=parent,
        tags=trial_run_tags(EXPERIMENT, slot, slot),
    )
    if run.run_id is not None:
        tracking.write_run_record(folder, {"run_id": run.run_id, "tracking_uri": uri})
    history = []
    for epoch in range(1, epochs + 1):
        row = epoch_row(slot, epoch)
        history.append(row)
        write_epochs_csv(folder / "epochs.csv", history)
        run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        time.sleep(seconds)
        while epoch == hold and not (study_dir / "go").exists():
            time.sleep(0.1)
    run.end("FINISHED")
    if sync:
        sync_trial_run(
            uri,
            EXPERIMENT,
            folder,
            slot,
            parent_run_id=parent or study_parent_run(study_dir, uri, EXPERIMENT),
            trial=finished_trial(slot),
            metric=METRIC,
        )
    print(
        f"slot {slot} done: run {run.run_id} failures {run.failures} "
        f"seconds {time.perf_counter() - start:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    uri, study, slot, epochs, seconds, *options = sys.argv[1:]
    hold = int(options[options.index("--hold") + 1]) if "--hold" in options else 0
    main(uri, Path(study), int(slot), int(epochs), float(seconds), "--sync" in options, hold)
