"""The Snakemake workflow: style, lint, planning speed, config errors, a tiny study end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from workflow_helpers import OCTOPI, job_counts, snakemake, tiny_config, write_study

from octopi.workflow_runner import workflow_root

pytestmark = pytest.mark.workflow

ROOT = workflow_root()


@pytest.fixture
def copick_config(tmp_path: Path) -> Path:
    """A copick config path that exists (planning never opens it)."""
    path = tmp_path / "copick.json"
    path.write_text("{}\n")
    return path


def test_snakefmt_clean() -> None:
    snakefmt = Path(sys.executable).with_name("snakefmt")
    out = subprocess.run(
        [str(snakefmt), "--check", "Snakefile", "workflow"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout


def _config_keys(model: type, prefix: str = "") -> list[str]:
    """Dotted keys of a config model; small value types (target, picks, sources) are leaves."""
    import typing

    from pydantic import BaseModel

    from octopi.config import CopickSource, PickSpec, TargetSpec

    keys = []
    for name, field in model.model_fields.items():
        types = typing.get_args(field.annotation) or (field.annotation,)
        sub = next((t for t in types if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if sub is not None and sub not in (CopickSource, PickSpec, TargetSpec):
            keys += _config_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_example_config_loads_and_the_readme_explains_every_key() -> None:
    from octopi.config import WorkflowConfig
    from octopi.workflow_runner import load_study_config

    example = load_study_config(ROOT / "config" / "config.yaml")
    assert example.data.data_split == [0.7, 0.15]
    readme = (ROOT / "config" / "README.md").read_text()
    tables: dict[str, dict[str, str]] = {}  # heading -> key -> default cell
    for part in readme.split("\n## ")[1:]:
        heading, _, body = part.partition("\n")
        tables[heading] = {
            cells[1].strip().strip("`"): cells[2].strip()
            for cells in (line.split("|") for line in body.splitlines() if line.startswith("| `"))
        }
    source = {"configs": [{"path": "copick.json"}]}
    defaults = WorkflowConfig(data=source, create_targets=source).model_dump(mode="json")
    missing, wrong = [], []
    for key in _config_keys(WorkflowConfig):
        section, _, rest = key.partition(".")
        rows = {k: v for h, t in tables.items() if f"`{section}`" in h for k, v in t.items()}
        cell = rows.get(rest, rows.get(key))
        if cell is None:
            missing.append(key)
        elif cell.startswith("`") and cell.endswith("`"):
            default = defaults
            for name in key.split("."):
                default = default[name]
            if yaml.safe_load(cell.strip("`")) != default:
                wrong.append(f"{key}: README {cell}, octopi.config {default!r}")
    assert not missing, f"config/README.md lacks {missing}"
    assert not wrong, "config/README.md defaults differ from octopi.config:\n" + "\n".join(wrong)


def test_lint_clean(tmp_path: Path, copick_config: Path) -> None:
    study = write_study(tmp_path / "study", tiny_config(copick_config, 10.0))
    out = snakemake(study, "--lint")
    assert out.returncode == 0, out.stdout
    assert "Congratulations, your workflow is in a good condition" in out.stdout


def test_dry_run_plans_one_job_per_trial_quickly(tmp_path: Path, copick_config: Path) -> None:
    config = tiny_config(copick_config, 10.0, search={"num_trials": 200})
    study = write_study(tmp_path / "study", config)
    start = time.perf_counter()
    out = snakemake(study, "--dry-run", "--quiet", "rules")
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stdout
    counts = job_counts(out.stdout)
    assert counts["trial"] == 200
    assert counts["discover_runs"] == counts["split_runs"] == counts["select_best"] == 1
    assert "create_targets" not in counts
    # < 2 s on an idle 2-core machine; generous here for loaded CI machines.
    assert seconds < 20, f"planning 200 trials took {seconds:.1f} s"
    assert not (study / "runs.json").exists()  # a dry run writes nothing


def test_create_targets_runs_first_when_configured(tmp_path: Path, copick_config: Path) -> None:
    targets = {"configs": [{"path": str(copick_config)}], "voxel_size_angstrom": 10.0}
    config = tiny_config(copick_config, 10.0, create_targets=targets)
    out = snakemake(write_study(tmp_path / "study", config), "--dry-run", "--quiet", "rules")
    assert out.returncode == 0, out.stdout
    assert job_counts(out.stdout)["create_targets"] == 1


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        ({"training": {"num_epochs": "zero"}}, ["'zero' is not of type 'integer'", "num_epochs"]),
        ({"search": {"num_trials": 0}}, ["0 is less than the minimum of 1", "num_trials"]),
        ({"training": {"epochs": 3}}, ["epochs", "Additional properties are not allowed"]),
        ({"data": {"data_split": [0.9, 0.3]}}, ["data.data_split", "sum to less than 1"]),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, copick_config: Path, change, fragments):
    config = tiny_config(copick_config, 10.0)
    for section, values in change.items():
        config[section] = {**config.get(section, {}), **values}
    out = snakemake(write_study(tmp_path / "study", config), "--dry-run")
    assert out.returncode != 0
    for fragment in fragments:
        assert fragment in out.stdout, out.stdout


def test_missing_copick_config_and_overrides_are_refused(tmp_path: Path) -> None:
    study = write_study(tmp_path / "study", tiny_config(tmp_path / "absent.json", 10.0))
    out = snakemake(study, "--dry-run")
    assert out.returncode != 0 and "copick config(s) not found" in out.stdout, out.stdout
    (tmp_path / "absent.json").write_text("{}")
    out = snakemake(study, "--dry-run", "--config", "search={study_name: other}")
    assert out.returncode != 0 and "set values in that file, not with" in out.stdout, out.stdout


def test_a_started_study_refuses_other_data(tmp_path: Path) -> None:
    from octopi.workflow_runner import load_study_config

    study = tmp_path / "study"
    study.mkdir()
    (study / "copick.json").write_text("{}")
    config = tiny_config(Path("copick.json"), 10.0)  # relative: read from the study folder
    write_study(study, config)
    data = load_study_config(study / "config.yaml").data.model_dump(mode="json")
    (study / "runs.json").write_text(json.dumps({"data": data, "usable": [], "skipped": {}}))
    assert snakemake(study, "--dry-run").returncode == 0
    config["data"]["voxel_size_angstrom"] = 20.0
    write_study(study, config)
    out = snakemake(study, "--dry-run")
    assert out.returncode != 0
    assert "data.voxel_size_angstrom: 10.0 → 20.0" in out.stdout, out.stdout


def test_a_started_study_refuses_edits_but_takes_more_trials(
    tmp_path: Path, copick_config: Path
) -> None:
    """The issue-12 edit without model-explore: the user's own Snakemake refuses it too."""
    from octopi.study_settings import mutable_description, record_start
    from octopi.workflow_runner import load_study_config

    config = tiny_config(copick_config, 10.0)
    study = write_study(tmp_path / "study", config)
    record_start(study, load_study_config(study / "config.yaml"))  # as the first run does
    (study / "runs.json").write_text("{}")  # started
    config["localize"] = {"min_size_fraction": 0.2}
    write_study(study, config)
    out = snakemake(study, "--dry-run")
    assert out.returncode != 0, out.stdout
    assert "localize.min_size_fraction: 0.05 → 0.2" in out.stdout, out.stdout
    assert f"only {mutable_description()} may change" in out.stdout

    del config["localize"]
    config["search"]["num_trials"] = 3
    config["trial_resources"]["mem_mb"] = 3000
    write_study(study, config)
    out = snakemake(study, "--dry-run")
    assert out.returncode == 0, out.stdout


