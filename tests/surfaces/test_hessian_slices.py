"""Hessian-direction slices: the second derivative along each direction at the centre
(finite differences on the evaluated slice) equals its eigenvalue (dense Hessian)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from lossatlas.evaluate import Evaluator
from lossatlas.space import ParamSpace
from lossatlas.surfaces import hessian_directions, hessian_slice, random_slice, slice_field

# fields are stored in float32: a step of 0.05 keeps rounding (~1e-7 / h^2) and the
# truncation of the central difference (~h^2 / 12 x the fourth derivative) below 1e-3
H_STEP = 0.05


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny Hessians run much faster on one thread (and on a shared CPU)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _data(shape, n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g).double()
    return x, torch.randint(0, 3, (n,), generator=g)


def _dense_hessian(model, x, y):
    space = ParamSpace(model)
    buffers = dict(model.named_buffers())

    def loss(w):
        out = functional_call(model, {**space.unflatten(w), **buffers}, (x,))
        return nn.functional.cross_entropy(out, y)

    return torch.autograd.functional.hessian(loss, space.flatten(model))


def _second_differences(ds, ndim):
    loss = torch.as_tensor(ds["loss"].values)
    centre = (1,) * ndim
    out = []
    for i in range(ndim):
        lo, hi = list(centre), list(centre)
        lo[i], hi[i] = 0, 2
        out.append(float(loss[tuple(hi)] - 2 * loss[centre] + loss[tuple(lo)]) / H_STEP**2)
    return torch.tensor(out, dtype=torch.float64)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()


def _bn_cnn():
    torch.manual_seed(0)
    # tanh, not ReLU: a finite step across a ReLU kink is not a second derivative
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Tanh(),
                         nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).double()


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_curvature_along_mlp_hessian_directions_is_the_eigenvalue(which):
    model = _mlp()
    x, y = _data((4,))
    evals, evecs = torch.linalg.eigh(_dense_hessian(model, x, y))
    if which == "largest":
        evals, evecs = evals.flip(0), evecs.flip(1)
    s = hessian_slice(model, (x, y), dim=2, resolution=3, span=H_STEP, which=which,
                      tol=1e-10)
    assert s.kind == "hessian" and s.units["alpha"] == "parameter distance (L2)"
    torch.testing.assert_close(torch.tensor(s.info["eigenvalues"]).double(), evals[:2],
                               rtol=1e-6, atol=1e-9)
    for i in range(2):
        d = s.directions[i].double()
        assert float((d @ evecs[:, i]).abs()) > 1 - 1e-6
    ds = slice_field(Evaluator(model, (x, y)), s)
    torch.testing.assert_close(_second_differences(ds, 2), evals[:2], rtol=5e-3, atol=1e-3)
    if which == "smallest":
        assert float(evals[0]) < 0  # the loss bends down along the first direction


def test_curvature_along_batchnorm_cnn_hessian_directions_is_the_eigenvalue():
    model = _bn_cnn()
    x, y = _data((1, 4, 4))
    with torch.no_grad():
        model.train()(x)
    model.eval()
    evals = torch.linalg.eigvalsh(_dense_hessian(model, x, y)).flip(0)
    space = ParamSpace(model, buffers=True)  # bn="own": the statistics are coordinates too
    s = hessian_slice(model, (x, y), dim=3, resolution=3, span=H_STEP, space=space,
                      bn="own", tol=1e-10)
    assert s.directions.shape == (3, space.dim)
    buffers = torch.cat([s.directions[:, seg.start:seg.stop] for seg in space.segments
                         if seg.is_buffer], 1)
    assert float(buffers.abs().max()) == 0.0  # statistics do not move
    ds = slice_field(Evaluator(model, (x, y), bn="own", space=space), s)
    torch.testing.assert_close(_second_differences(ds, 3), evals[:3], rtol=5e-3, atol=1e-3)


def test_hessian_directions_refuse_a_foreign_space_and_non_modules():
    model = _mlp()
    x, y = _data((4,))
    other = ParamSpace(nn.Linear(4, 3).double())
    with pytest.raises(ValueError, match="not laid out by the given space"):
        hessian_directions(model, (x, y), 1, space=other)
    with pytest.raises(TypeError, match="must be an nn.Module"):
        hessian_directions(ParamSpace(model).flatten(model), (x, y), 1)
    with pytest.raises(ValueError, match="dim must be 1, 2 or 3"):
        hessian_slice(model, (x, y), dim=4)


def test_random_slice_sees_less_curvature_than_the_top_direction():
    # the comparison the survey draws: a filter-normalised random direction (unit norm
    # here) has curvature d.H.d, between the extremes of the spectrum
    model = _mlp()
    x, y = _data((4,))
    H = _dense_hessian(model, x, y)
    evals = torch.linalg.eigvalsh(H)
    r = random_slice(model, dim=1, resolution=3, span=H_STEP, normalization="filter", seed=0)
    d = r.directions[0].double()
    u = d / d.norm()
    top = hessian_slice(model, (x, y), dim=1, resolution=3, span=H_STEP, tol=1e-10)
    ev = Evaluator(model, (x, y))
    curv_top = float(_second_differences(slice_field(ev, top), 1)[0])
    curv_rand = float(_second_differences(slice_field(ev, r), 1)[0]) / float(d @ d)
    assert curv_rand == pytest.approx(float(u @ H @ u), rel=5e-3, abs=1e-3)
    assert float(evals[0]) - 1e-6 <= curv_rand <= curv_top + 1e-6
