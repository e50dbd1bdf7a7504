"""`octopi train` through click: flags, an end-to-end run, and every bad input it refuses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner, Result

from octopi.cli import main
from octopi.models.model_card import ClassInfo, ModelCard

# The `octopi train` table of the reference guide, then our additions.
GUIDE_FLAGS = [
    "--config", "--voxel-size", "--target-info", "--tomo-alg", "--trainRunIDs",
    "--validateRunIDs", "--data-split", "--output", "--num-epochs", "--val-interval",
    "--batch-size", "--lr", "--best-metric", "--ncache-tomos", "--background-ratio",
    "--tversky-alpha", "--channels", "--strides", "--res-units", "--dim-in", "--model-config",
    "--model-weights",
]  # fmt: skip
OUR_FLAGS = [
    "--model-type", "--loss", "--weight-decay", "--warmup-epochs", "--ema-decay",
    "--early-stopping-patience", "--seed", "--amp", "--tracking-uri", "--gt-info",
]  # fmt: skip
GUIDE_DEFAULTS = {
    "--output": "results", "--num-epochs": "1000", "--val-interval": "10", "--batch-size": "16",
    "--lr": "0.001", "--best-metric": "avg_f1", "--ncache-tomos": "15",
    "--background-ratio": "0.0", "--tversky-alpha": "0.3", "--channels": "32,64,96,96",
    "--strides": "2,2,1", "--res-units": "1", "--dim-in": "96",
}  # fmt: skip


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """`octopi train` sets torch's thread count for the process; put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, ["train", *(str(a) for a in args)])


def tiny_args(project, output: Path, *extra: object) -> list[object]:
    return [
        "--config", project.config_path, "--voxel-size", project.voxel_size_angstrom,
        "--output", output, "--num-epochs", 1, "--val-interval", 1, "--batch-size", 2,
        "--dim-in", 16, "--channels", "8,16,32", "--strides", "2,2", "--tracking-uri", "none",
        *extra,
    ]  # fmt: skip


