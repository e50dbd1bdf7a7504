"""The `octopi` command line: a click group whose subcommands load on demand.

Subcommand modules import only click and the config models at import time, so
`octopi --help` and Snakemake's dry runs never pay for torch or MONAI.
"""

from __future__ import annotations

import importlib
import os

import click

from octopi import __version__
from octopi.errors import DEBUG_ENV

# name -> "module:function"; grouped as the help lists them.
COMMANDS: dict[str, str] = {
    "synthesize": "octopi.cli.data_cmds:synthesize",
    "import": "octopi.cli.data_cmds:import_mrc",
    "create-targets": "octopi.cli.data_cmds:create_targets",
    "discover-runs": "octopi.cli.data_cmds:discover_runs",
    "split-runs": "octopi.cli.data_cmds:split_runs",
    "train": "octopi.cli.train_cmd:train",
    "segment": "octopi.cli.infer_cmds:segment",
    "localize": "octopi.cli.infer_cmds:localize",
    "evaluate": "octopi.cli.infer_cmds:evaluate",
    "calibrate": "octopi.cli.calibrate_cmd:calibrate",
    "model-explore": "octopi.cli.explore_cmds:model_explore",
    "explore-trial": "octopi.cli.search_cmds:explore_trial",
    "select-best": "octopi.cli.search_cmds:select_best",
    "evaluate-test": "octopi.cli.search_cmds:evaluate_test",
    "install-profile": "octopi.cli.explore_cmds:install_profile",
    "check-cluster": "octopi.cli.cluster_cmds:check_cluster",
    "schema": "octopi.cli.data_cmds:schema",
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="octopi")
@click.option(
    "--debug",
    is_flag=True,
    help=f"Show the traceback of every error, also of known bad input (same as {DEBUG_ENV}=1; "
    "the commands a study runs inherit it).",
)
def main(debug: bool) -> None:
    """octopi: train, search and apply 3D particle-picking networks on copick projects."""
    if debug:
        os.environ[DEBUG_ENV] = "1"
