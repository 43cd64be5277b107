"""The report's sections: a small registry of builders (:mod:`._registry`), one
function per section, one module per topic.

A builder takes a :class:`~lossatlas.report.rundir.RunView` and returns a
:class:`Section` (HTML, plotly figures, a machine-readable summary) or ``None``
when the run lacks its inputs; the page then lists it under "Absent sections"
with the command that produces it: ``hint`` is that command, with placeholders
(``{run}``, ``{population}``, ``{data}``, ``{dataset}``, ``{model}``, ``{train}``,
``{a}``, ``{b}``) filled from the run by :func:`lossatlas.report.commands.fill_hint`.
Adding a section is one function, in the module of its topic, and one template
(``report/templates/``, Jinja2 with autoescape on, so the values may hold any text
from the run)::

    @section("terrain", "Terrain",
             hint="lossatlas hessian --population {population} {data} --out {run}")
    def terrain(view: RunView) -> Section | None:
        ds = view.field("terrain")
        if ds is None:
            return None
        return Section(template="sections/terrain.html.j2", data={...},
                       figures={...}, summary={...})

The builder gathers the values the section shows (``data``: texts, numbers,
:class:`~lossatlas.report.html.Table` s, figure ids); the template lays them out with
the macros of ``_macros.html.j2`` (tables, definition lists, plot placeholders, inlined
PNGs). Text that plotly draws (hover text, trace names) is HTML to plotly and goes
through :func:`~lossatlas.report.html.esc`.

Builders never evaluate a loss: they read stored values. The merge tree and the
persistence pairs are recomputed from the stored field values and edges (cheap,
exact, the same functions the Atlas used), since ``topology.json`` keeps only the
basins.

Page order is registration order: the order in which this package imports its
modules (below). Every builder and the registry's names are importable from the
package (``from lossatlas.report.sections import basins`` is the builder; its
module's helpers are imported from ``lossatlas.report.sections.basins``).
"""

from __future__ import annotations

# isort: off
# the order of these imports is the page order of the sections
from ._registry import SECTIONS, Section, SectionSpec, build_sections, section
from ._common import _runs_of as _runs_of  # lossatlas.report.commands orders runs with it
from .overview import overview
from .basins import basins
from .connectivity import connectivity
from .symmetry import symmetry
from .terrain import terrain
from .dynamics import branches, phase_transitions
from .faithfulness import faithfulness
from .slices import slices
from .curvature import centre_curvature, hessian_slices, layer_noise, saddles
from .studies import study_summaries
from .induction import induction_heads
from .batch_size import batch_size
from .lead_time import lead_time
from .double_descent import double_descent
from .validation import rebasin, table2
# isort: on

__all__ = [
    "SECTIONS",
    "Section",
    "SectionSpec",
    "basins",
    "batch_size",
    "branches",
    "build_sections",
    "centre_curvature",
    "connectivity",
    "double_descent",
    "faithfulness",
    "hessian_slices",
    "induction_heads",
    "layer_noise",
    "lead_time",
    "overview",
    "phase_transitions",
    "rebasin",
    "saddles",
    "section",
    "slices",
    "study_summaries",
    "symmetry",
    "table2",
    "terrain",
]
