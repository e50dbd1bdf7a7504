"""What machine and which versions a benchmark ran on (recorded in every results JSON)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path


def machine() -> dict:
    """CPU model, cores, RAM, GPU (if any), OS, Python."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # noqa: BLE001 - best effort
        ram_gib = None
    gpu = None
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        gpu = proc.stdout.strip() or None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "ram_gib": ram_gib,
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def our_versions() -> dict:
    """Versions of our package and its main dependencies in this Python. Each is looked up on
    its own: a package imported from a checkout (``src/`` on ``PYTHONPATH``, as
    ``GPU_CHECK_PYTHON`` setups do) has no installed metadata, so its module's
    ``__version__`` answers; one that is missing reads ``"missing"``."""
    code = (
        "import importlib, importlib.metadata as m, json\n"
        "def version(dist, module):\n"
        "    try:\n"
        "        return m.version(dist)\n"
        "    except m.PackageNotFoundError:\n"
        "        try:\n"
        "            return getattr(importlib.import_module(module), '__version__', '?')\n"
        "        except ImportError:\n"
        "            return 'missing'\n"
        "print(json.dumps({d: version(d, mod) for d, mod in (('octopi-workflow', 'octopi'), "
        "('torch', 'torch'), ('monai', 'monai'), ('copick', 'copick'), "
        "('snakemake', 'snakemake'))}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
