"""Table 2 (curves projected onto maps): the reported errors against a direct
computation, included vs projected, and a bad map against a good one."""

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas import Evaluator, Population
from lossatlas.connectivity import curve_points
from lossatlas.connectivity.curve_table import curve_table, final_models, write_curve_table


@pytest.fixture(scope="module")
def small(digits_xy):
    """Three variants x two checkpoints of a 64-12-10 MLP on 300 digits."""
    x, y = digits_xy
    models, labels = [], []
    for v, (seed, lr) in enumerate(((0, 0.3), (1, 0.5), (2, 0.2))):
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10))
        opt = torch.optim.SGD(m.parameters(), lr=lr)
        for step in range(1, 121):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
            if step in (60, 120):
                models.append(copy.deepcopy(m))
                labels.append({"variant": "ABC"[v], "seed": 0, "epoch": step})
    return Population.from_models(models, labels)


@pytest.fixture(scope="module")
def digits_xy():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (torch.tensor(d.data[:300], dtype=torch.float32) / 16.0,
            torch.tensor(d.target[:300]))


@pytest.fixture(scope="module")
def table(small, digits_xy, tmp_path_factory):
    out = tmp_path_factory.mktemp("table2")
    return curve_table(small, digits_xy, out, methods=("ae", "pca"), points=5,
                       curve_steps=40, resolution=6, progress=False,
                       embed_kwargs={"ae": {"epochs": 250, "widths": (32, 16)}})


def test_reported_errors_equal_a_direct_computation(table, small, digits_xy):
    ds = table.table
    assert ds.attrs["reference"] == "C"  # the last variant by default
    assert ds["pair"].values.tolist() == ["C-A", "C-B"]
    idx, names = final_models(small)
    X = small.as_points()
    ev = Evaluator(small.model(0), digits_xy)
    for j, p in enumerate(ds["pair"].values.tolist()):
        pts = table.points[p]
        # the curve's points lie between the two final models (t strictly inside)
        assert pts.shape == (5, small.dim)
        true = ev.evaluate(pts)["loss"].double().numpy()
        np.testing.assert_allclose(ds["true_loss"].sel(pair=p), true, rtol=1e-5)
        np.testing.assert_allclose(ds["true_range"].sel(pair=p), [true.min(), true.max()],
                                   rtol=1e-5)
        # the floor of maps fitted on the models: the curve projected onto their span
        red = table.atlases["pca"].reduction_
        on_span = ev.evaluate(red.decode(red.encode(pts)))["loss"].double().numpy()
        assert float(ds["span_mae"].sel(pair=p)) == pytest.approx(
            float(np.median(np.abs(on_span - true))), rel=1e-4, abs=1e-7)
        for m in ("ae", "pca"):
            atlas = table.atlases[m]
            dec = ev.evaluate(atlas.decode(atlas.encode(pts)))["loss"].double().numpy()
            np.testing.assert_allclose(ds["projected_loss"].sel(embedding=m, pair=p), dec,
                                       rtol=1e-4)
            assert float(ds["projected_mae"].sel(embedding=m, pair=p)) == pytest.approx(
                float(np.median(np.abs(dec - true))), rel=1e-4, abs=1e-7)
            inc_atlas = table.included_atlases[m]
            # every pair's curve is fitted in under one name, pair by pair
            z = inc_atlas.include_codes_["curves"][5 * j:5 * (j + 1)]
            inc = ev.evaluate(inc_atlas.decode(z))["loss"]
            inc = inc.double().numpy()
            assert float(ds["included_mae"].sel(embedding=m, pair=p)) == pytest.approx(
                float(np.median(np.abs(inc - true))), rel=1e-4, abs=1e-7)
            raw = ev.evaluate(inc_atlas.decode(z, corrected=False))
            raw = raw["loss"].double().numpy()
            assert float(ds["included_raw_mae"].sel(embedding=m, pair=p)) == pytest.approx(
                float(np.median(np.abs(raw - true))), rel=1e-4, abs=1e-7)
    # the points are the trained Bezier curve from the reference to the partner, inside
    # (0, 1), and the curve was trained: its bend left the straight line
    t = torch.tensor(ds["t"].values, dtype=torch.float32)
    assert 0 < t.min() and t.max() < 1
    ref, a = idx[names.index("C")], idx[names.index("A")]
    bend = table.bends["C-A"]
    np.testing.assert_allclose(table.points["C-A"], curve_points(bend, X[ref], X[a], t),
                               atol=1e-6)
    assert float((bend - (X[ref] + X[a]) / 2).norm()) > 1e-3


