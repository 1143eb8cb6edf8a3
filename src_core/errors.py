"""The one exception type the engine raises for bad input or settings.

Every check happens before any heavy work, and every message says what to do,
so a user never sees a traceback from deep inside torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .problem import RestoreResult


class DIPError(ValueError):
    """Bad input or inconsistent settings; the message says how to fix it."""

    #: what finished before a failure, where the work keeps it (restore() on a stack)
    partial: RestoreResult | None = None


class Diverged(DIPError):
    """The fit fell at every check from its starting weights: the settings cannot fit this data
    from there (a warm start from a neighbour's weights is run again from random ones)."""
