"""HTML of the report: escaping, inlined images, tables and the one-page template.

The page is self-contained: plotly.js is inlined once, images are ``data:`` URIs,
no fonts or scripts are fetched. Text from the run (labels, names, configs) goes
through :func:`esc`; JSON placed inside ``<script>`` goes through
:func:`script_json`, which writes ``<``, ``>`` and ``&`` as ``\\u003c`` etc., so no
stored string can close the script element.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lossatlas.store import jsonable

__all__ = [
    "esc",
    "fmt",
    "script_json",
    "data_uri",
    "img",
    "table",
    "render_page",
]


def esc(text: Any) -> str:
    """``html.escape(str(text))`` (quotes too): safe in element text and attributes."""
    return html.escape(str(text), quote=True)


def fmt(value: Any, unit: str = "", digits: int = 4) -> str:
    """A number with ``digits`` significant digits and its unit; ``n/a`` for None/NaN.

    Text is escaped, so the result can go straight into HTML.
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "∞" if value > 0 else ("−∞" if value < 0 else "n/a")
        text = f"{value:,}" if isinstance(value, int) else f"{value:.{digits}g}"
        return esc(f"{text} {unit}".strip())
    return esc(f"{value} {unit}".strip())


def script_json(obj: Any) -> str:
    """JSON for inside ``<script>``: NaN/inf as null; ``< > &`` and U+2028/9 as escapes."""
    text = json.dumps(jsonable(obj), allow_nan=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def data_uri(path: str | Path, mime: str = "image/png") -> str:
    """The file as a ``data:`` URI (base64)."""
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def img(path: str | Path, alt: str) -> str:
    """An ``<img>`` with the PNG inlined and ``alt`` text escaped."""
    return (f'<figure class="png"><img src="{data_uri(path)}" alt="{esc(alt)}">'
            f"<figcaption>{esc(alt)}</figcaption></figure>")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], raw: bool = False,
          caption: str | None = None) -> str:
    """An HTML table. Cells are escaped unless ``raw`` (then they must be HTML already,
    e.g. from :func:`fmt`)."""
    cell = (lambda c: str(c)) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f'<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f6f4; color: #1d1d1d;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
header, main, footer { max-width: 1200px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; }
h1 { font-size: 1.6em; margin: 0.2em 0; }
h2 { font-size: 1.3em; margin: 0 0 0.4em; border-bottom: 2px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 1.1em 0 0.3em; }
nav { position: sticky; top: 0; z-index: 10; background: #f6f6f4; padding: 6px 0;
  border-bottom: 1px solid #ddd; }
nav a { margin-right: 14px; color: #1f4e79; text-decoration: none; font-weight: 600; }
nav a:hover { text-decoration: underline; }
section { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; margin: 16px 0;
  padding: 14px 18px; }
.intro { color: #444; margin-top: 0; }
.absent { background: #fff8e6; border: 1px solid #e8d9a8; border-radius: 6px;
  padding: 8px 14px; margin: 12px 0; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr));
  gap: 10px; }
.plot { width: 100%; min-height: 380px; }
.plot.tall { min-height: 540px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 0.92em; }
caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0ee; }
td { font-variant-numeric: tabular-nums; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0; }
dl.kv dt { font-weight: 600; } dl.kv dd { margin: 0; }
figure.png { display: inline-block; margin: 6px 10px 6px 0; max-width: 100%; }
figure.png img { max-width: 100%; max-height: 420px; border: 1px solid #ddd; }
figure.png figcaption { font-size: 0.85em; color: #555; }
details { margin: 8px 0; } summary { cursor: pointer; color: #1f4e79; }
.note { font-size: 0.9em; color: #555; }
#basin-selection { font-weight: 600; min-height: 1.5em; }
footer { color: #666; font-size: 0.85em; padding-bottom: 30px; }
@media print { nav { display: none; } section { break-inside: avoid; border: none; } }
"""

_BOOT = """
(function () {
  var figs = JSON.parse(document.getElementById("report-figures").textContent);
  var cfg = {responsive: true, displaylogo: false};
  Object.keys(figs).forEach(function (id) {
    var el = document.getElementById(id);
    if (el) { Plotly.newPlot(el, figs[id].data, figs[id].layout, cfg); }
  });
  var tree = document.getElementById("fig-merge-tree");
  var map = document.getElementById("fig-landscape");
  var note = document.getElementById("basin-selection");
  var chosen = null;
  function highlight(basin) {
    if (!map || !map.data) { return; }
    var idx = [], sel = [];
    map.data.forEach(function (tr, k) {
      if (!tr.meta || tr.meta.role !== "models") { return; }
      idx.push(k);
      if (basin === null) { sel.push(null); return; }
      var pts = [];
      (tr.customdata || []).forEach(function (c, i) { if (c[1] === basin) { pts.push(i); } });
      sel.push(pts);
    });
    if (idx.length) { Plotly.restyle(map, {selectedpoints: sel}, idx); }
    if (note) {
      note.textContent = basin === null ? "" :
        "Highlighted: the models of basin " + basin + " (click the leaf again to clear).";
    }
  }
  if (tree && map) {
    tree.on("plotly_click", function (ev) {
      var p = ev.points && ev.points[0];
      if (!p || p.customdata === undefined || p.customdata === null) { return; }
      var b = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
      chosen = (chosen === b) ? null : b;
      highlight(chosen);
    });
  }
  window.lossatlasHighlightBasin = highlight;
})();
"""


def render_page(title: str, nav: Sequence[tuple[str, str]], body: str, figures: dict,
                footer: str, plotly_js: str) -> str:
    """The whole page.

    Parameters
    ----------
    title : page title (raw text; escaped here)
    nav : (anchor id, section title) per section, raw text
    body : HTML of the sections (already escaped where needed)
    figures : {div id: {"data": [...], "layout": {...}}} rendered by plotly.js
    footer : HTML of the footer
    plotly_js : the plotly.js bundle (``plotly.offline.get_plotlyjs()``)
    """
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n"
        f'<script type="text/javascript">{plotly_js}</script>\n'
        "</head>\n<body>\n"
        f"<header><h1>{esc(title)}</h1></header>\n"
        f'<header><nav id="nav">{links}</nav></header>\n'
        f"<main>\n{body}\n</main>\n<footer>{footer}</footer>\n"
        f'<script type="application/json" id="report-figures">{script_json(figures)}</script>\n'
        f"<script>{_BOOT}</script>\n</body>\n</html>\n"
    )
