"""`octopi explore-trial` and `octopi select-best`: four concurrent trial processes on one
study and one MLflow store, then the selection; bad input refused before any training."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from octopi.cli import main
from octopi.config import DataConfig, SearchConfig, TrainingConfig, WorkflowConfig
from octopi.search.storage import PARENT_RUN_NAME, load_study, open_study

TINY_SPACE = {
    "dim_in": 32,
    "batch_size": 1,
    "num_layers": 2,
    "hidden_layers": 1,
    "base_channel": 4,
    "num_res_units": 1,
}
STUDY_NAME = "cli-study"


def write_study_dir(study_dir: Path, project, **training) -> WorkflowConfig:
    """config.yaml, split.json (as split-runs writes it) and search_space.yaml."""
    data = DataConfig(configs=[project.source], voxel_size_angstrom=project.voxel_size_angstrom)
    workflow = WorkflowConfig(
        data=data,
        training=TrainingConfig(
            **{
                "num_epochs": 2,
                "val_interval": 1,
                "dim_in": 32,
                "batch_size": 1,
                "ncache_tomos": 2,
                "warmup_epochs": 0,
                "ema_decay": None,
                **training,
            }
        ),
        search=SearchConfig(num_trials=4, study_name=STUDY_NAME, pruner="none"),
    )
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "config.yaml").write_text(yaml.safe_dump(workflow.model_dump(mode="json")))
    split = {
        "data": data.model_dump(mode="json"),
        "train": project.run_names[:2],
        "validate": project.run_names[2:3],
        "test": project.run_names[3:],
        "seed": 42,
        "ratios": [0.5, 0.25],
    }
    (study_dir / "split.json").write_text(json.dumps(split))
    (study_dir / "search_space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    return workflow


def octopi(*args: str) -> list[str]:
    return [sys.executable, "-c", "from octopi.cli import main; main()", *args]


@pytest.mark.slow
def test_four_concurrent_trials_then_select_best(tiny_project, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    study_dir = tmp_path / "study"
    write_study_dir(study_dir, tiny_project)
    processes = [
        subprocess.Popen(
            octopi("explore-trial", "--study-dir", str(study_dir), "--slot", str(slot)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for slot in range(4)
    ]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    for slot, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"slot {slot} failed:\n{output[-3000:]}"
        assert f"slot {slot}: COMPLETE" in output

    trials = load_study(study_dir).get_trials()
    assert sorted(t.user_attrs["slot"] for t in trials) == [0, 1, 2, 3]
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # per-slot seeds

    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY_NAME)
    runs = client.search_runs([experiment.experiment_id])
    (parent_id,) = json.loads((study_dir / PARENT_RUN_NAME).read_text()).values()
    parents = [r for r in runs if r.data.tags.get("octopi.role") == "study"]
    assert [r.info.run_id for r in parents] == [parent_id]
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert sorted(int(r.data.tags["octopi.slot"]) for r in nested) == [0, 1, 2, 3]
    assert len(runs) == 5
    for run in nested:
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"
        assert "best_avg_f1" in run.data.metrics and "optuna.lr" in run.data.params

    runner = CliRunner()
    again = runner.invoke(main, ["explore-trial", "--study-dir", str(study_dir), "--slot", "2"])
    assert again.exit_code == 0, again.output
    assert "slot 2: already COMPLETE" in again.output
    assert len(load_study(study_dir).get_trials()) == 4

    selected = runner.invoke(main, ["select-best", "--study-dir", str(study_dir)])
    assert selected.exit_code == 0, selected.output
    summary = json.loads((study_dir / "best" / "summary.json").read_text())
    best_value = max(t.value for t in trials)
    assert summary["best_metric"] == best_value
    assert f"best: slot {summary['slot']}" in selected.output
    assert (study_dir / "best" / "best_model_weights.pth").is_file()
    with open(study_dir / "trials.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert (study_dir / "plots" / "optimization_history.png").is_file()
    assert (study_dir / "plots" / "best_trial_curves.png").is_file()
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert client.get_run(parent_id).data.tags["best.slot"] == str(summary["slot"])


@pytest.mark.parametrize("slot", ["4", "-1"])
def test_slot_out_of_range_is_refused(tiny_project, tmp_path: Path, slot: str) -> None:
    write_study_dir(tmp_path, tiny_project)
    result = CliRunner().invoke(
        main, ["explore-trial", "--study-dir", str(tmp_path), "--slot", slot]
    )
    assert result.exit_code == 1
    assert "out of range: the study runs num_trials=4 trials, slots 0..3" in result.output


def test_a_study_made_for_another_metric_is_refused(tiny_project, tmp_path: Path) -> None:
    write_study_dir(tmp_path, tiny_project, best_metric="fBeta4")
    open_study(
        tmp_path, SearchConfig(study_name=STUDY_NAME), "avg_f1", search_space_overrides=TINY_SPACE
    )
    result = CliRunner().invoke(
        main, ["explore-trial", "--study-dir", str(tmp_path), "--slot", "0"]
    )
    assert result.exit_code == 1
    assert "metric: the study has 'avg_f1', this config 'fBeta4'" in result.output
    assert not (tmp_path / "trials" / "0" / "checkpoint.pt").exists()


def test_unknown_model_type_in_the_study_config(tiny_project, tmp_path: Path) -> None:
    write_study_dir(tmp_path, tiny_project)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["search"]["model_type"] = "VNet"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(
        main, ["explore-trial", "--study-dir", str(tmp_path), "--slot", "0"]
    )
    assert result.exit_code == 1
    assert "search.model_type" in result.output and "Unet" in result.output


def test_missing_inputs_name_the_file_and_the_fix(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["explore-trial", "--study-dir", str(tmp_path), "--slot", "0"])
    assert result.exit_code == 1 and "config.yaml not found; pass --study-config" in result.output
    result = runner.invoke(main, ["select-best", "--study-dir", str(tmp_path)])
    assert result.exit_code == 1 and "config.yaml not found" in result.output


def test_select_best_without_trials(tiny_project, tmp_path: Path) -> None:
    write_study_dir(tmp_path, tiny_project)
    result = CliRunner().invoke(main, ["select-best", "--study-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no Optuna study" in result.output


def test_each_local_trial_takes_its_own_gpu(tiny_project, tmp_path: Path, monkeypatch) -> None:
    """Without Slurm, explore-trial claims a free GPU (CUDA_VISIBLE_DEVICES) for its trial."""
    import fcntl

    import octopi.search.slots as slots

    study_dir = tmp_path / "study"
    write_study_dir(study_dir, tiny_project)
    seen: list[str | None] = []

    def fake_run_trial_slot(*args, **kwargs):
        import os

        seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
        raise slots.SlotBusyError("stop here")

    monkeypatch.setattr(slots, "run_trial_slot", fake_run_trial_slot)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    # A trial process of another study on this machine holds GPU 0.
    lock_dir = tmp_path / "machine-locks"
    monkeypatch.setenv("OCTOPI_GPU_LOCK_DIR", str(lock_dir))
    lock_dir.mkdir()
    with open(lock_dir / "gpu0.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = CliRunner().invoke(
            main, ["explore-trial", "--study-dir", str(study_dir), "--slot", "0"]
        )
    assert "stop here" in result.output
    assert seen == ["1"]
