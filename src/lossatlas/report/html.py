"""Text helpers of the report: escaping, number formatting, JSON for ``<script>``, images.

The page itself is written by Jinja2 templates with autoescaping
(:mod:`lossatlas.report.render`, ``report/templates/``): text from the run (labels,
names, configs, commands) is escaped there. :func:`esc` (the same rule,
:func:`markupsafe.escape`) remains for the HTML that plotly draws inside figures
(hover text, trace names). JSON placed inside ``<script>`` goes through
:func:`script_json`, which writes ``<``, ``>`` and ``&`` as ``\\u003c`` etc., so no
stored string can close the script element.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import markupsafe

from lossatlas.store import jsonable

__all__ = [
    "Code",
    "Png",
    "Table",
    "esc",
    "fmt",
    "number",
    "script_json",
    "data_uri",
]


def esc(text: Any) -> str:
    """``text`` as HTML text (``& < > " '`` escaped): safe in element text and attributes.

    The templates escape with the same rule; this is for HTML built outside them (the
    hover text and trace names plotly draws)."""
    return str(markupsafe.escape(str(text)))


def number(value: Any, unit: str = "", digits: int = 4) -> str:
    """A number with ``digits`` significant digits and its unit, as plain text (not
    escaped); ``n/a`` for None/NaN, ``∞`` / ``−∞`` for infinities, ints with thousands
    separators. The templates' ``num`` filter."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "∞" if value > 0 else ("−∞" if value < 0 else "n/a")
        text = f"{value:,}" if isinstance(value, int) else f"{value:.{digits}g}"
        return f"{text} {unit}".strip()
    return f"{value} {unit}".strip()


def fmt(value: Any, unit: str = "", digits: int = 4) -> str:
    """:func:`number`, escaped: for HTML built outside the templates (plotly hover text)."""
    return esc(number(value, unit, digits))


def script_json(obj: Any) -> str:
    """JSON for inside ``<script>``: NaN/inf as null; ``< > &`` and U+2028/9 as escapes."""
    text = json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


@dataclass(frozen=True)
class Code:
    """Text the templates show as ``<code>`` (escaped); e.g. a command or a path."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table as data: ``header`` texts, ``rows`` of cell texts (plain text, escaped by
    the template; :class:`Code` for a ``<code>`` cell) and an optional ``caption``.
    Rendered by the ``table`` macro of ``templates/_macros.html.j2``."""

    header: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str | None = None


@dataclass(frozen=True)
class Png:
    """A PNG inlined as a ``data:`` URI with its ``alt`` text (also the caption)."""

    uri: str
    alt: str

    @classmethod
    def of(cls, path: str | Path, alt: str) -> Png:
        """The PNG at ``path`` (read now)."""
        return cls(data_uri(path), alt)


def data_uri(path: str | Path, mime: str = "image/png") -> str:
    """The file as a ``data:`` URI (base64)."""
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
