"""What ``benchmarks/gpu_check_offline.sh pack`` carries to a GPU machine without an index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO))

from benchmarks import offline_pins  # noqa: E402

OURS = """\
# comment
copick==1.31.0
    # via octopi
filelock==4.3.1
numpy==2.4.6 ; python_version >= "3.11"
ruff==0.17.6
torch==2.13.0
nvidia-cublas==13.1.1.3
Pydantic_Core==2.50.5
"""
PUBLISHED = """\
copick==1.31.0
filelock==4.3.2
octopi==1.7.0
torch==2.13.0+cpu
torch-ema==0.3
"""


def test_the_target_torch_tools_and_what_it_has_stay_behind() -> None:
    ours, extra = offline_pins.select(OURS, PUBLISHED, have={"numpy"})
    assert ours == {"copick": "1.31.0", "filelock": "4.3.1", "pydantic-core": "2.50.5"}
    # the published tool gets what our lock lacks or pins at another version, and torch-ema
    assert extra == {"filelock": "4.3.2", "octopi": "1.7.0", "torch-ema": "0.3"}


def test_names_the_target_has_come_in_any_list_form() -> None:
    assert offline_pins.read_names("absl-py, Typing_Extensions\nzarr  numpy") == {
        "absl-py", "typing-extensions", "zarr", "numpy",
    }  # fmt: skip
    ours, _ = offline_pins.select(OURS, PUBLISHED, offline_pins.read_names("COPICK,pydantic_core"))
    assert set(ours) == {"filelock", "numpy"}


def test_the_real_locks_carry_octopi_1_7_0_and_no_torch(tmp_path: Path) -> None:
    have = tmp_path / "have.txt"
    have.write_text("numpy, scipy")
    offline_pins.main(["--have", str(have), "--out", str(tmp_path)])
    ours = (tmp_path / "ours.txt").read_text().splitlines()
    published = (tmp_path / "published.txt").read_text().splitlines()
    assert "octopi==1.7.0" in published and "torch-ema==0.3" in published
    assert any(line.startswith("copick==") for line in ours)
    for line in ours + published:
        name = line.split("==")[0]
        assert name not in {"numpy", "scipy", "torch", "triton", "ruff", "pulp"}
        assert not name.startswith(("nvidia-", "cuda-"))


def test_the_offline_script_is_executable_bash_that_parses() -> None:
    script = REPO / "benchmarks" / "gpu_check_offline.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "pack ARCHIVE" in usage.stderr


def test_run_without_its_archive_says_how_to_make_one(tmp_path: Path) -> None:
    script = REPO / "benchmarks" / "gpu_check_offline.sh"
    missing = tmp_path / "gpu-check.tar.xz"
    env = {**os.environ, "OFFLINE_DIR": str(tmp_path / "octopi-offline")}
    proc = subprocess.run(
        ["bash", str(script), "run", str(missing)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1
    assert f"no archive {missing}" in proc.stderr and "pack" in proc.stderr
    assert not (tmp_path / "octopi-offline").exists()  # nothing made before the refusal
