"""Progress bars for long loops, shared by the library and the CLI.

Every long-running public function takes ``progress: bool | None = None``:
``True`` shows a bar, ``False`` hides it, ``None`` (auto) shows one in a Jupyter
notebook (tqdm's widget) or when ``stderr`` is a terminal, and nothing when output
is piped or captured. The environment variable ``LOSSATLAS_PROGRESS`` (``0`` or ``1``)
overrides the auto choice, e.g. to silence a whole script.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_enabled"]


def _in_notebook() -> bool:
    """True when tqdm.auto chose the notebook widget (an IPython kernel is running)."""
    notebook = sys.modules.get("tqdm.notebook")
    return notebook is not None and issubclass(tqdm, notebook.tqdm_notebook)


def progress_enabled(progress: bool | None) -> bool:
    """Whether to show a bar: ``progress`` when given, else ``LOSSATLAS_PROGRESS`` when
    set, else True in a notebook or when ``sys.stderr`` is a terminal."""
    if progress is not None:
        return bool(progress)
    env = os.environ.get("LOSSATLAS_PROGRESS", "").strip()
    if env:
        if env not in ("0", "1"):
            raise ValueError(f"LOSSATLAS_PROGRESS must be 0 or 1, got {env!r}")
        return env == "1"
    if _in_notebook():
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


def progress_bar(
    iterable: Iterable | None = None,
    *,
    progress: bool | None = None,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    leave: bool = True,
) -> tqdm:
    """A tqdm bar (notebook widget in Jupyter) over ``iterable`` or of ``total`` steps,
    shown as :func:`progress_enabled` decides; a disabled bar costs nothing per step.

    Use as an iterable or as a context manager with ``bar.update(n)``.
    """
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave,
                disable=not progress_enabled(progress), dynamic_ncols=True)
