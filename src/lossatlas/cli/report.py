"""``lossatlas report``: the HTML report and summary of a run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import Json, _finish, _handle

__all__ = ["report"]


@_handle
def report(run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory."),
           as_json: bool = Json):
    """Write RUN/report.html (one self-contained page, opens offline) and RUN/summary.json,
    from what the run directory holds (nothing is recomputed)."""
    from ..report import write_report

    path = write_report(run_dir)
    _finish({"report": str(path), "summary": str(Path(run_dir) / "summary.json")}, as_json,
            "report")
