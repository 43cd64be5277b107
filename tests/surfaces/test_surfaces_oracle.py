"""Cross-checks against the peer package loss-landscapes (3.0.x) on the same model and data.

What loss_landscapes evaluates (read from ``loss_landscapes/main.py``):

- ``linear_interpolation(start, end, metric, steps)`` adds ``(end - start) / steps`` to the
  start *before* each evaluation, so it returns the loss at ``t = 1/steps, ..., 1``
  (``t = 0`` is not evaluated).
- ``planar_interpolation(start, one, two, metric, steps)`` (this version has no
  ``distance`` / ``normalization`` arguments) walks a boustrophedon with
  ``dir_k = (model_k - start) / steps``: row ``i`` (coefficient ``i/steps`` on ``dir_one``)
  holds coefficients ``(j + 1)/steps`` on ``dir_two`` for even ``i`` and ``j/steps`` for
  odd ``i`` (the odd rows are walked back down to 0). We evaluate the regular grid
  ``alpha = i/steps`` (i < steps), ``beta = j/steps`` (j <= steps) and pick those entries.
"""

import copy

import numpy as np
import pytest
import torch
from surf_helpers import data, mlp
from torch import nn

loss_landscapes = pytest.importorskip("loss_landscapes")
metrics = pytest.importorskip("loss_landscapes.metrics")
model_parameters = pytest.importorskip("loss_landscapes.model_interface.model_parameters")

from lossatlas import Evaluator, ParamSpace  # noqa: E402
from lossatlas.surfaces import (  # noqa: E402
    direction_slice,
    interpolation,
    normalize_direction,
    slice_field,
)


def _setup():
    a, b, c = mlp(0), mlp(1), mlp(2)
    x, y = data(n=48)
    ev = Evaluator(a, (x, y), device="cpu", precision="fp32")
    metric = metrics.Loss(nn.CrossEntropyLoss(), x, y)
    return a, b, c, ev, metric


def test_linear_interpolation_matches_loss_landscapes():
    a, b, _, ev, metric = _setup()
    steps = 10
    theirs = loss_landscapes.linear_interpolation(
        copy.deepcopy(a), copy.deepcopy(b), metric, steps=steps, deepcopy_model=True
    )
    ds = slice_field(ev, interpolation(a, b, points=steps + 1))  # t = 0, 1/steps, ..., 1
    ours = ds["loss"].values[1:]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_planar_interpolation_matches_loss_landscapes():
    a, b, c, ev, metric = _setup()
    steps = 6
    theirs = loss_landscapes.planar_interpolation(
        copy.deepcopy(a), copy.deepcopy(b), copy.deepcopy(c), metric, steps=steps,
        deepcopy_model=True,
    )
    assert theirs.shape == (steps, steps)
    space = ParamSpace(a)
    fa, fb, fc = (space.flatten(m) for m in (a, b, c))
    s = direction_slice(
        a, torch.stack([fb - fa, fc - fa]), resolution=(steps, steps + 1),
        span=[(0.0, (steps - 1) / steps), (0.0, 1.0)],
    )
    ours = slice_field(ev, s)["loss"].values  # [steps, steps + 1]
    expected = np.stack([ours[i, 1:] if i % 2 == 0 else ours[i, :-1] for i in range(steps)])
    np.testing.assert_allclose(expected, theirs, rtol=1e-5)


@pytest.mark.parametrize("norm", ["filter", "layer"])
def test_direction_normalisation_matches_loss_landscapes(norm):
    """Same Gaussian draw, normalised by both; weights (>= 2-D) must agree.

    loss_landscapes rescales 1-D tensors instead of zeroing (biasbn) or copying them
    (Li et al.), so only tensors of >= 2 dimensions are compared. Not compared:
    its ``model_normalize_`` rescales tensor by tensor with a ratio recomputed after
    each in-place update (so only the first tensor gets the intended scale), and its
    ``filter_normalize_`` divides by zero on a zero 1-D tensor (a fresh BatchNorm bias),
    hence a conv net without BatchNorm here.
    """
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten(), nn.Linear(8, 3)
    )
    space = ParamSpace(model)
    d = space.random_like(torch.Generator().manual_seed(0))
    ref = model_parameters.ModelParameters([p.detach().clone() for p in model.parameters()])
    theirs = model_parameters.ModelParameters(
        [t.clone() for t in space.unflatten(d.clone()).values()]
    )
    getattr(theirs, f"{norm}_normalize_")(ref)
    ours = space.unflatten(normalize_direction(d, model, space, norm, ignore=None))
    for (name, p), t in zip(model.named_parameters(), theirs.parameters, strict=True):
        if p.ndim > 1:
            torch.testing.assert_close(ours[name], t, rtol=1e-5, atol=1e-7)
