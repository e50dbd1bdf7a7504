"""What settings added after a release meant before they existed.

A checkpoint's ``config`` and a study's ``started_config.yaml`` record every setting their
octopi had. When a later octopi adds a setting, a record without it was trained with the
behaviour the setting then had, which need not be the new default: filling the new default in
would let a resumed training or a started study continue under other rules without a word.
:func:`with_settings_added_later` fills in the old behaviour instead, so that a record
compares equal to the settings it was made with, and a new default shows as a change
(``training.lr_decay: 'cosine_to_zero' → 'cosine_over_run'``) that the user can put back.

Plain data only: the workflow's ``common.smk`` uses it (through :mod:`octopi.study_settings`)
while planning.
"""

from __future__ import annotations

import copy
from typing import Any

# Dotted key → the value every record without that key was made with.
SETTINGS_ADDED_LATER: dict[str, Any] = {
    # Added 2026-12-04; before it, the rate fell to 0 over the epochs after the warm-up.
    "training.lr_decay": "cosine_to_zero",
    # Added 2026-12-04 with tversky_balanced_ce, the one loss it acts in: no record without it
    # used that loss, so its default is no change.
    "training.loss.ce_class_balance": 0.5,
}


def with_settings_added_later(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` (nested sections of settings) in which each key of
    :data:`SETTINGS_ADDED_LATER` that its section lacks holds its old value. Sections the
    record lacks stay absent (they are someone else's to report)."""
    filled = copy.deepcopy(record)
    for dotted, old_value in SETTINGS_ADDED_LATER.items():
        *sections, key = dotted.split(".")
        section: Any = filled
        for name in sections:
            section = section.get(name) if isinstance(section, dict) else None
        if isinstance(section, dict) and key not in section:
            section[key] = old_value
    return filled
