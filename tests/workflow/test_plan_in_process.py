"""A dry run plans in octopi's own process (workflow_runner.plan_in_process) and leaves the
process as it found it: working folder, environment, exit status."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from octopi import workflow_runner

pytestmark = pytest.mark.workflow

SNAKEFILE = """
import os

rule all:
    input: expand("out/{n}.txt", n=range(int(os.environ["PLAN_JOBS"])))

rule make:
    output: "out/{n}.txt"
    shell: "touch {output}"
"""


def _args(study: Path, snakefile: Path) -> list[str]:
    return ["--directory", str(study), "--snakefile", str(snakefile), "--dry-run"]


def test_a_dry_run_plans_in_this_process_and_restores_folder_and_environment(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(SNAKEFILE)
    study = tmp_path / "study"
    study.mkdir()
    folder, environment = os.getcwd(), dict(os.environ)

    env = {**os.environ, "PLAN_JOBS": "3"}
    assert workflow_runner.run_snakemake(_args(study, snakefile), env) == 0
    out = capfd.readouterr()
    assert "make" in out.out + out.err and "3" in out.out + out.err
    assert not (study / "out").exists()  # planned, not run
    assert os.getcwd() == folder and dict(os.environ) == environment

    # A plan that fails (the Snakefile reads a variable this environment lacks): status 1,
    # and the process is restored all the same.
    assert workflow_runner.plan_in_process(_args(study, snakefile), dict(os.environ)) == 1
    assert os.getcwd() == folder and dict(os.environ) == environment


def test_plan_in_process_refuses_a_run_that_is_not_a_dry_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dry runs only"):
        workflow_runner.plan_in_process(["--directory", str(tmp_path)], dict(os.environ))
