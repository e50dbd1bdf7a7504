"""The plain types of copick access (no copick import): objects, run references, errors.

:mod:`octopi.data.copick_io` re-exports them; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from octopi.errors import InputError

__all__ = ["CopickDataError", "ParticleObject", "RunRef"]


class CopickDataError(InputError):
    """Requested data is not in the copick project(s); the message lists what is there."""


@dataclass(frozen=True)
class ParticleObject:
    """A pickable object of a copick project."""

    name: str
    label: int
    radius_angstrom: float
    is_particle: bool = True
    color: tuple[int, int, int, int] = (128, 128, 128, 255)
    pdb_id: str | None = None


@dataclass(frozen=True)
class RunRef:
    """A run of one of the open projects."""

    source_index: int
    session_name: str | None
    run_name: str

    @property
    def key(self) -> str:
        """Unique run name across projects: ``run`` or ``session/run``."""
        return f"{self.session_name}/{self.run_name}" if self.session_name else self.run_name
