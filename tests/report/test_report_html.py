"""The report without a browser: files written, escaping, absent sections, registry."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import plotly.offline
import pytest
from report_runs import EVIL, copy_run, with_all_results, with_evil_labels

from lossatlas.report import SECTIONS, build_summary, section, write_report
from lossatlas.report.html import esc, fmt, script_json


@pytest.fixture(scope="module")
def report(small_run):
    return write_report(small_run)


def _outside_plotly(page: str) -> str:
    return page.replace(plotly.offline.get_plotlyjs(), "")


def test_report_files_and_offline(report, small_run):
    assert report == small_run / "report.html"
    page = report.read_text()
    assert page.count(plotly.offline.get_plotlyjs()) == 1  # inlined once
    rest = _outside_plotly(page)
    # no external resource of any kind: every src/href is a data: URI or an anchor
    for attr in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', rest):
        assert attr.startswith(("data:", "#")), attr
    assert "@import" not in rest and "url(" not in rest
    assert rest.count("<script") == 3
    summary = json.loads((small_run / "summary.json").read_text())
    assert summary == {**summary, "sections": ["overview", "basins", "phase-transitions",
                                               "faithfulness", "slices"]}
    assert summary["basins"]["num_basins"] >= 1
    assert summary["overview"]["models"] == 9
    assert "figures/training.png" in summary["figures"]
    assert (small_run / "figures" / "training.png").stat().st_size > 5000
    for key in summary["sections"]:
        assert f'<section id="{key}">' in page
    run, train = shlex.quote(str(small_run)), shlex.quote(str(small_run / "train"))
    connect = f"lossatlas connect --population {train} --data mnist1d --align --out {run}"
    assert {a["section"]: a["command"] for a in summary["absent"]}["connectivity"] == connect
    assert '<section id="absent" class="absent">' in page and '<a href="#absent">' in page
    assert f"<code>{esc(connect)}</code>" in page


def test_build_summary_matches_written(report, small_run):
    written = json.loads((small_run / "summary.json").read_text())
    again = build_summary(small_run)
    assert again["sections"] == written["sections"]
    assert again["basins"] == written["basins"]


def test_escaped_labels_string_level(small_run, tmp_path):
    run = with_evil_labels(small_run, tmp_path / "evil")
    page = write_report(run).read_text()
    rest = _outside_plotly(page)
    assert EVIL not in rest  # nowhere verbatim: not in HTML, not in the embedded JSON
    assert "</script><script>" not in rest
    assert esc(EVIL) in rest  # as text: &lt;script&gt;alert(1)&lt;/script&gt;
    assert "\\u0026lt;script\\u0026gt;alert(1)" in rest  # escaped text inside the JSON
    assert rest.count("<script") == 3
    figs = json.loads(re.search(r'<script type="application/json" id="report-figures">(.*?)'
                                r"</script>", page, re.S).group(1))
    names = [tr.get("name") for tr in figs["fig-landscape"]["data"]]
    assert f"variant {esc(EVIL)}" in names


def test_script_json_and_fmt():
    text = script_json({"a": EVIL, "b": float("nan"), "c": "x & y"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": EVIL, "b": None, "c": "x & y"}
    assert fmt(0.000123456, "nats") == "0.0001235 nats"
    assert fmt(None) == "n/a" and fmt(float("inf")) == "∞"
    assert fmt("<b>", "") == "&lt;b&gt;"


def test_only_slices(small_run, tmp_path):
    run = copy_run(small_run / "slices", tmp_path / "slices_only")
    page = write_report(run).read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["sections"] == ["overview", "slices"]
    assert {a["section"] for a in summary["absent"]} >= {"basins", "faithfulness",
                                                         "phase-transitions"}
    assert '<tr data-section="basins"><td>Basins</td><td><code>lossatlas atlas' in page
    assert 'id="fig-slice-0"' in page and 'id="fig-slice-1"' in page


def test_only_atlas(small_run, tmp_path):
    run = copy_run(small_run, tmp_path / "atlas_only",
                   keep=("run.json", "fields", "topology.json", "faithfulness.json",
                         "embedding"))
    page = write_report(run).read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["sections"] == ["overview", "basins", "faithfulness"]
    assert '<tr data-section="slices"><td>Slices</td><td><code>lossatlas surface' in page
    assert "model 0" in page  # no labels stored: generic names


def test_all_sections_from_stored_results(small_run, tmp_path):
    run = with_all_results(small_run, tmp_path / "all")
    write_report(run)
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["sections"]) == set(SECTIONS)
    assert summary["absent"] == []
    # the report states the stored (measured) barrier matrices: max and median off the
    # diagonal, recomputed from the fixture's arrays
    real = np.load(small_run / "barriers.npz")
    for name, key in (("barriers", "before"), ("barriers_aligned", "after")):
        got = summary["connectivity"]["barrier_matrices"][name]
        off = real[key][~np.eye(len(real["names"]), dtype=bool)]
        assert got["shape"] == [3, 3]
        assert got["max"] == pytest.approx(float(off.max()), abs=1e-12)
        assert got["median"] == pytest.approx(float(np.median(off)), abs=1e-12)


def test_adding_a_section_is_one_function(small_run, tmp_path):
    run = copy_run(small_run, tmp_path / "extra", keep=("run.json", "train"))

    @section("notes", "Notes", hint="write notes.txt")
    def notes(view):
        p = view.path / "notes.txt"
        return None if not p.exists() else __import__(
            "lossatlas.report", fromlist=["Section"]).Section(esc(p.read_text()))

    try:
        page = write_report(run).read_text()
        assert '<tr data-section="notes"><td>Notes</td><td><code>write notes.txt' in page
        (run / "notes.txt").write_text("hello <world>")
        page = write_report(run).read_text()
        assert '<section id="notes">' in page and "hello &lt;world&gt;" in page
    finally:
        del SECTIONS["notes"]


def test_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        write_report(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="lossatlas run directory"):
        write_report(tmp_path)
