"""Deprecated argument names keep working for one release, with a warning."""

import pytest
import torch
from torch import nn

from lossatlas._compat import renamed_argument
from lossatlas.connectivity import barrier, barrier_curve
from lossatlas.surfaces import interpolation, random_slice


def test_renamed_argument_maps_the_old_name_and_refuses_both():
    @renamed_argument("steps", "points")
    def f(a, points=3):
        return a * points

    assert f(2, points=5) == 10 and f(2, 5) == 10
    with pytest.warns(DeprecationWarning, match="steps= is deprecated; use points="):
        assert f(2, steps=5) == 10
    with pytest.raises(TypeError, match="give points= only"):
        f(2, steps=5, points=5)


def test_old_names_of_path_points_and_slice_dims_give_the_same_results():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    data = (torch.randn(32, 4), torch.randint(0, 3, (32,)))
    new = barrier_curve(a, b, data, points=5, device="cpu")
    with pytest.warns(DeprecationWarning):
        old = barrier_curve(a, b, data, steps=5, device="cpu")
    assert new.sizes["t"] == 5 and old.attrs["barrier"] == new.attrs["barrier"]
    with pytest.warns(DeprecationWarning):
        assert barrier(a, b, data, steps=5, device="cpu") == new.attrs["barrier"]
    with pytest.warns(DeprecationWarning):
        assert interpolation(a, b, steps=6).source.shape == (6,)
    assert interpolation(a, b, points=6).source.shape == (6,)
    with pytest.warns(DeprecationWarning):
        old_s = random_slice(a, ndim=2, resolution=3, seed=1)
    new_s = random_slice(a, dim=2, resolution=3, seed=1)
    assert torch.equal(old_s.directions, new_s.directions)
