"""Differences between two nested plain-data configs: dotted keys with old → new values.

The one comparison of configs in octopi: a training checkpoint against the settings it is
resumed with (:mod:`octopi.training.plan`), and a study's config against the settings the
study started with (:mod:`octopi.study_settings`). No third-party imports: the workflow's
``common.smk`` uses it while planning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class _Absent:
    """Stands for a key that one of the two configs lacks."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Change:
    """One changed setting: ``key`` is dotted (``localize.min_size_fraction``); ``old`` or
    ``new`` is :data:`ABSENT` where that config lacks the key."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} → {self.new!r}"


def changes(old: Any, new: Any, prefix: str = "") -> list[Change]:
    """Every leaf where ``old`` and ``new`` differ, sorted by key; mappings are walked, any other
    value (a list too) is one leaf. A scalar difference at the top is keyed ``config``."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found: list[Change] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                found.append(Change(path, ABSENT, new[key]))
            elif key not in new:
                found.append(Change(path, old[key], ABSENT))
            else:
                found.extend(changes(old[key], new[key], path))
        return found
    return [] if old == new else [Change(prefix or "config", old, new)]


def config_differences(old: Any, new: Any) -> list[str]:
    """Human-readable :func:`changes`: lines ``"key.path: old → new"`` (``<absent>`` for a
    missing key), sorted by key."""
    return [str(change) for change in changes(old, new)]


def listing(lines: list[str], limit: int = 12, indent: str = "  ") -> str:
    """``lines`` one per row under ``indent``, at most ``limit`` of them (then a count)."""
    shown = [indent + line for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"{indent}… and {len(lines) - limit} more")
    return "\n".join(shown)
