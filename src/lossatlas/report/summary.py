"""``summary.json``: the report's facts in machine-readable form."""

from __future__ import annotations

import os
import time
from typing import Any

from .commands import fill_hint, run_context
from .rundir import RunView
from .sections import Section, SectionSpec, build_sections

__all__ = ["build_summary", "summary_of"]


def summary_of(view: RunView, built: list[tuple[SectionSpec, Section | None]]) -> dict[str, Any]:
    """The summary of already built sections (see :func:`build_summary`)."""
    from lossatlas import __version__

    present = [spec for spec, sec in built if sec is not None]
    absent = [spec for spec, sec in built if sec is None]
    ctx = run_context(view) if absent else {}
    figures = sorted(str(p.relative_to(view.path)) for p in view.path.rglob("*.png")
                     if not any(part.startswith(".") for part in p.relative_to(view.path).parts))
    return {
        "run": str(view.path),
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "lossatlas": __version__,
        "sections": [spec.key for spec in present],
        "absent": [{"section": spec.key, "title": spec.title, "hint": spec.hint,
                    "command": fill_hint(spec.hint, ctx)} for spec in absent],
        **{spec.key: sec.summary for spec, sec in built if sec is not None},
        "figures": figures,
    }


def build_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What a run holds, as one JSON-able dict (what ``RUN/summary.json`` contains).

    Keys: ``run``, ``generated``, ``lossatlas`` (version), ``sections`` (keys of the
    sections present), ``absent`` ([{section, title, hint, command}]: the command
    that fills each, for this run), one entry per present
    section with its facts (e.g. ``basins.num_basins``, ``faithfulness.median_decades``,
    ``overview.stages`` in seconds), and ``figures`` (PNG paths relative to the run).
    Reads the run directory only; nothing is recomputed.

    Raises FileNotFoundError if ``run_dir`` is not a run directory.
    """
    view = RunView(run_dir)
    return summary_of(view, build_sections(view))