def assert_refused(result: Result, output: Path, *fragments: str) -> None:
    """Failed with a short message holding ``fragments``, and wrote nothing to ``output``."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert not output.exists(), sorted(p.name for p in output.iterdir())


@pytest.fixture(scope="module")
def cli_run(tiny_project, tmp_path_factory) -> tuple[Path, Result]:
    output = tmp_path_factory.mktemp("cli") / "results"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        # A tiny network gains nothing from threads, and they stall on a busy test machine.
        patch.setattr("octopi.runtime.configure_threads", lambda: torch.set_num_threads(1))
        result = invoke(
            *tiny_args(tiny_project, output, "--tomo-batch-size", 4, "--ema-decay", "off")
        )
    torch.set_num_threads(threads)
    return output, result


# --------------------------------------------------------------------------- flags


def test_help_has_every_flag_of_the_guide_with_its_default() -> None:
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split("Options:", 1)[1].split())
    for flag in GUIDE_FLAGS + OUR_FLAGS:
        assert re.search(rf"(^|\s){re.escape(flag)}\b", result.output), flag
    for flag, default in GUIDE_DEFAULTS.items():
        section = text.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert f"[default: {default}]" in section, (flag, section)
    assert "--tomo-batch-size" not in result.output  # a hidden alias of --ncache-tomos


def test_end_to_end_writes_every_output(cli_run: tuple[Path, Result]) -> None:
    output, result = cli_run
    assert result.exit_code == 0, result.output
    assert "best avg_f1" in result.output
    for name in (
        "model_config.yaml",
        "best_model_weights.pth",
        "checkpoint.pt",
        "epochs.csv",
        "curves.png",
        "train_config.yaml",
        "result.json",
    ):
        assert (output / name).is_file(), name
    assert not (output / "mlflow.db").exists()  # --tracking-uri none
    resolved = yaml.safe_load((output / "train_config.yaml").read_text())
    assert resolved["training"]["ncache_tomos"] == 4  # from --tomo-batch-size
    assert resolved["training"]["ema_decay"] is None  # --ema-decay off
    assert resolved["training"]["lr"] == 0.001  # a default from TrainingConfig


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--tomo-alg", "nosuch"], ["nosuch", "wbp"]),
        (["--target-info", "nosuch,octopi,1"], ["nosuch", "create-targets"]),
        (["--dim-in", 18], ["--dim-in 18 is not divisible by 4"]),
        (["--channels", "8,16"], ["--strides needs one value fewer than --channels"]),
        (["--num-epochs", 2, "--val-interval", 5], ["--val-interval 5 is larger than"]),
        (["--model-type", "segresnet", "--channels", "8,16"], ["apply to Unet"]),
        (["--tomo-batch-size", 3, "--ncache-tomos", 4], ["old name of --ncache-tomos"]),
    ],
)
def test_bad_settings_are_refused_before_writing(
    tiny_project, tmp_path: Path, extra: list, fragments: list[str]
) -> None:
    output = tmp_path / "out"
    assert_refused(invoke(*tiny_args(tiny_project, output), *extra), output, *fragments)


def test_voxel_size_without_data_is_refused(tiny_project, tmp_path: Path) -> None:
    output = tmp_path / "out"
    args = tiny_args(tiny_project, output)
    args[args.index("--voxel-size") + 1] = 10
    assert_refused(invoke(*args), output, "no usable runs", "at voxel size 10")


def test_output_of_another_run_is_refused_and_left_alone(
    tiny_project, cli_run: tuple[Path, Result]
) -> None:
    output, _ = cli_run
    before = {p.name: p.stat().st_mtime_ns for p in output.iterdir()}
    result = invoke(*tiny_args(tiny_project, output, "--lr", 0.01, "--ema-decay", "off"))
    assert result.exit_code != 0
    assert "different settings" in result.output and "training.lr: 0.001 → 0.01" in result.output
    assert "Traceback" not in result.output
    assert {p.name: p.stat().st_mtime_ns for p in output.iterdir()} == before


def test_rerunning_a_finished_run_resumes_nothing(
    tiny_project, cli_run: tuple[Path, Result]
) -> None:
    output, _ = cli_run
    before = (output / "checkpoint.pt").stat().st_mtime_ns
    result = invoke(*tiny_args(tiny_project, output, "--tomo-batch-size", 4, "--ema-decay", "off"))
    assert result.exit_code == 0, result.output
    assert (output / "checkpoint.pt").stat().st_mtime_ns == before


def _write_card(folder: Path, source: Path, **changes) -> Path:
    card = ModelCard.load(source / "model_config.yaml").model_copy(update=changes)
    path = folder / "model_config.yaml"
    card.save(path)
    return path


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"voxel_size_angstrom": 10.0}, "trained at voxel size 10 Å"),
        ({"classes": [ClassInfo(name="ribosome", label=1, radius_angstrom=150)]}, "classes"),
        ({"dim_in": 32, "architecture": {"channels": [8, 16, 64]}}, "do not match"),
    ],
)
def test_fine_tuning_mismatches_are_refused(
    tiny_project, cli_run: tuple[Path, Result], tmp_path: Path, changes: dict, fragment: str
) -> None:
    source, _ = cli_run
    if "architecture" in changes:
        from octopi.config import UnetConfig

        changes["architecture"] = UnetConfig(channels=[8, 16, 64], strides=[2, 2])
    card = _write_card(tmp_path, source, **changes)
    output = tmp_path / "tuned"
    result = invoke(
        "--config", tiny_project.config_path, "--voxel-size", tiny_project.voxel_size_angstrom,
        "--output", output, "--num-epochs", 1, "--val-interval", 1, "--tracking-uri", "none",
        "--model-config", card, "--model-weights", source / "best_model_weights.pth",
    )  # fmt: skip
    assert_refused(result, output, fragment)


def test_fine_tuning_needs_both_files_and_no_architecture_flags(
    tiny_project, cli_run: tuple[Path, Result], tmp_path: Path
) -> None:
    source, _ = cli_run
    output = tmp_path / "tuned"
    base = ["--config", tiny_project.config_path, "--voxel-size", 20, "--output", output]
    result = invoke(*base, "--model-config", source / "model_config.yaml")
    assert_refused(result, output, "both --model-config and --model-weights")
    result = invoke(
        *base,
        "--model-config", source / "model_config.yaml",
        "--model-weights", source / "best_model_weights.pth",
        "--channels", "8,16,32",
    )  # fmt: skip
    assert_refused(result, output, "--channels cannot be combined with --model-config")
