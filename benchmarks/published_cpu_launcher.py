"""Run the published octopi 1.7.0 CLI on a machine without a GPU.

Run this file with the PUBLISHED tool's interpreter (``benchmarks/.envs/octopi-1.7.0/bin/python
benchmarks/published_cpu_launcher.py segment ...``); it takes the same arguments as that tool's
``octopi`` command and calls its entry point ``octopi.main:routines`` unchanged.

Why: octopi 1.7.0 trains on the CPU when no GPU is present (``octopi.workflows.train`` picks
``cuda if available else cpu``), but its inference refuses to: ``octopi.pytorch.inference.
Predictor.__init__`` raises ``RuntimeError("No GPUs available.")`` when
``torch.cuda.device_count() == 0`` and then fixes its device to ``torch.device('cuda')``.

What this launcher changes, and nothing else (only when ``torch.cuda.is_available()`` is
False; on a GPU machine it patches nothing and the tool runs unmodified):

1. ``Predictor.__init__`` is wrapped so that, when the caller passed no ``device``, it gets
   ``device=torch.device("cpu")`` instead of the hard-coded ``cuda``.
2. During that one ``__init__`` call, ``torch.cuda.device_count`` reports 1 so that the
   "No GPUs available." guard passes; the real function is restored before ``__init__``
   returns. Everything after (model loading with ``map_location=self.device``, sliding-window
   inference, test-time augmentation, writing to copick) runs the published code as is, on
   the CPU. The published code already disables AMP and pin_memory off CUDA.

The caller ``octopi.workflows.segment`` still prints "# of GPUs Available: 0 -- Using
Single-GPU Predictor." and the progress bar says "on GPU: cpu": cosmetic only.
``model-explore`` is not patched (the benchmarks do not run it).
"""

from __future__ import annotations

import functools
import sys


def _patch_predictor_for_cpu() -> None:
    import torch
    from octopi.pytorch import inference

    original_init = inference.Predictor.__init__

    @functools.wraps(original_init)
    def cpu_init(self, *args, **kwargs):
        if kwargs.get("device") is None and len(args) <= 6:  # device: 7th positional
            kwargs["device"] = torch.device("cpu")
        real_device_count = torch.cuda.device_count
        torch.cuda.device_count = lambda: 1
        try:
            original_init(self, *args, **kwargs)
        finally:
            torch.cuda.device_count = real_device_count

    inference.Predictor.__init__ = cpu_init


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        _patch_predictor_for_cpu()
        print("[benchmarks] octopi 1.7.0 launched with its Predictor on the CPU", file=sys.stderr)
    from octopi.main import routines

    sys.argv[0] = "octopi"
    routines(prog_name="octopi")


if __name__ == "__main__":
    main()
