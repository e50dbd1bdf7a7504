"""Import MONAI without its import-everything start-up.

``import monai`` runs ``monai.utils.module.load_submodules`` over the whole package: it imports
every one of its ~430 modules (apps, auto3dseg, bundle, metrics, visualize, ...) and then
executes each once more (``loader.exec_module`` after ``import_module``). octopi uses MONAI's
networks, losses and one sliding-window helper, yet every trial process paid that walk: on a
2-core machine 2.8 s against 1.9 s for what octopi uses (about 10 s against 7 s where no
bytecode is cached; ``python -m benchmarks trial-overhead`` has the figures).

:func:`import_monai` lets ``monai/__init__.py`` run with the walk turned off (everything else
in it runs: version, warning filters, TF32 detection), restores the walk function for anyone
who calls it later, then imports ``monai.apps`` first, as the walk would: MONAI's packages
import each other in a cycle (networks → apps → data → transforms → networks) that only
resolves from that end. Where ``monai`` is already imported, or MONAI's layout is not the one
this was written for, it is a plain ``import monai``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading

_WALK_MODULE = "monai.utils.module"
_lock = threading.Lock()


def _skip_walk(*args, **kwargs) -> tuple[list, list]:
    """Stand-in for ``load_submodules`` while ``monai/__init__.py`` runs: loads nothing."""
    return [], []


class _WalkSwitch(importlib.abc.MetaPathFinder):
    """Finds ``monai.utils.module`` as usual and, once it has run, swaps in :func:`_skip_walk`
    (``monai.utils`` re-exports the name after that, so it gets the stand-in too)."""

    def __init__(self) -> None:
        self.original = None

    def find_spec(self, name, path, target=None):
        if name != _WALK_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module) -> None:
            run_module(module)
            self.original = getattr(module, "load_submodules", None)
            if self.original is not None:
                module.load_submodules = _skip_walk

        spec.loader.exec_module = exec_module
        return spec


def import_monai() -> None:
    """Import MONAI's package and the parts octopi uses, skipping the import-everything walk;
    a no-op once ``monai`` is imported."""
    if "monai" in sys.modules:
        return
    with _lock:
        if "monai" in sys.modules:
            return
        switch = _WalkSwitch()
        sys.meta_path.insert(0, switch)
        try:
            import monai  # noqa: F401
        finally:
            sys.meta_path.remove(switch)
            if switch.original is not None:
                walk = sys.modules[_WALK_MODULE]
                walk.load_submodules = switch.original
                sys.modules["monai.utils"].load_submodules = switch.original
        import monai.apps  # noqa: F401  (the end from which MONAI's import cycle resolves)
        import monai.data.utils  # noqa: F401
        import monai.losses  # noqa: F401
        import monai.networks.nets  # noqa: F401
