"""Errors of known bad input, which the command line shows as a message without a traceback.

Code that checks what a user gave (an option, a setting, a file) raises :class:`InputError`
(or a subclass) whose message says what is wrong, where, and how to fix it. Every other
exception is unexpected, a bug until shown otherwise: the command line keeps its traceback so
that it gets reported. ``OCTOPI_DEBUG=1`` (or ``octopi --debug``) shows the traceback of known
errors too.
"""

from __future__ import annotations

import os

from pydantic import ValidationError

DEBUG_ENV = "OCTOPI_DEBUG"


class InputError(ValueError):
    """Known bad input: the message names it and the fix; no traceback is needed."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class OutputExistsError(InputError, FileExistsError):
    """An output the user named exists and must not be overwritten."""


def debug_enabled() -> bool:
    """Whether known errors show their traceback too (``OCTOPI_DEBUG`` set, not 0/empty)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def validation_problems(error: ValidationError) -> list[str]:
    """One ``where: what`` line per problem pydantic found."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "value"
        lines.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return lines
