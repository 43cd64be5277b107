"""The base of lossatlas's own exceptions.

Every exception lossatlas raises on purpose about its input (a bad checkpoint, an
unknown registry name, a run directory in use, an unfitted embedding, ...) derives from
:class:`LossatlasError` as well as from the built-in class it always had
(``ValueError``, ``KeyError``, ``RuntimeError``), so ``except ValueError`` keeps working
and ``except LossatlasError`` catches exactly the errors lossatlas means. The CLI prints
these as one line; anything else it treats as a bug and shows with its traceback.
"""

from __future__ import annotations

__all__ = ["InputTypeError", "LossatlasError", "MissingKeyError", "NotComputedError", "ReportError",
           "SetupError"]


class LossatlasError(Exception):
    """An error lossatlas raises on purpose: the input, a file or the run directory is
    at fault (not lossatlas); its message names what and says what to do."""


class InputTypeError(TypeError, LossatlasError):
    """An argument, data or a factory's return value of the wrong type (a ``TypeError``
    lossatlas raises on purpose, naming the value and what it accepts)."""


class SetupError(RuntimeError, LossatlasError):
    """The environment lossatlas runs in is set up wrong (e.g. the variables of a
    distributed launch); the message says how to set it up."""


class MissingKeyError(KeyError, LossatlasError):
    """A named tensor, variable, module or run the input lacks (a ``KeyError`` lossatlas
    raises on purpose, naming the missing key and the ones there are)."""

    def __str__(self) -> str:  # the message as written, not KeyError's repr of it
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class NotComputedError(RuntimeError, LossatlasError):
    """A result was asked for before the step that computes it ran ("call X first");
    the message names the step to run."""


class ReportError(RuntimeError, LossatlasError):
    """A report section could not be built from what the run directory stores (a result
    file that is unreadable or malformed); the message names the section and the run."""


class UnsupportedModelError(RuntimeError, LossatlasError):
    """A model lossatlas cannot analyse as asked (torch.fx cannot trace it, two of its
    layers would have to share a permutation of different sizes); the message names the
    model and what to do instead."""
