"""The benchmarks' memory sampler: RSS at every poll, PSS (smaps, which slows a large
process's page faults) only on schedule or when RSS grows, so a peak is still caught."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(REPO))

from benchmarks import procs  # noqa: E402


def sampled(code: str, seconds: float, settle: float = 0.0) -> procs._TreeSampler:
    """A sampler polling every 0.01 s for ``seconds`` a child running ``code``, started
    ``settle`` seconds after the child (past the interpreter's start-up growth)."""
    child = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(settle)
    sampler = procs._TreeSampler(child.pid, poll_seconds=0.01)
    sampler.start()
    time.sleep(seconds)
    sampler.stop()
    sampler.join()
    child.kill()
    child.wait()
    return sampler


def test_pss_is_read_far_less_often_than_rss() -> None:
    sampler = sampled("import time; time.sleep(5)", 1.0, settle=0.5)
    assert sampler.samples >= 20
    assert 1 <= sampler.pss_samples <= 2  # the first poll (a second only if start-up was slow)
    assert sampler.peak_rss > 0 and sampler.peak_pss > 0


def test_a_process_that_grows_gets_its_pss_peak_read() -> None:
    grow = "import time; time.sleep(0.3); b = bytearray(300 << 20); time.sleep(5)"
    sampler = sampled(grow, 1.5)
    assert sampler.peak_rss > 300 << 20
    assert sampler.peak_pss > 250 << 20
