"""The survey's built-in studies as report sections (issue 19).

Each study writes a run directory of its own with a summary JSON; the report shows it
when that summary is in the run (``RUN/NAME.json``, e.g. ``lossatlas report`` on the
study's directory) or one level down (``RUN/SUB/NAME.json``, a study run with
``out_dir`` inside the atlas's run):

- "Induction heads": ``induction.json`` (:func:`lossatlas.studies.run_induction_heads`);
- "Batch size vs flatness": ``batch_size.json`` (:func:`lossatlas.studies.run_batch_size`);
- "Grokking lead time": ``lead_time_law.json`` (:func:`lossatlas.dynamics.lead_time_sweep`
  or :func:`lossatlas.dynamics.write_lead_time_law`), with ``interventions.json``
  (:func:`lossatlas.dynamics.grokking_interventions`) when beside it;
- "Double descent": ``double_descent.json`` (:func:`lossatlas.studies.run_double_descent`)
  and its stored filter-normalised surfaces.

This module reads the summaries and lays out one part per summary; each study's
section is a module of its own (``induction``, ``batch_size``, ``lead_time``,
``double_descent``), registered when ``lossatlas.report.sections`` imports it;
builders read stored values only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..html import Table, number
from ..rundir import RunView, _natural_key
from ._registry import Section

__all__ = ["study_summaries"]


def study_summaries(view: RunView, filename: str) -> list[tuple[Path, dict]]:
    """``(folder, summary)`` of every ``filename`` in the run (top level first, then one
    level down in natural order); a file that is not a JSON object is refused."""
    found = [view.path / filename] if (view.path / filename).is_file() else []
    found += [p / filename for p in sorted(view.path.iterdir(), key=lambda p: _natural_key(p.name))
              if p.is_dir() and not p.name.startswith(".") and (p / filename).is_file()]
    out = []
    for p in found:
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"report: {p} is not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"report: {p} holds a {type(data).__name__}, expected an object")
        out.append((p.parent, data))
    return out


def _where(view: RunView, folder: Path) -> str:
    rel = folder.relative_to(view.path)
    return "this run" if str(rel) == "." else f"{rel}/"


def _log_x(fig: dict) -> dict:
    fig["layout"]["xaxis"]["type"] = "log"
    return fig


def _studies(view: RunView, filename: str, build, body: str) -> Section | None:
    """One part per stored summary (under a heading naming its folder when several),
    each shown by the template ``sections/BODY.html.j2``; ``build(view, folder, summary,
    tag)`` returns the part's values ({facts, plots, tables, stacked}), its figures and
    its facts for ``summary.json``."""
    found = study_summaries(view, filename)
    if not found:
        return None
    parts, figs, summary = [], {}, {}
    for k, (folder, data) in enumerate(found):
        where = _where(view, folder)
        part, f, s = build(view, folder, data, f"{k}")
        parts.append({"where": where, "stacked": False, **part})
        figs.update(f)
        summary[where] = s
    return Section(template="sections/study.html.j2", figures=figs, summary=summary,
                   data={"body": f"sections/{body}.html.j2", "parts": parts})


def _facts(items: Sequence[tuple[str, str]], caption: str) -> Table:
    """A study's facts: a two-column table of quantities and their values (text)."""
    return Table(["quantity", "value"], [[k, v] for k, v in items], caption=caption)


def _steps(values: Any) -> str:
    """Step numbers as text (``none`` when there are none)."""
    if not isinstance(values, list) or not values:
        return "none"
    return ", ".join(number(v) for v in values)


def _means(rows: list[dict], x: str, keys: Sequence[str]) -> tuple[list, dict[str, list]]:
    xs = sorted({r[x] for r in rows if isinstance(r.get(x), (int, float))})
    out = {}
    for k in keys:
        out[k] = [float(np.mean([float(r[k]) for r in rows if r.get(x) == v
                                 and isinstance(r.get(k), (int, float))] or [np.nan]))
                  for v in xs]
    return xs, out