@pytest.mark.slow
def test_no_usable_runs_fails_with_the_reason(tmp_path: Path, tiny_project) -> None:
    result = subprocess.run(
        [OCTOPI, "model-explore", "--config", str(tiny_project.config_path), "--voxel-size",
         "20", "--target-info", "missing,octopi,1", "--output", str(tmp_path / "study")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "no usable runs found" in output, output
    assert "no target segmentation missing,octopi,1" in output, output
    assert not list((tmp_path / "study").glob("trials/*"))


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def six_run_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 runs of (32, 48, 48) voxels at 20 Å, picks but no targets (the workflow makes them)."""
    from octopi.config import SynthesizeConfig
    from octopi.data.synthetic import synthesize_project

    root = tmp_path_factory.mktemp("six") / "project"
    config = SynthesizeConfig(output=root, runs=6, shape_zyx=(32, 48, 48), voxel_size_angstrom=20)
    return synthesize_project(config, show_progress=False).config_path


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path: Path, six_run_project: Path) -> None:
    from octopi.data.copick_io import CopickProjects
    from octopi.workflow_runner import load_study_config

    config = tiny_config(
        six_run_project,
        20.0,
        data={"data_split": [0.5, 0.25]},  # 3 train, 2 validation, 1 test
        create_targets={"configs": [{"path": str(six_run_project)}], "voxel_size_angstrom": 20},
    )
    study = write_study(tmp_path / "study", config)

    start = time.perf_counter()
    result = subprocess.run(
        [OCTOPI, "model-explore", "--output", str(study)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - start
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    print(f"tiny study (2 trials x 2 epochs, 6 runs 32x48x48): {seconds:.1f} s")

    for slot in (0, 1):
        trial = json.loads((study / "trials" / str(slot) / "result.json").read_text())
        assert trial["slot"] == slot and trial["state"] in ("COMPLETE", "PRUNED")
        assert (study / "trials" / str(slot) / "epochs.csv").is_file()
    for name in ("model_config.yaml", "best_model_weights.pth", "summary.json"):
        assert (study / "best" / name).is_file(), name
    assert (study / "trials.csv").is_file() and list((study / "plots").glob("*.png"))
    assert (study / "optuna.journal").is_file() and (study / "mlflow.db").is_file()

    split = json.loads((study / "split.json").read_text())
    assert (len(split["train"]), len(split["validate"]), len(split["test"])) == (3, 2, 1)
    metrics = json.loads((study / "test" / "metrics.json").read_text())
    assert metrics["test_runs"] == split["test"]
    assert 0.0 <= metrics["weighted_fbeta"] <= 1.0 and metrics["per_class"]
    workflow = load_study_config(study / "config.yaml")
    projects = CopickProjects(workflow.data.configs)
    pick_sets = projects.pick_sets(projects.resolve(split["test"][0]))
    assert any(s.endswith(",octopi-explore,tiny") for s in pick_sets), pick_sets

    # Calibrated picking: the best model's card carries its calibration; with two COMPLETE
    # trials select-best averaged them into best_ensemble/, scored on the test run too.
    from octopi.inference.ensemble_folder import EnsembleCard
    from octopi.models.model_card import ModelCard

    card = ModelCard.load(study / "best" / "model_config.yaml")
    assert card.calibration is not None and card.calibration.run_ids == sorted(split["validate"])
    states = [
        json.loads((study / "trials" / str(slot) / "result.json").read_text())["state"]
        for slot in (0, 1)
    ]
    if states == ["COMPLETE", "COMPLETE"]:
        ensemble = EnsembleCard.load(study / "best_ensemble" / "ensemble.yaml")
        assert sorted(m.slot for m in ensemble.members) == [0, 1]
        assert ensemble.calibration is not None
        assert 0.0 <= metrics["ensemble"]["weighted_fbeta"] <= 1.0
    else:
        assert metrics["ensemble"] is None

    report = (study / "report.html").read_text()
    for fragment in ("trials.html", "best.html", "test.html", ".png"):
        assert fragment in report, fragment
    assert (study / "logs" / "trial" / "0.log").is_file()

    # The same command again: nothing to do, nothing retrained.
    mtimes = {p: p.stat().st_mtime for p in study.glob("trials/*/result.json")}
    again = subprocess.run(
        [OCTOPI, "model-explore", "--output", str(study), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr
    assert {p: p.stat().st_mtime for p in study.glob("trials/*/result.json")} == mtimes
    # A dry run with more trials plans only the new slots and leaves config.yaml as it was.
    more = subprocess.run(
        [OCTOPI, "model-explore", "--output", str(study), "--num-trials", "3", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert more.returncode == 0, more.stderr
    assert job_counts(more.stdout + more.stderr).get("trial") == 1, more.stdout
    assert yaml.safe_load((study / "config.yaml").read_text()) == workflow.model_dump(mode="json")

    # Issue 12: the first run recorded the settings; localize edited by hand in config.yaml of
    # the finished study, then more trials: refused up front by model-explore and by Snakemake.
    assert load_study_config(study / "started_config.yaml") == workflow
    edited = workflow.model_dump(mode="json")
    edited["localize"]["min_size_fraction"] = 0.2
    (study / "config.yaml").write_text(yaml.safe_dump(edited))
    files = {p: p.stat().st_mtime_ns for p in study.rglob("*") if p.is_file()}
    refused = subprocess.run(
        [OCTOPI, "model-explore", "--output", str(study), "--num-trials", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0
    assert "localize.min_size_fraction: 0.05 → 0.2" in refused.stderr, refused.stderr
    out = snakemake(study, "--dry-run")
    assert out.returncode != 0 and "localize.min_size_fraction: 0.05 → 0.2" in out.stdout
    assert {p: p.stat().st_mtime_ns for p in study.rglob("*") if p.is_file()} == files
