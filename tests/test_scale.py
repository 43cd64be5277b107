import math

import numpy as np
import torch
import xarray as xr

from lossatlas.scale import FLOOR, drawable, log10_loss


def test_one_rule_for_every_kind():
    raw = [10.0, 0.0, float("nan"), float("inf"), 1e-3]
    want = np.array([1.0, math.log10(FLOOR), np.inf, np.inf, -3.0])
    np.testing.assert_array_equal(log10_loss(np.array(raw)), want)
    np.testing.assert_array_equal(log10_loss(raw), want)
    np.testing.assert_array_equal(log10_loss(torch.tensor(raw, dtype=torch.float64)).numpy(), want)
    assert log10_loss(100.0) == 2.0 and log10_loss(float("nan")) == math.inf
    ds = xr.Dataset({"loss": (("a",), np.array(raw))}, coords={"a": np.arange(5)})
    da = log10_loss(ds)
    assert da.name == "log10_loss" and da.dims == ("a",)
    np.testing.assert_array_equal(da.values, want)
    np.testing.assert_array_equal(log10_loss(ds["loss"]).values, want)


def test_diverged_points_never_a_minimum_and_drawn_as_gaps():
    v = log10_loss(np.array([float("nan"), 0.5, float("inf")]))
    assert int(np.argmin(v)) == 1
    d = drawable(v)
    assert np.isnan(d[0]) and np.isnan(d[2]) and d[1] == v[1]
