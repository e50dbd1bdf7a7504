"""When a model's classes fit a target: the one rule, a class is its (name, label) pair.

Fine-tuning and ensembles need the same classes as the project or each other
(:func:`class_labels` equal); segmenting needs every model class among the project's objects
with the same label (:func:`unmatched_classes` empty). Anything with ``name`` and ``label``
(model classes, copick particle objects) can be compared.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class Labelled(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def label(self) -> int: ...


C = TypeVar("C", bound=Labelled)


def class_labels(classes: Iterable[Labelled]) -> list[tuple[str, int]]:
    """The classes as sorted (name, label) pairs: two sets of classes fit when these are equal."""
    return sorted((c.name, c.label) for c in classes)


def unmatched_classes(model_classes: Iterable[C], objects: Iterable[Labelled]) -> list[C]:
    """The model classes that are not among ``objects`` with the same name and label."""
    available = set(class_labels(objects))
    return [c for c in model_classes if (c.name, c.label) not in available]
