"""surfaces/runner.py: a slice's cost estimate and refusal, its summary, and run_slice
(the field equal to compute_field's, the summary's numbers equal numpy's on it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from lossatlas.evaluate import Evaluator
from lossatlas.models import create
from lossatlas.surfaces import random_slice
from lossatlas.surfaces import runner as runner_mod
from lossatlas.surfaces.runner import (
    GridCost,
    GridTooLargeError,
    grid_cost,
    run_slice,
    slice_summary,
)


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = create("mlp", in_features=5, hidden=(6,), num_classes=3)
    x, y = torch.randn(30, 5), torch.randint(0, 3, (30,))
    ev = Evaluator(model, (x, y), device="cpu")
    return model, ev, random_slice(model, dim=2, resolution=4, span=0.5, space=ev.space)


def test_slice_summary_is_numpy_on_the_finite_losses(tmp_path):
    loss = np.array([[1.0, np.nan], [0.25, np.inf]])
    ds = xr.Dataset({"loss": (("a", "b"), loss)}, attrs={"nonfinite": 2})
    s = slice_summary(ds, "plane", "p", tmp_path / "p.zarr", [tmp_path / "p.png"], 2.0)
    assert (s["min_loss"], s["max_loss"], s["nonfinite"]) == (0.25, 1.0, 2)
    assert s["shape"] == "2x2" and s["points"] == 4 and s["points_per_second"] == 2.0
    assert s["figures"] == [str(tmp_path / "p.png")]
    none = slice_summary(xr.Dataset({"loss": (("a",), [np.nan])}), "interp", "i",
                         tmp_path, [], 1.0)
    assert none["min_loss"] is None and none["max_loss"] is None


def test_grid_cost_below_and_above_the_warning_size(setup, monkeypatch):
    _, ev, sl = setup
    assert grid_cost(sl, ev) is None  # 16 points
    monkeypatch.setattr(runner_mod, "WARN_GRID_POINTS", 10)
    cost = grid_cost(sl, ev)
    assert cost.shape == (4, 4) and cost.points == 16
    assert cost.memory == 16 * runner_mod.BYTES_PER_POINT[2] and cost.seconds > 0
    assert cost.describe().startswith("a grid of 4 x 4 = 16 points: about 6.72 kB")


def test_grid_cost_refuses_what_does_not_fit_or_finish():
    fits = GridCost((10, 10), 100, 1e3, 10.0, "cpu", available=10**6)
    fits.check()
    with pytest.raises(GridTooLargeError, match="over the 1 MB of free memory"):
        GridCost((10, 10), 100, 2e6, 10.0, "cpu", available=10**6).check()
    with pytest.raises(GridTooLargeError, match="8.0 days"):
        GridCost((10, 10), 100, 1e3, 8 * 86400, "cpu", available=None).check()


def test_run_slice_field_and_summary(setup, tmp_path):
    from lossatlas.fields import compute_field

    _, ev, sl = setup
    ds, summary = run_slice("random", sl, ev, tmp_path, "r", progress=False)
    ref = compute_field(ev, sl.source, progress=False)
    np.testing.assert_allclose(ds["loss"].values, ref["loss"].values, rtol=1e-6)
    assert summary["min_loss"] == pytest.approx(float(np.nanmin(ref["loss"].values)))
    assert summary["points"] == 16 and (tmp_path / "r.png").exists()
    assert summary["store"] == str(tmp_path / "fields" / "r.zarr")
