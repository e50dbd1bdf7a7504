"""exit_without_teardown (explore-trial --fast-exit): the status, the output and the exit
handlers all reach the caller; only Python's teardown is skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from octopi.cli.options import exit_without_teardown

marker = Path(sys.argv[1])
atexit.register(lambda: marker.write_text("exit handlers ran"))
class Teardown:  # its __del__ runs in Python's teardown, which a fast exit skips
    def __del__(self):
        print("teardown ran", flush=True)
keep = Teardown()
if sys.argv[2] != "alone":  # a daemon thread ends with the process; another is waited for
    worker = threading.Thread(target=time.sleep, args=(0.5,), daemon=sys.argv[2] == "daemon")
    worker.start()
sys.stdout.write("buffered output, not yet flushed\\n")
exit_without_teardown(3)
"""


@pytest.mark.parametrize("case", ["alone", "daemon", "thread"])
def test_status_output_and_exit_handlers_reach_the_caller(tmp_path: Path, case: str) -> None:
    marker = tmp_path / "marker"
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(marker), case], capture_output=True, text=True
    )
    assert proc.returncode == 3, proc.stderr
    assert "buffered output, not yet flushed" in proc.stdout
    assert marker.read_text() == "exit handlers ran"
    # The teardown is skipped, unless a non-daemon thread still runs: then it is a normal exit.
    assert ("teardown ran" in proc.stdout) == (case == "thread")


def test_the_trial_rule_asks_for_it() -> None:
    rules = Path(__file__).resolve().parents[2] / "workflow" / "rules" / "explore.smk"
    assert "octopi explore-trial --study-dir . --slot {wildcards.slot} --fast-exit" in (
        rules.read_text()
    )
