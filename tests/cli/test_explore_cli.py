"""`octopi model-explore` and `octopi evaluate-test` up to the Snakemake call (which is faked).

The workflow itself runs in tests/workflow; here Snakemake is replaced by a recorder, so each
test checks what model-explore would run and which bad input it refuses, in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from octopi import gpu_slots, parallel, workflow_runner
from octopi.cli import main
from octopi.config import WorkflowConfig
from octopi.cpu_slots import CPU_TRIALS_ENV

REFERENCE_FLAGS = [
    "--config",
    "--voxel-size",
    "--target-info",
    "--tomo-alg",
    "--trainRunIDs",
    "--validateRunIDs",
    "--data-split",
    "--model-type",
    "--num-epochs",
    "--val-interval",
    "--ncache-tomos",
    "--best-metric",
    "--background-ratio",
    "--num-trials",
    "--random-seed",
    "--study-name",
    "--output",
    "--profile",
    "--dry-run",
    "--jobs",
    "--gpus",
    "--resume",
]
OUR_FLAGS = ["--cpu-trials"]


def explore(*args: object) -> Result:
    return CliRunner().invoke(main, ["model-explore", *(str(a) for a in args)])


def assert_fails(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def study_config(study: Path) -> WorkflowConfig:
    return WorkflowConfig.model_validate(yaml.safe_load((study / "config.yaml").read_text()))


def test_help_has_every_flag_of_the_reference_guide() -> None:
    result = CliRunner().invoke(main, ["model-explore", "--help"])
    assert result.exit_code == 0, result.output
    for flag in REFERENCE_FLAGS + OUR_FLAGS:
        assert f"{flag} " in result.output, flag
    assert "explore_results]" in result.output  # the default --output


def test_writes_the_study_config_and_runs_snakemake_there(
    snakemake_calls, copick_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)
    result = explore(
        "--config", "copick.json", "--tomo-alg", "denoised,wbp", "--data-split", "0.7,0.1",
        "--model-type", "mednext", "--num-epochs", "20", "--val-interval", "5",
        "--best-metric", "fBeta3", "--num-trials", "7", "--study-name", "my-explore",
        "--pruner", "none",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    study = tmp_path / "explore_results"
    config = study_config(study)
    assert config.search.pruner == "none"
    assert config.data.configs[0].path == copick_config.resolve()  # absolute: jobs run elsewhere
    assert config.data.tomo_algorithms == ["denoised", "wbp"]
    assert config.data.data_split == [0.7, 0.1]
    assert config.search.model_type == "MedNeXt"
    assert (config.search.num_trials, config.search.study_name) == (7, "my-explore")
    assert (config.training.num_epochs, config.training.best_metric) == (20, "fBeta3")
    assert config.training.lr == WorkflowConfig.model_fields["training"].default.lr  # defaults

    (args, env), (report, _) = snakemake_calls
    root = workflow_runner.workflow_root()
    assert args[args.index("--directory") + 1] == str(study)
    assert args[args.index("--snakefile") + 1] == str(root / "Snakefile")
    assert args[args.index("--configfile") + 1] == str(study / "config.yaml")
    assert args[args.index("--workflow-profile") + 1] == str(root / "profiles" / "default")
    # CPU only (2 cores): two trials at once, one core each.
    assert args[args.index("--resources") + 1] == "gpu=2"
    assert args[args.index("--set-threads") + 1] == "trial=1"
    assert env[CPU_TRIALS_ENV] == "2" and "CUDA_VISIBLE_DEVICES" not in env
    assert "--dry-run" not in args
    assert report[report.index("--report") + 1] == str(study / "report.html")
    # Where to look while it runs.
    assert f"optuna-dashboard {study / 'optuna.journal'}" in result.output
    assert f"mlflow ui --backend-store-uri sqlite:///{study / 'mlflow.db'}" in result.output
    assert "ssh -L 5000:localhost:5000" in result.output
    assert "report.html" in result.output


def test_dry_run_plans_with_the_new_config_and_writes_nothing(
    copick_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned: list[tuple[list[str], WorkflowConfig]] = []
    calls: list[list[str]] = []

    def fake_run(args, env=None):  # reads the planned config while Snakemake would run
        calls.append(list(args))
        if "--dry-run" not in args:
            assert workflow_runner.PLANNED_CONFIG_ENV not in (env or {})
            return 0
        Path(args[args.index("--directory") + 1]).mkdir(parents=True, exist_ok=True)  # as it does
        path = Path(env[workflow_runner.PLANNED_CONFIG_ENV])
        assert args[args.index("--configfile") + 1] == str(path)
        planned.append(
            (list(args), WorkflowConfig.model_validate(yaml.safe_load(path.read_text())))
        )
        return 0

    monkeypatch.setattr(workflow_runner, "run_snakemake", fake_run)
    monkeypatch.setattr(gpu_slots, "list_gpus", lambda environ=None: [])
    study = tmp_path / "s"
    base = ["--config", copick_config, "--output", study]

    result = explore(*base, "--num-trials", "1000", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "nothing was run or written" in result.output
    assert not study.exists()  # a new study folder is removed again
    assert planned[-1][1].search.num_trials == 1000
    assert "--dry-run" in planned[-1][0] and "--rerun-incomplete" not in planned[-1][0]
    assert not Path(planned[-1][0][planned[-1][0].index("--configfile") + 1]).exists()
    nested = tmp_path / "new" / "studies" / "s"
    assert explore("--config", copick_config, "--output", nested, "--dry-run").exit_code == 0
    assert not (tmp_path / "new").exists()

    assert explore(*base, "--num-trials", "4").exit_code == 0  # the real start (faked)
    before = (study / "config.yaml").read_text()
    (study / "runs.json").write_text("{}")  # the study has started
    locks = study / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    result = explore("--output", study, "--num-trials", "6", "--resume", "--dry-run")
    assert result.exit_code == 0, result.output
    assert planned[-1][1].search.num_trials == 6
    assert "--rerun-incomplete" in planned[-1][0]  # planned as --resume would run it ...
    assert calls[-1] == planned[-1][0]  # ... but nothing unlocked
    assert (study / "config.yaml").read_text() == before
    assert study.is_dir() and locks.is_dir()


def test_a_new_study_needs_a_copick_config(snakemake_calls, tmp_path: Path) -> None:
    assert_fails(explore("--output", tmp_path / "s"), "Missing option '--config'")
    assert_fails(
        explore("--config", tmp_path / "nope.json", "--output", tmp_path / "s"),
        "copick config not found",
        "nope.json",
    )
    assert not snakemake_calls
    assert not (tmp_path / "s" / "config.yaml").exists()


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--num-trials", "0"], ["search.num_trials", "greater than or equal to 1"]),
        (["--num-epochs", "5"], ["--val-interval 10 is larger than --num-epochs 5"]),
        (["--data-split", "0.9,0.2"], ["data.data_split", "sum to less than 1"]),
        (["--best-metric", "accuracy"], ["training.best_metric"]),
        (["--target-info", "a,b"], ["expected 'name' or 'name,user_id,session_id'"]),
        (["--trainRunIDs", "TS_0"], ["give both --trainRunIDs and --validateRunIDs"]),
    ],
)
def test_bad_settings_fail_before_anything_runs(
    snakemake_calls, copick_config: Path, tmp_path: Path, flags, fragments
) -> None:
    result = explore("--config", copick_config, "--output", tmp_path / "s", *flags)
    assert_fails(result, *fragments)
    assert not snakemake_calls
    assert not (tmp_path / "s").exists()


def test_gpus_beyond_the_machine_are_refused(
    snakemake_calls, copick_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu_slots, "list_gpus", lambda environ=None: ["0", "1"])
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 8)
    base = ["--config", copick_config, "--output", tmp_path / "s", "--dry-run"]
    assert_fails(explore(*base, "--gpus", "3"), "--gpus 3", "2 GPU(s)")
    assert_fails(explore(*base, "--cpu-trials", "0"), "--cpu-trials", "1 or more")
    assert explore(*base, "--gpus", "2").exit_code == 0
    result = explore(*base, "--cpu-trials", "2")  # default: every GPU
    assert result.exit_code == 0 and "--cpu-trials applies where" in result.output
    assert explore(*base, "--gpus", "0").exit_code == 0  # CPU only: 2 trials, 4 cores each
    assert explore(*base, "--gpus", "0", "--cpu-trials", "3").exit_code == 0
    assert explore(*base, "--gpus", "0", "--cpu-trials", "20").exit_code == 0  # 8 cores: 8
    resources = [args[args.index("--resources") + 1] for args, _ in snakemake_calls]
    assert resources == ["gpu=2", "gpu=2", "gpu=2", "gpu=3", "gpu=8"]
    threads = [args[args.index("--set-threads") + 1] for args, _ in snakemake_calls[2:]]
    assert threads == ["trial=4", "trial=2", "trial=1"]
    assert all("--set-threads" not in args for args, _ in snakemake_calls[:2])  # on GPUs
    assert [env[CPU_TRIALS_ENV] for _, env in snakemake_calls[2:]] == ["2", "3", "8"]
    assert {env["CUDA_VISIBLE_DEVICES"] for _, env in snakemake_calls[2:]} == {""}
    assert all(CPU_TRIALS_ENV not in env for _, env in snakemake_calls[:2])


def test_cpu_trials_on_a_one_core_machine_run_one_at_a_time(
    snakemake_calls, copick_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 1)
    base = ["--config", copick_config, "--output", tmp_path / "s", "--dry-run"]
    assert explore(*base).exit_code == 0
    assert explore(*base, "--cpu-trials", "2").exit_code == 0
    for args, env in snakemake_calls:
        assert args[args.index("--resources") + 1] == "gpu=1"
        assert args[args.index("--set-threads") + 1] == "trial=1"
        assert env[CPU_TRIALS_ENV] == "1"


def test_resume_unlocks_then_reruns_incomplete_jobs(
    snakemake_calls, copick_config: Path, tmp_path: Path
) -> None:
    result = explore("--config", copick_config, "--output", tmp_path / "s", "--resume")
    assert result.exit_code == 0, result.output
    (unlock, _), (run, _), (report, _) = snakemake_calls
    assert "--unlock" in unlock and "--rerun-incomplete" not in unlock
    assert "--rerun-incomplete" in run and "--unlock" not in run
    assert report[report.index("--report") + 1] == str(tmp_path / "s" / "report.html")


def test_failure_points_at_resume_when_the_study_is_locked(
    copick_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflow_runner, "run_snakemake", lambda args, env=None: 1)
    monkeypatch.setattr(gpu_slots, "list_gpus", lambda environ=None: [])
    locks = tmp_path / "s" / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("")
    result = explore("--config", copick_config, "--output", tmp_path / "s")
    assert_fails(result, "Snakemake stopped with status 1", "--resume")


def test_cluster_profile_leaves_gpus_to_the_scheduler(
    snakemake_calls, copick_config: Path, tmp_path: Path
) -> None:
    result = explore(
        "--config", copick_config, "--output", tmp_path / "s", "--profile", "slurm",
        "--jobs", "20", "--dry-run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [(args, _)] = snakemake_calls
    assert args[args.index("--profile") + 1] == str(
        workflow_runner.workflow_root() / "profiles" / "slurm"
    )
    assert args[args.index("--jobs") + 1] == "20"
    assert "--resources" not in args


def test_study_config_file_is_the_base_and_flags_override_it(
    snakemake_calls, tmp_path: Path
) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "copick.json").write_text("{}")
    base = {
        "data": {"configs": [{"path": "copick.json"}], "data_split": [0.6, 0.2]},
        "training": {"dim_in": 32, "num_epochs": 3, "val_interval": 1},
        "search": {"num_trials": 2},
    }
    (folder / "study.yaml").write_text(yaml.safe_dump(base))
    result = explore(
        "--study-config", folder / "study.yaml", "--num-trials", "3", "--output", tmp_path / "s"
    )
    assert result.exit_code == 0, result.output
    config = study_config(tmp_path / "s")
    assert config.data.configs[0].path == folder / "copick.json"  # relative to the file
    assert (config.training.dim_in, config.search.num_trials) == (32, 3)


def test_an_invalid_study_config_names_the_key(snakemake_calls, tmp_path: Path) -> None:
    study = tmp_path / "s"
    study.mkdir()
    (study / "config.yaml").write_text("data:\n  configs: []\ntraining:\n  num_epochs: -1\n")
    result = explore("--output", study)
    assert_fails(result, "data.configs", "training.num_epochs")


def test_workflow_root_holds_the_workflow() -> None:
    root = workflow_runner.workflow_root()
    for name in ("Snakefile", "workflow/rules/common.smk", "profiles/default/config.yaml"):
        assert (root / name).is_file(), name


def test_evaluate_test_needs_test_runs(tmp_path: Path) -> None:
    (tmp_path / "copick.json").write_text("{}")
    config = {"data": {"configs": [{"path": str(tmp_path / "copick.json")}]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    split = {"train": ["TS_0"], "validate": ["TS_1"], "test": []}
    (tmp_path / "split.json").write_text(json.dumps(split))
    result = CliRunner().invoke(main, ["evaluate-test", "--study-dir", str(tmp_path)])
    assert_fails(result, "no test runs")
    assert not (tmp_path / "test").exists()


def test_data_commands_read_a_study_config(tiny_project_copy, tmp_path: Path) -> None:
    project = tiny_project_copy
    config = {
        "data": {
            "configs": [{"path": str(project.config_path)}],
            "voxel_size_angstrom": project.voxel_size_angstrom,
            "target": {"name": "fresh", "user_id": "octopi", "session_id": "1"},
            "data_split": [0.5],
        },
        "create_targets": {
            "configs": [{"path": str(project.config_path)}],
            "voxel_size_angstrom": project.voxel_size_angstrom,
            "target": {"name": "fresh", "user_id": "octopi", "session_id": "1"},
        },
    }
    study = tmp_path / "config.yaml"
    study.write_text(yaml.safe_dump(config))

    def run(*args: object) -> Result:
        return CliRunner().invoke(main, [str(a) for a in args])

    result = run("create-targets", "--study-config", study, "--output", tmp_path / "targets")
    assert result.exit_code == 0, result.output
    assert "wrote target segmentation fresh,octopi,1 for 4 runs" in result.output
    result = run("discover-runs", "--study-config", study, "--output", tmp_path / "runs.json")
    assert result.exit_code == 0, result.output
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert sorted(runs["usable"]) == project.run_names
    assert runs["data"]["target"]["name"] == "fresh"
    result = run(
        "split-runs", "--study-config", study, "--runs-file", tmp_path / "runs.json",
        "--output", tmp_path / "split.json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    split = json.loads((tmp_path / "split.json").read_text())
    assert (len(split["train"]), len(split["validate"])) == (2, 2)

    both = run("discover-runs", "--study-config", study, "--voxel-size", "10", "--output", "x")
    assert both.exit_code != 0 and "leave out --voxel-size" in both.output
    neither = run("discover-runs", "--output", tmp_path / "x.json")
    assert neither.exit_code != 0 and "Missing option '--config'" in neither.output
