"""``write_report``: the run's ``report.html``, ``summary.json`` and PNG figures."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lossatlas.store import atomic_write_json, atomic_write_text

from .commands import absent_panel
from .rundir import RunView
from .sections import Section, SectionSpec, build_sections
from .summary import summary_of

__all__ = ["write_report", "render_report"]


def render_report(view: RunView, built: list[tuple[SectionSpec, Section | None]]) -> str:
    """The HTML page of built sections (see :func:`write_report`), from
    ``templates/page.html.j2``.

    Raises ValueError if two sections use one figure id."""
    import plotly.offline

    from lossatlas import __version__

    from .render import markup, render

    present = [(spec, sec) for spec, sec in built if sec is not None]
    absent = [spec for spec, sec in built if sec is None]
    sections: list[dict[str, Any]] = []
    figures: dict[str, dict] = {}
    for spec, sec in present:
        clash = set(figures) & set(sec.figures)
        if clash:
            raise ValueError(f"report: section {spec.key!r} reuses figure id(s) "
                             f"{sorted(clash)}")
        figures.update(sec.figures)
        sections.append({"key": spec.key, "title": spec.title, "html": markup(sec.html)})
    # the panel right after the Overview: what is missing, and how to fill it
    at = next((k + 1 for k, (spec, _) in enumerate(present) if spec.key == "overview"), 0)
    sections.insert(at, {"key": "absent", "title": None,
                         "html": markup(absent_panel(absent, view))})
    nav = [(spec.key, spec.title) for spec, _ in present]
    if absent:
        nav.insert(at, ("absent", "Absent sections"))
    return render("page.html.j2", title=f"lossatlas report — {view.path.name}", nav=nav,
                  sections=sections, figures=figures, version=__version__,
                  generated=time.strftime("%Y-%m-%d %H:%M"), run=str(view.path),
                  plotly_js=markup(plotly.offline.get_plotlyjs()))


def _training_png(view: RunView, path: Path) -> Path | None:
    """Metrics along training as a static PNG (matplotlib), if the run has them."""
    runs = (view.metrics or {}).get("runs", view.metrics or {})
    if not runs:
        return None
    from lossatlas.atlas_plot import save_figure
    from lossatlas.plotting import pyplot

    plt = pyplot()

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    cmap = plt.get_cmap("viridis")
    for k, (key, r) in enumerate(runs.items()):
        rows = r.get("epochs") if isinstance(r, dict) else None
        if not rows:
            continue
        c = cmap(k / max(len(runs) - 1, 1))
        x = [row.get("epoch", i) for i, row in enumerate(rows)]
        for ax, m in ((a1, "loss"), (a2, "accuracy")):
            for split, ls in (("train", "-"), ("test", "--")):
                y = [row.get(f"{split}_{m}") for row in rows]
                if any(v is not None for v in y):
                    ax.plot(x, [float("nan") if v is None else v for v in y], ls, color=c,
                            label=f"{key} {split}" if m == "loss" else None)
    a1.set_yscale("log")
    a1.set(xlabel="epoch", ylabel="loss (nats)", title="Loss along training")
    a2.set(xlabel="epoch", ylabel="accuracy (fraction)", title="Accuracy along training")
    a1.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


def write_report(run_dir: str | os.PathLike, progress: bool | None = None) -> Path:
    """Write ``RUN/report.html`` (one self-contained page), ``RUN/summary.json`` and
    ``RUN/figures/training.png``; returns the path of ``report.html``.

    Reads what the run stored (``run.json``, fields, topology, faithfulness, overlays,
    training metrics, slices, connectivity / symmetry / terrain / dynamics results when
    present, see :mod:`lossatlas.report.rundir`); never evaluates a loss. Sections
    whose results are missing are listed in an "Absent sections" panel, each with the
    command (``--out RUN``) that produces it. ``progress``: a bar over the sections
    (``None``: auto, see :mod:`lossatlas.progress`).

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` is not a run directory.
    ReportError
        (a ``RuntimeError``) if a section cannot be built from what is stored (names the
        section and the run); an error that is a bug in a builder propagates as it is,
        with a note naming the section.

    Example
    -------
    >>> from lossatlas.report import write_report
    >>> write_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    view = RunView(run_dir)
    _training_png(view, view.path / "figures" / "training.png")
    built = build_sections(view, progress=progress)
    page = render_report(view, built)
    out = view.path / "report.html"
    atomic_write_text(out, page)
    atomic_write_json(view.path / "summary.json", summary_of(view, built))
    return out
