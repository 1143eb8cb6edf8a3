"""The one exception type the engine raises for bad input or settings.

Every check happens before any heavy work, and every message says what to do,
so a user never sees a traceback from deep inside torch.
"""


class DIPError(ValueError):
    """Bad input or inconsistent settings; the message says how to fix it."""
