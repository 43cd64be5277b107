import json

import numpy as np
import pytest
import torch
from surf_helpers import cnn, data, mlp, train_trajectory

from lossatlas import Evaluator, ParamSpace, Run
from lossatlas.surfaces import (
    Slice,
    direction_slice,
    interpolation,
    pca_plane,
    plane,
    random_slice,
    slice_field,
)


def _ev(model, x, y, **kw):
    return Evaluator(model, (x, y), device="cpu", precision="fp32", **kw)


def test_random_slice_origin_equals_model_loss():
    model = mlp()
    x, y = data()
    ev = _ev(model, x, y)
    own = ev.evaluate_models([model])["loss"][0]
    for ndim, res in [(1, 11), (2, 5), (3, 3)]:
        s = random_slice(model, dim=ndim, resolution=res, span=0.5)
        assert isinstance(s, Slice) and s.dims == ("alpha", "beta", "gamma")[:ndim]
        ds = slice_field(ev, s)
        centre = ds["loss"].sel({d: 0.0 for d in s.dims}, method="nearest")
        torch.testing.assert_close(float(centre), float(own), rtol=1e-5, atol=0)
        assert ds.sizes == dict.fromkeys(s.dims, res)
        assert json.loads(ds.attrs["slice"])["kind"] == "random"
        assert ds.attrs["units_alpha"].startswith("multiples")


def test_random_slice_spans_and_seed():
    model = mlp()
    s = random_slice(model, dim=2, resolution=(5, 3), span=[(-1, 2), 0.5], seed=3)
    np.testing.assert_allclose(s.source.coords["alpha"], np.linspace(-1, 2, 5))
    np.testing.assert_allclose(s.source.coords["beta"], np.linspace(-0.5, 0.5, 3))
    s2 = random_slice(model, dim=2, resolution=5, seed=3)
    torch.testing.assert_close(s.directions, s2.directions, rtol=0, atol=0)
    assert not torch.equal(random_slice(model, dim=2, seed=4).directions, s.directions)
    with pytest.raises(ValueError, match="dim must be"):
        random_slice(model, dim=4)
    with pytest.raises(ValueError, match="span"):
        random_slice(model, dim=2, span=[1, 2, 3])


def test_interpolation_endpoints_and_extrapolation():
    a, b = mlp(0), mlp(1)
    x, y = data()
    ev = _ev(a, x, y)
    own = ev.evaluate_models([a, b])["loss"]
    s = interpolation(a, b, points=9)
    ds = slice_field(ev, s)
    t = ds["t"].values
    assert t[0] == 0.0 and t[-1] == 1.0 and len(t) == 9
    torch.testing.assert_close(float(ds["loss"].sel(t=0.0)), float(own[0]), rtol=1e-5, atol=0)
    torch.testing.assert_close(float(ds["loss"].sel(t=1.0)), float(own[1]), rtol=1e-5, atol=0)

    se = interpolation(a, b, points=9, extrapolate=(0.25, 0.3))
    te = se.source.coords["t"]
    assert te[0] == pytest.approx(-0.25) and te[-1] == pytest.approx(1.375)  # rounded up
    assert 0.0 in te and 1.0 in te
    dse = slice_field(ev, se)
    torch.testing.assert_close(float(dse["loss"].sel(t=1.0)), float(own[1]), rtol=1e-5, atol=0)
    # an extrapolated point is a + t (b - a) with t outside [0, 1]
    space = ParamSpace(a)
    fa, fb = space.flatten(a), space.flatten(b)
    p = fa + te[-1] * (fb - fa)
    torch.testing.assert_close(float(dse["loss"].isel(t=-1)), float(ev.evaluate(p)["loss"]),
                               rtol=1e-5, atol=0)