def test_included_error_is_at_most_the_projected_one(table):
    ds = table.table
    for m in ("ae", "pca"):
        proj = ds["projected_mae"].sel(embedding=m).values
        inc = ds["included_mae"].sel(embedding=m).values
        assert np.all(np.isfinite(proj)) and np.all(np.isfinite(inc))
        assert np.median(inc) <= np.median(proj) + 1e-9, (m, inc, proj)


def test_a_one_dimensional_map_is_worse_than_a_two_dimensional_one(table, small, digits_xy,
                                                                   tmp_path):
    """The curves fitted into a 1-D PCA map decode about twice as badly as into a 2-D one
    (the included error, measured 0.31 vs 0.15 nats; the projected one is dominated by
    the off-span part of the curves, which no map fitted on the models alone can
    reproduce)."""
    bad = curve_table(small, digits_xy, tmp_path, methods=("pca",), dim=1, points=5,
                      curve_steps=40, resolution=6, progress=False)
    good = float(np.median(table.table["included_mae"].sel(embedding="pca").values))
    worse = float(np.median(bad.table["included_mae"].sel(embedding="pca").values))
    assert worse > 1.5 * good, (worse, good)
    # the projected error of any map is at least about the span floor
    ds = table.table
    assert np.median(ds["projected_mae"].values) >= 0.5 * np.median(ds["span_mae"].values)


def test_written_file_summary_and_report_section(table):
    run = table.atlases["ae"].path.parent  # the maps' runs sit one level down
    path = write_curve_table(table, run)
    data = json.loads(path.read_text())
    assert path.name == "table2.json" and data["units"] == "nats"
    assert {(r["method"], r["pair"]) for r in data["rows"]} == {
        (m, p) for m in ("ae", "pca") for p in ("C-A", "C-B")}
    row = next(r for r in data["rows"] if (r["method"], r["pair"]) == ("ae", "C-A"))
    assert row["projected_mae"] == pytest.approx(
        float(table.table["projected_mae"].sel(embedding="ae", pair="C-A")))
    assert len(data["curves"]["ae"]["pairs"]["C-A"]["projected_codes"]) == 5
    assert len(data["curves"]["ae"]["map"]["models"]) == 6
    assert table.to_dict()["median_abs_error"]["ae"]["included"] == pytest.approx(
        float(np.median(table.table["included_mae"].sel(embedding="ae").values)))
    # the report section shows every row's numbers and draws each curve on its map
    from lossatlas.report import SECTIONS, RunView
    from lossatlas.report.html import fmt

    sec = SECTIONS["table2"].build(RunView(run))
    for r in data["rows"]:
        assert fmt(r["projected_mae"], "", 3) in sec.html
        assert fmt(r["included_mae"], "", 3) in sec.html
    assert sec.summary["median_abs_error"] == data["median_abs_error"]
    assert len(sec.figures) == 4  # projected and included, for the AE and PCA maps
    for fig, (m, key) in zip(sec.figures.values(), [("ae", "projected"), ("ae", "included"),
                                                   ("pca", "projected"), ("pca", "included")],
                             strict=True):
        drawn = {tr["name"]: tr for tr in fig["data"] if tr.get("name", "").startswith("curve")}
        assert set(drawn) == {"curve C-A", "curve C-B"}
        codes = table.table[f"{key}_codes"].sel(embedding=m, pair="C-B").values
        np.testing.assert_allclose(drawn["curve C-B"]["x"], codes[:, 0])
        np.testing.assert_allclose(drawn["curve C-B"]["y"], codes[:, 1])


def test_a_prebuilt_map_gives_the_same_errors(table, small, digits_xy, tmp_path):
    """A map passed in (as the run's own AE atlas would be) is used as it is: the same
    curves (same seed) projected onto the fixture's PCA map give the same errors, one
    overlay per curve stored in that map's run."""
    atlas = table.atlases["pca"]
    again = curve_table(small, digits_xy, tmp_path, methods=("pca",), atlases={"pca": atlas},
                        include=False, points=5, curve_steps=40, progress=False)
    np.testing.assert_allclose(again.table["projected_mae"].sel(embedding="pca"),
                               table.table["projected_mae"].sel(embedding="pca"), rtol=1e-5)
    assert (atlas.path / "overlays" / "curve-C-A.json").is_file()


def test_bad_inputs_are_named(small, digits_xy, tmp_path):
    with pytest.raises(ValueError, match="reference 'Z'"):
        curve_table(small, digits_xy, tmp_path, methods=("pca",), reference="Z")
    with pytest.raises(ValueError, match="no field"):
        curve_table(small, digits_xy, tmp_path, methods=("pca",), atlases={"pca": object()})
    with pytest.raises(ValueError, match="not in methods"):
        curve_table(small, digits_xy, tmp_path, methods=("pca",), atlases={"ae": object()})
