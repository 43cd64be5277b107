"""A report that explains itself: absent-sections panel with exact commands, data named in
the Overview, the straight line beside the curves, labels without overlap, change points
as marks with a hover. Fast: hand-written run directories, no training."""

from __future__ import annotations

import json
import shlex
from itertools import combinations

import numpy as np
import xarray as xr
from report_runs import _save

from lossatlas.report import SECTIONS, RunView, build_sections, render_report
from lossatlas.report import figures as F
from lossatlas.report.commands import absent_panel, fill_hint, run_context
from lossatlas.report.html import esc
from lossatlas.report.labels import boxes_overlap, place_labels


def _run(tmp_path, *, data="mnist1d", atlas_data=True):
    """A run directory with run.json, a train manifest, population.json with checkpoint
    paths of 2 variants x 2 epochs, and (optionally) the atlas summary's data."""
    run = tmp_path / "my run"
    (run / "train" / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "train" / "train.json").write_text(json.dumps({
        "model": "mlp", "model_kwargs": {"hidden": [16, 16]}, "data": data,
        "data_kwargs": {"num_samples": 750} if data else {},
        "data_source": {"training data": "mnist1d (train split, 600 samples)"}}))
    ck = run / "train" / "checkpoints"
    labels = [{"variant": v, "seed": 0, "epoch": e} for v in "AB" for e in (0, 2)]
    paths = [str(ck / f"{lab['variant']}_e{lab['epoch']}.safetensors") for lab in labels]
    (run / "population.json").write_text(json.dumps({"labels": labels, "paths": paths}))
    if atlas_data:
        (run / "atlas_summary.json").write_text(json.dumps({"data": {
            "training data": "mnist1d (train split, 600 samples)",
            "loss measured on": "the first 500 samples of the training data"}}))
    return run, paths


def test_absent_panel_names_every_missing_section_and_its_command(tmp_path):
    run, paths = _run(tmp_path)
    view = RunView(run)
    built = build_sections(view)
    absent = [spec for spec, sec in built if sec is None]
    assert {s.key for s in absent} == set(SECTIONS) - {"overview"}
    q = shlex.quote
    out, train = q(str(run)), q(str(run / "train"))
    data = "--data mnist1d --data-arg num_samples=750 --samples 500"
    ctx = run_context(view)
    assert ctx["run"] == out and "'" in out  # the space in the path is quoted
    assert fill_hint(SECTIONS["terrain"].hint, ctx) == (
        f"lossatlas hessian --population {train} {data} --out {out}")
    assert fill_hint(SECTIONS["symmetry"].hint, ctx) == (
        f"lossatlas align {q(paths[1])} {q(paths[3])} --model mlp --model-arg "
        f"'hidden=[16,16]' {data} --out {out}")  # the final checkpoints of A and B
    assert fill_hint("echo {unknown} {run}", ctx) == f"echo {{unknown}} {out}"
    html = absent_panel(absent, view)
    for spec in absent:
        row = f'<tr data-section="{spec.key}"><td>{esc(spec.title)}</td><td><code>'
        assert row + esc(fill_hint(spec.hint, ctx)) + "</code>" in html
        if "{run}" in spec.hint:
            assert esc(f"--out {out}") in html
    assert "write into the atlas's run directory" in html
    assert f"<code>--out {esc(out)}</code>" in html
    assert absent_panel([], view) == ""
    page = render_report(view, built)  # right after the Overview, and in the navigation
    assert page.index('<section id="overview">') < page.index('<section id="absent"')
    assert '<a href="#overview">Overview</a><a href="#absent">Absent sections</a>' in page


def test_unknown_data_stays_a_placeholder(tmp_path):
    run, _ = _run(tmp_path, data=None, atlas_data=False)
    ctx = run_context(RunView(run))
    assert ctx["data"] == "--data mnist1d"  # from the manifest's data_source
    (run / "train" / "train.json").write_text(json.dumps({"model": "mlp", "data": None}))
    ctx = run_context(RunView(run))
    assert ctx["data"] == "--data <DATA>"


def test_overview_names_data_given_as_an_object(tmp_path):
    run, _ = _run(tmp_path, data=None, atlas_data=False)
    sec = SECTIONS["overview"].build(RunView(run))
    assert "<dt>training data</dt><dd>mnist1d (train split, 600 samples)</dd>" in sec.html
    assert "given in Python" not in sec.html


def test_straight_line_beside_the_curve(tmp_path):
    run, _ = _run(tmp_path)
    t = np.linspace(0, 1, 7)
    line = (1 + 2 * np.sin(np.pi * t)).tolist()
    (run / "curves.json").write_text(json.dumps({
        "pair": ["A", "B"], "kind": "bezier", "t": t.tolist(),
        "loss": (1 + 0.1 * np.sin(np.pi * t)).tolist(), "line_loss": line}))
    _save(xr.Dataset({"loss": ("t", 1.5 + np.sin(np.pi * t))}, coords={"t": t}),
          run / "fields" / "line.zarr")  # what `lossatlas connect A B --out RUN` stores
    sec = SECTIONS["connectivity"].build(RunView(run))
    traces = {tr["name"]: tr for tr in sec.figures["fig-conn-curves"]["data"]}
    assert traces["straight line A–B"]["y"] == line
    assert traces["straight line A–B"]["line"]["dash"] == "dash"
    assert traces["bezier curve A–B"]["line"]["dash"] == "solid"
    assert np.allclose(traces["straight line (line)"]["y"], 1.5 + np.sin(np.pi * t))
    assert sec.summary["curves"]["straight line A–B"]["max_loss"] == max(line)


