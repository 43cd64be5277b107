"""The atlas report: one self-contained interactive HTML page per run.

``write_report(run_dir)`` writes ``RUN/report.html`` (plotly.js inlined, images as
data URIs: it opens offline), ``RUN/summary.json`` and PNG figures, from what the run
stored. Sections are registered builders (:data:`SECTIONS`); a section whose
results are absent is listed as such.
"""

from lossatlas.report.rundir import RunView
from lossatlas.report.sections import SECTIONS, Section, SectionSpec, build_sections, section
from lossatlas.report.summary import build_summary
from lossatlas.report.write import render_report, write_report

__all__ = [
    "RunView",
    "SECTIONS",
    "Section",
    "SectionSpec",
    "build_sections",
    "build_summary",
    "render_report",
    "section",
    "write_report",
]