def test_plane_through_three_models():
    a, b, c = mlp(0), mlp(1), mlp(2)
    x, y = data()
    ev = _ev(a, x, y)
    s = plane(a, b, c, resolution=7, margin=0.2)
    names, pts = s.anchor_points()
    assert names == ["a", "b", "c"]
    got = ev.evaluate(pts)["loss"]
    want = ev.evaluate_models([a, b, c])["loss"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    space = ParamSpace(a)
    fa, fb, fc = (space.flatten(m) for m in (a, b, c))
    assert s.anchors["b"][0] == pytest.approx(float((fb - fa).norm()), rel=1e-5)
    torch.testing.assert_close(s.directions @ s.directions.T, torch.eye(2), rtol=0, atol=1e-5)
    # the grid covers all three models, with the margin
    for d, i in (("u", 0), ("v", 1)):
        lo, hi = s.source.coords[d][[0, -1]]
        vals = [v[i] for v in s.anchors.values()]
        assert lo < min(vals) and hi > max(vals)
    ds = slice_field(ev, s)
    assert ds.attrs["units_u"] == "parameter distance (L2)"
    with pytest.raises(ValueError, match="line"):
        plane(a, b, b)


def test_pca_plane_exact_plane_synthetic():
    torch.manual_seed(0)
    D, T = 50, 12
    final = torch.randn(D)
    basis = torch.linalg.qr(torch.randn(D, 2))[0].T  # [2, D]
    t = torch.linspace(0, 1, T)
    c = torch.stack([3 * (1 - t) ** 2, torch.sin(4 * t) * (1 - t)], 1)  # ends at (0, 0)
    traj = final + c @ basis
    for center in (True, False):
        s = pca_plane(traj, resolution=5, center=center)
        assert s.projection_error.max() < 1e-5
        assert s.explained_variance.sum() == pytest.approx(1.0, abs=1e-6)
        torch.testing.assert_close(s.points_at(s.trajectory), traj, rtol=0, atol=1e-5)
        assert (s.trajectory[0] <= 0).all()
        torch.testing.assert_close(s.origin, final)
    with pytest.raises(ValueError, match="line"):
        pca_plane(final + t[:, None] * basis[0])


def test_pca_plane_real_trajectory():
    model = mlp()
    x, y = data()
    traj = train_trajectory(model, x, y, steps=10)
    space = ParamSpace(model)
    W = torch.stack([space.flatten(m) for m in traj]).double()
    s = pca_plane(traj, resolution=(6, 5), margin=0.1)
    assert s.dims == ("pc1", "pc2") and s.source.shape == (6, 5)
    ev = s.explained_variance
    assert ev.shape == (2,) and (ev >= 0).all() and ev.sum() <= 1 + 1e-9
    assert ev[0] >= ev[1]
    # the coordinates reproduce the orthogonal projection onto the plane through the final model
    dirs = s.directions.double()
    proj = W[-1] + (W - W[-1]) @ dirs.T @ dirs
    torch.testing.assert_close(s.points_at(s.trajectory).double(), proj, rtol=0, atol=1e-5)
    resid = (W - proj).norm(dim=1)
    dist = (W - W[-1]).norm(dim=1)
    np.testing.assert_allclose(s.projection_error[:-1], (resid / dist)[:-1].numpy(), atol=1e-5)
    assert s.projection_error[-1] == 0
    assert (s.projection_error >= 0).all() and (s.projection_error <= 1 + 1e-9).all()
    # the final model is the origin and evaluates to its own loss
    evaluator = _ev(model, x, y)
    ds = slice_field(evaluator, s)
    assert np.isfinite(ds["loss"].values).all()
    torch.testing.assert_close(
        evaluator.evaluate(s.points_at([0.0, 0.0]))["loss"][0],
        evaluator.evaluate_models([traj[-1]])["loss"][0], rtol=1e-6, atol=0,
    )
    desc = json.loads(json.dumps(s.describe()))
    assert len(desc["trajectory"]) == len(traj) and desc["kind"] == "pca"
    assert 0 <= desc["explained_variance_total"] <= 1 + 1e-9


def test_direction_slice_with_plain_tensors_and_buffers(tmp_path):
    model = cnn()
    space = ParamSpace(model, buffers=True)
    x = torch.randn(16, 1, 6, 6)
    y = torch.randint(0, 3, (16,))
    ev = Evaluator(model.eval(), (x, y), device="cpu", space=space)
    eig = torch.nn.functional.normalize(torch.randn(2, space.dim), dim=1)  # e.g. Hessian eigvecs
    s = direction_slice(model, eig, resolution=3, span=0.1, space=space)
    assert s.units["alpha"] == "parameter distance (L2)"
    run = Run(tmp_path / "run")
    ds = slice_field(ev, s, run=run, name="eig")
    own = ev.evaluate_models([model])["loss"][0]
    torch.testing.assert_close(float(ds["loss"].sel(alpha=0.0, beta=0.0)), float(own),
                               rtol=1e-5, atol=0)
    again = run.open_field("eig")
    assert again.attrs["units_alpha"] == "parameter distance (L2)"
    assert json.loads(again.attrs["slice"])["kind"] == "directions"
    # a slice built in another space is refused with a clear message
    with pytest.raises(ValueError, match="ParamSpace"):
        slice_field(_ev(model.eval(), x, y), s)
