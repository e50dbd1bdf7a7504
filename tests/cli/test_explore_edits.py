"""Editing a started study through `octopi model-explore`: other settings are refused before
anything runs (listing each changed key), more trials and other job resources are taken.
Snakemake is faked as in test_explore_cli.py; the workflow side is in tests/workflow."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_explore_cli import assert_fails, explore, study_config  # noqa: E402

from octopi import study_settings  # noqa: E402


def test_a_started_study_refuses_other_settings_but_takes_more_trials(
    snakemake_calls, copick_config: Path, tmp_path: Path
) -> None:
    study = tmp_path / "s"
    base = ["--config", copick_config, "--output", study, "--num-epochs", "20"]
    assert explore(*base, "--num-trials", "4", "--num-epochs", "30").exit_code == 0
    # Not started yet (only a config, e.g. from a dry run): settings may still change.
    assert explore(*base, "--num-trials", "4").exit_code == 0
    assert study_config(study).training.num_epochs == 20
    (study / "runs.json").write_text("{}")  # the study has started

    result = explore(*base, "--num-trials", "4", "--num-epochs", "30")
    assert_fails(result, "training.num_epochs: 20 → 30", "--output NEW_FOLDER")
    result = explore(*base, "--tomo-alg", "denoised")
    assert_fails(result, "data.tomo_algorithms: ['wbp'] → ['denoised']")
    assert study_config(study).search.num_trials == 4

    assert explore(*base, "--num-trials", "6").exit_code == 0
    assert study_config(study).search.num_trials == 6
    # Flags left out keep the study's values: `--output DIR --resume` alone continues it.
    assert explore("--output", study, "--resume").exit_code == 0
    assert study_config(study).training.num_epochs == 20


def _started_study(study: Path, copick_config: Path) -> None:
    """A finished 2-trial study as far as the settings go: config.yaml, the record its first
    Snakemake run made (the workflow's onstart calls record_start), runs.json and trials."""
    assert explore("--config", copick_config, "--output", study, "--num-trials", "2").exit_code == 0
    study_settings.record_start(study, study_config(study))
    (study / "runs.json").write_text("{}")
    for slot in (0, 1):
        (study / "trials" / str(slot)).mkdir(parents=True)
        (study / "trials" / str(slot) / "result.json").write_text("{}")


def _edit(study: Path, section: str, key: str, value: object) -> None:
    values = yaml.safe_load((study / "config.yaml").read_text())
    values[section][key] = value
    (study / "config.yaml").write_text(yaml.safe_dump(values))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_an_edited_config_of_a_started_study_is_refused_before_anything_runs(
    snakemake_calls, copick_config: Path, tmp_path: Path
) -> None:
    study = tmp_path / "s"
    _started_study(study, copick_config)
    snakemake_calls.clear()
    _edit(study, "localize", "min_size_fraction", 0.2)  # by hand, in STUDY/config.yaml
    before = _files(study)
    for extra in ([], ["--dry-run"], ["--resume"]):
        result = explore("--output", study, "--num-trials", "3", *extra)
        assert_fails(
            result,
            "localize.min_size_fraction: 0.05 → 0.2",
            f"only {study_settings.mutable_description()} may change",
            "--output NEW_FOLDER",
        )
        assert "search.num_trials:" not in result.output, result.output
    assert snakemake_calls == [] and _files(study) == before  # nothing run, nothing written
    _edit(study, "localize", "min_size_fraction", 0.05)
    result = explore("--output", study, "--num-epochs", "30")  # a flag: refused as well
    assert_fails(result, "training.num_epochs: 1000 → 30")


def test_a_started_study_takes_more_trials_and_other_job_resources(
    snakemake_calls, copick_config: Path, tmp_path: Path
) -> None:
    study = tmp_path / "s"
    _started_study(study, copick_config)
    _edit(study, "trial_resources", "mem_mb", 64000)
    _edit(study, "search", "num_trials", 4)
    result = explore("--output", study, "--num-trials", "5")
    assert result.exit_code == 0, result.output
    config = study_config(study)
    assert (config.search.num_trials, config.trial_resources.mem_mb) == (5, 64000)


def test_resume_cancels_a_killed_heads_jobs_before_the_mlflow_server_starts(
    snakemake_calls, copick_config: Path, tmp_path: Path, monkeypatch
) -> None:
    """The orphaned trial jobs of a killed head run on until they are cancelled: starting the
    study's MLflow server (seconds) first let them finish in between (Slurm test of the
    killed head)."""
    from octopi.cli import explore_cmds
    from octopi.study_tracking import StudyTracking

    events: list[str] = []
    monkeypatch.setattr(explore_cmds, "_recover", lambda *args: events.append("recover"))
    monkeypatch.setattr(StudyTracking, "__enter__", lambda self: events.append("server") or self)
    study = tmp_path / "s"
    assert explore("--config", copick_config, "--output", study).exit_code == 0
    events.clear()
    assert explore("--output", study, "--resume").exit_code == 0
    assert events == ["recover", "server"]
