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
    """Versions of our package and its main dependencies in this venv."""
    code = (
        "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
        "('octopi-workflow', 'torch', 'monai', 'copick', 'snakemake')}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