def _crowded():
    rng = np.random.default_rng(0)
    minima = [{"x": float(x), "y": float(y), "label": f"basin {b}", "text": f"basin {b}"}
              for b, (x, y) in enumerate(rng.uniform(0.4, 0.6, (14, 2)))]
    markers = rng.uniform(0.3, 0.7, (40, 2))
    return minima, markers


def test_labels_do_not_overlap_and_spare_the_markers():
    minima, markers = _crowded()
    area = F.MAP_AREA
    traces = F.minima_traces(minima, markers, (0.0, 1.0), (0.0, 1.0), area)
    labelled = next(tr for tr in traces if tr["meta"]["role"] == "basin-labels")
    boxes = labelled["meta"]["boxes"]
    assert len(boxes) == len(labelled["text"]) >= 2
    for a, b in combinations(boxes, 2):
        assert not boxes_overlap(a, b)
    px = np.column_stack([markers[:, 0] * area[0], markers[:, 1] * area[1]])
    mins = np.array([[m["x"] * area[0], m["y"] * area[1]] for m in minima])
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 and x1 <= area[0] and 0 <= y0 and y1 <= area[1]
        for p in np.concatenate([px, mins]):  # no marker under a label (radius 6 px)
            dx, dy = max(x0 - p[0], 0, p[0] - x1), max(y0 - p[1], 0, p[1] - y1)
            assert dx * dx + dy * dy >= 36 - 1e-9
    legend = [tr for tr in traces if tr["meta"]["role"] == "basin-legend"]
    assert legend, "a crowded map sends some labels to the legend"
    named = set(labelled["text"]) | {tr["name"].removesuffix(" (minimum)") for tr in legend}
    assert named == {m["label"] for m in minima}
    assert all(tr.get("showlegend", True) and tr["mode"] == "markers" for tr in legend)


def test_free_labels_all_placed_and_minima_under_the_models():
    pts = np.array([[100.0, 100.0], [300.0, 100.0]])
    placed = place_labels(pts, [(40, 15)] * 2, np.zeros((0, 2)), (400.0, 300.0))
    assert [p.position for p in placed] == ["top center", "top center"]
    grid = (np.linspace(0, 1, 5), np.linspace(0, 1, 5), np.zeros((5, 5)))
    models = [{"name": "variant A", "x": np.array([0.5]), "y": np.array([0.5]), "text": ["a"],
               "index": [0], "basin": [0]}]
    fig = F.landscape_figure(grid, np.zeros((1, 2)), np.zeros(1), models,
                             minima=[{"x": 0.5, "y": 0.5, "label": "basin 0", "text": "m"}])
    roles = [(tr.get("meta") or {}).get("role") for tr in fig["data"]]
    assert roles.index("basin-labels") < roles.index("models")  # drawn below the markers


def test_change_points_are_marks_with_a_hover():
    runs = [{"name": f"run{g}", "group": g, "x": [0, 1, 2, 3],
             "series": {"train_loss": [1.0, 0.5, 0.2, 0.1]}} for g in range(2)]
    marks = [{"x": 2, "text": "run0: train_loss", "group": 0},
             {"x": 2, "text": "run0: test_accuracy", "group": 0},
             {"x": 2, "text": "run1: train_loss", "group": 1}]
    fig = F.training_figure(runs, marks)
    assert not fig["layout"].get("annotations")  # no text printed on the plot
    cps = [tr for tr in fig["data"] if (tr.get("meta") or {}).get("role") == "change-points"]
    assert [tr["y"] for tr in cps] == [[0], [1]]  # one row per run group: never stacked
    assert cps[0]["hovertext"] == ["run0: train_loss<br>run0: test_accuracy<br>epoch 2"]
    assert len(fig["layout"]["shapes"]) == 3


def test_numbers_on_screen_terrain_and_barriers(tmp_path):
    run, _ = _run(tmp_path)
    names = ["A", "B", "C"]
    _save(xr.Dataset({"trace": ("model", [12.5, 3.0, 7.25]),
                      "trace_std": ("model", [0.25, 0.5, 0.125]),
                      "llc_mean": ("model", [4.0, 5.0, 6.0]),
                      "llc_std": ("model", [0.5, 0.75, 1.0])}, coords={"model": names}),
          run / "fields" / "terrain.zarr")
    sec = SECTIONS["terrain"].build(RunView(run))
    assert "<th>trace (loss / param²)</th><th>llc_mean</th>" in sec.html
    assert "<tr><td>A</td><td>12.5 ± 0.25</td><td>4 ± 0.5</td></tr>" in sec.html
    before = np.array([[0, 1.5, 2.0], [1.5, 0, 0.75], [2.0, 0.75, 0]])
    for name, mat in (("barriers", before), ("barriers_aligned", before / 4)):
        da = xr.DataArray(mat, dims=("model_i", "model_j"),
                          coords={"model_i": names, "model_j": names}, name="loss_barrier",
                          attrs={"units": "nats"})
        _save(da.to_dataset(), run / "fields" / f"{name}.zarr")
    sec = SECTIONS["connectivity"].build(RunView(run))
    assert "<th>pair</th><th>barriers (nats)</th><th>barriers aligned (nats)</th>" in sec.html
    assert "<tr><td>A – C</td><td>2</td><td>0.5</td></tr>" in sec.html
    assert "Barrier per pair (3 pairs)" in sec.html
