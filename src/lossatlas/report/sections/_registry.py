"""The registry of report sections: :class:`Section` (what a builder returns),
:class:`SectionSpec`, :data:`SECTIONS` (in page order), the :func:`section`
decorator and :func:`build_sections`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..rundir import RunView

__all__ = ["Section", "SectionSpec", "SECTIONS", "section", "build_sections"]


@dataclass
class Section:
    """What one builder returns.

    html : body of the section; plot placeholders are ``<div id=FIG_ID>``. Rendered from
        ``template`` and ``data`` when a template is given (the way every built-in
        section is written); a hand-written ``html`` must escape run text itself.
    figures : {FIG_ID: plotly figure dict}; ids must be unique in the page
    summary : JSON-able facts for ``summary.json``
    template : a template under ``report/templates/`` (Jinja2, autoescape on)
    data : the values the section shows: the template's context
    """

    html: str = ""
    figures: dict[str, dict] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.template is not None:
            from ..render import render

            self.html = render(self.template, **self.data)


@dataclass(frozen=True)
class SectionSpec:
    """A registered section: anchor ``key``, ``title`` (DESIGN.md vocabulary), the
    ``hint`` shown when absent and its ``build`` function."""

    key: str
    title: str
    hint: str
    build: Callable[[RunView], Section | None]


SECTIONS: dict[str, SectionSpec] = {}
"""Registered sections, in page order."""


def section(key: str, title: str, hint: str) -> Callable:
    """Register ``fn(view) -> Section | None`` as the section ``key`` (page order = order
    of registration). Re-registering a key replaces it in place."""

    def deco(fn: Callable[[RunView], Section | None]) -> Callable[[RunView], Section | None]:
        SECTIONS[key] = SectionSpec(key, title, hint, fn)
        return fn

    return deco


def build_sections(view: RunView, progress: bool | None = False,
                   ) -> list[tuple[SectionSpec, Section | None]]:
    """Every registered section built on ``view`` (None for the absent ones); a bar over
    the sections when ``progress`` (``None``: auto, see :mod:`lossatlas.progress`).

    A builder that fails on what the run stores (a :class:`~lossatlas.errors.LossatlasError`,
    ``ValueError`` or ``OSError``) raises :class:`~lossatlas.errors.ReportError` naming the
    section and the run; any other exception is a bug in the builder and propagates
    with a note naming the section.
    """
    from lossatlas.errors import LossatlasError, ReportError
    from lossatlas.progress import progress_bar

    out = []
    for spec in progress_bar(list(SECTIONS.values()), desc="report", unit="section",
                             progress=progress):
        try:
            out.append((spec, spec.build(view)))
        except (LossatlasError, ValueError, OSError) as err:
            raise ReportError(
                f"report: section {spec.title!r} failed on run {view.path}: "
                f"{type(err).__name__}: {err}"
            ) from err
        except Exception as err:
            err.add_note(f"report: while building section {spec.title!r} on run {view.path}")
            raise
    return out
