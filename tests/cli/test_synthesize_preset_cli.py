"""`octopi synthesize --preset`: the hard preset writes a readable, self-describing project."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from octopi.cli import main
from octopi.config import CopickSource, PickSpec
from octopi.data.copick_io import CopickProjects
from octopi.data.synthetic_presets import PRESETS


def test_hard_preset_writes_a_readable_project(tmp_path: Path) -> None:
    output = tmp_path / "hard"
    args = ["synthesize", "--output", str(output), "--runs", "2", "--shape", "24,48,48"]
    result = CliRunner().invoke(main, [*args, "--seed", "3", "--preset", "hard"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 runs of shape (24, 48, 48) at 10 Å (hard preset)" in result.output
    record = json.loads((output / "synthesis.json").read_text())
    assert record["preset"] == "hard"
    assert record["settings"] == PRESETS["hard"].to_dict()
    assert record["settings"]["defocus_range_um"] == [2.0, 4.0]
    assert sorted(record["run_defocus_um"]) == ["TS_0", "TS_1"]
    assert all(2.0 <= d <= 4.0 for d in record["run_defocus_um"].values())
    assert "preset hard" in json.loads((output / "copick.json").read_text())["description"]
    projects = CopickProjects([CopickSource(path=output / "copick.json")])
    ref = projects.resolve("TS_1")
    tomogram = projects.load_tomogram(ref, 10.0, "wbp")
    assert tomogram.shape == (24, 48, 48)
    total = sum(
        len(projects.load_picks_angstrom(ref, o.name, PickSpec())) for o in projects.objects()
    )
    assert total > 0
    resolved = (output / "synthesize_config.yaml").read_text()
    assert "preset: hard" in resolved


def test_default_and_hard_differ_for_the_same_seed(tmp_path: Path) -> None:
    tomograms = {}
    for preset in ("default", "hard"):
        output = tmp_path / preset
        args = ["synthesize", "--output", str(output), "--runs", "1", "--shape", "16,32,32"]
        result = CliRunner().invoke(main, [*args, "--preset", preset])
        assert result.exit_code == 0, result.output
        projects = CopickProjects([CopickSource(path=output / "copick.json")])
        tomograms[preset] = projects.load_tomogram(projects.resolve("TS_0"), 10.0, "wbp")
    default_record = json.loads((tmp_path / "default" / "synthesis.json").read_text())
    assert default_record["preset"] == "default" and "run_defocus_um" not in default_record
    assert not (tomograms["default"] == tomograms["hard"]).all()


def test_unknown_preset_is_a_one_line_error(tmp_path: Path) -> None:
    args = ["synthesize", "--output", str(tmp_path / "p"), "--preset", "nasty"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "Error" in line]
    assert len(errors) == 1 and "--preset" in errors[0] and "'nasty'" in errors[0], result.output
    assert "default" in errors[0] and "hard" in errors[0]
    assert not (tmp_path / "p").exists()
