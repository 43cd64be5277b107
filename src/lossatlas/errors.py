"""The base of lossatlas's own exceptions.

Every exception lossatlas raises on purpose about its input (a bad checkpoint, an
unknown registry name, a run directory in use, an unfitted embedding, ...) derives from
:class:`LossatlasError` as well as from the built-in class it always had
(``ValueError``, ``KeyError``, ``RuntimeError``), so ``except ValueError`` keeps working
and ``except LossatlasError`` catches exactly the errors lossatlas means. The CLI prints
these as one line; anything else it treats as a bug and shows with its traceback.
"""

from __future__ import annotations

__all__ = ["LossatlasError"]


class LossatlasError(Exception):
    """An error lossatlas raises on purpose: the input, a file or the run directory is
    at fault (not lossatlas); its message names what and says what to do."""
