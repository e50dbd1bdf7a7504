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

The modules it does load still import, for features octopi never calls, SciPy's signal and
sparse packages, scikit-image's morphology, scikit-learn's metrics, pandas and pyplot
(about 1 s of MONAI's 1.8 s on a 2-core machine), and, where installed, transformers and
torchvision (2.9 s of 5.6 s in such a Python).
While :func:`import_monai` runs, MONAI's ``optional_import`` of those packages
(:data:`DEFERRED_PACKAGES`) gives a :class:`Deferred` stand-in that imports the real object
when first used (called, an attribute read, an ``isinstance``), without MONAI's version check;
a plain ``import matplotlib.pyplot`` (MONAI's jupyter utilities) gets a module that loads when
first touched (``importlib.util.LazyLoader``). A package that is already imported, or not
installed, is left to MONAI as usual, and after :func:`import_monai` MONAI's
``optional_import`` is its own again.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from typing import Any

_WALK_MODULE = "monai.utils.module"
_lock = threading.Lock()
# What MONAI's modules import through optional_import at import time for features octopi does
# not use (with their subpackages); deferred while import_monai runs.
DEFERRED_PACKAGES = ("pandas", "matplotlib", "scipy.signal", "scipy.sparse", "scipy.stats")
DEFERRED_PACKAGES += ("skimage", "sklearn")
# Where they are installed (GPU images often have both), TransCheX imports transformers' BERT and
# a few nets torchvision at import time: 2.9 s of 5.6 s for MONAI in such a Python 3.12 here.
DEFERRED_PACKAGES += ("transformers", "torchvision")
LAZY_MODULES = frozenset({"matplotlib.pyplot"})  # imported plainly by monai.utils.jupyter_utils


def _deferred_package(module: str) -> bool:
    return module not in sys.modules and any(
        module == package or module.startswith(package + ".") for package in DEFERRED_PACKAGES
    )


class Deferred:
    """Stands for ``module`` (or its attribute ``name``) until first used, then imports it and
    passes everything on: calls, attribute reads, ``isinstance``/``issubclass``, base class."""

    def __init__(self, module: str, name: str = "") -> None:
        object.__setattr__(self, "_where", (module, name))
        object.__setattr__(self, "_target", None)

    def _resolve(self) -> Any:
        target = object.__getattribute__(self, "_target")
        if target is None:
            module, name = object.__getattribute__(self, "_where")
            target = importlib.import_module(module)
            if name:
                target = getattr(target, name)
            object.__setattr__(self, "_target", target)
        return target

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._resolve(), attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*args, **kwargs)

    def __instancecheck__(self, instance: Any) -> bool:
        return isinstance(instance, self._resolve())

    def __subclasscheck__(self, subclass: type) -> bool:
        return issubclass(subclass, self._resolve())

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (self._resolve(),)

    def __repr__(self) -> str:
        module, name = object.__getattribute__(self, "_where")
        return f"<deferred {module}{'.' + name if name else ''}>"


def _deferring(optional_import: Any, active: threading.Event) -> Any:
    """MONAI's ``optional_import``, giving a :class:`Deferred` for an installed package of
    :data:`DEFERRED_PACKAGES` not imported yet, while ``active`` is set."""

    def deferring_optional_import(module: str, *args: Any, **kwargs: Any) -> tuple[Any, bool]:
        deferrable = active.is_set() and _deferred_package(module)
        if deferrable and importlib.util.find_spec(module.partition(".")[0]) is not None:
            name = kwargs.get("name", args[2] if len(args) > 2 else "")
            return Deferred(module, name), True
        return optional_import(module, *args, **kwargs)

    return deferring_optional_import


class _LazyModules(importlib.abc.MetaPathFinder):
    """Gives the modules of :data:`LAZY_MODULES` that are not imported yet a loader that runs
    them when first touched."""

    def find_spec(self, name, path, target=None):
        if name not in LAZY_MODULES or name in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def _skip_walk(*args, **kwargs) -> tuple[list, list]:
    """Stand-in for ``load_submodules`` while ``monai/__init__.py`` runs: loads nothing."""
    return [], []


class _WalkSwitch(importlib.abc.MetaPathFinder):
    """Finds ``monai.utils.module`` as usual and, once it has run, swaps in :func:`_skip_walk`
    and the deferring ``optional_import`` (``monai.utils`` re-exports both names after that,
    so it gets the stand-ins too)."""

    def __init__(self) -> None:
        self.original = None
        self.original_optional_import = None
        self.deferring = threading.Event()

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
                self.original_optional_import = getattr(module, "optional_import", None)
                if self.original_optional_import is not None:
                    module.optional_import = _deferring(
                        self.original_optional_import, self.deferring
                    )
                    self.deferring.set()

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
        switch, lazy = _WalkSwitch(), _LazyModules()
        sys.meta_path[:0] = [lazy, switch]
        try:
            import monai  # noqa: F401
        finally:
            sys.meta_path.remove(switch)
            _restore("load_submodules", switch.original)
        try:
            import monai.apps  # noqa: F401  (the end from which MONAI's import cycle resolves)
            import monai.data.utils  # noqa: F401
            import monai.losses  # noqa: F401
            import monai.networks.nets  # noqa: F401
        finally:
            sys.meta_path.remove(lazy)
            switch.deferring.clear()
            _restore("optional_import", switch.original_optional_import)


def _restore(name: str, original: Any) -> None:
    """MONAI's own function ``name`` again in ``monai.utils.module`` and in ``monai.utils``
    (which re-exports it), where a stand-in replaced it (``original`` None: none did)."""
    walk = sys.modules.get(_WALK_MODULE)
    if original is None or walk is None:
        return
    stand_in = getattr(walk, name, None)
    setattr(walk, name, original)
    utils = sys.modules.get("monai.utils")
    if utils is not None and getattr(utils, name, None) is stand_in:
        setattr(utils, name, original)
