"""Rendering of the report's Jinja2 templates (``report/templates/``), autoescape on.

Sections hand their values to a template (:class:`~lossatlas.report.sections.Section`
with ``template=`` and ``data=``); every string from the run (labels, names, paths,
commands, configs) is escaped by the template, so no builder writes HTML by hand.
``_macros.html.j2`` holds the shared pieces (tables, definition lists, plot
placeholders, inlined PNGs). jinja2 is imported on first use only, so ``import
lossatlas`` and ``lossatlas --help`` stay light.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .html import Code, number, script_json

if TYPE_CHECKING:
    import jinja2

__all__ = ["TEMPLATES", "environment", "markup", "render"]

#: The folder of the report's templates (package data of ``lossatlas.report``).
TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def environment() -> jinja2.Environment:
    """The report's Jinja2 environment: templates from :data:`TEMPLATES`, autoescape on
    for every template, undefined names an error; filters ``num`` (a number with its
    unit as text, see :func:`lossatlas.report.html.number`) and ``script_json`` (JSON
    safe inside ``<script>``); test ``code`` (a :class:`~lossatlas.report.html.Code`)."""
    import jinja2
    import markupsafe

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["num"] = number
    env.filters["script_json"] = lambda obj: markupsafe.Markup(script_json(obj))
    env.tests["code"] = lambda v: isinstance(v, Code)
    return env


def render(template: str, /, **data: Any) -> str:
    """The template ``template`` (a path under :data:`TEMPLATES`) rendered with ``data``:
    HTML, with every string of ``data`` escaped unless it is ``markupsafe.Markup``."""
    return environment().get_template(template).render(**data)


def markup(html: str) -> Any:
    """``html`` marked safe (``markupsafe.Markup``): for HTML a template rendered, passed
    into another template."""
    import markupsafe

    return markupsafe.Markup(html)
