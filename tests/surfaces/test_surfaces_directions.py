import pytest
import torch
from surf_helpers import cnn, mlp
from torch import nn

from lossatlas import ParamSpace
from lossatlas.surfaces import (
    interpolation_direction,
    normalize_direction,
    orthogonalize,
    random_direction,
)


@pytest.mark.parametrize("make", [mlp, cnn])
def test_filter_normalisation_rows_match_weights(make):
    model = make()
    space = ParamSpace(model)
    d = random_direction(model, generator=torch.Generator().manual_seed(3))
    assert d.shape == (space.dim,)
    dp = space.unflatten(d)
    for name, w in model.named_parameters():
        if w.ndim <= 1:
            assert torch.count_nonzero(dp[name]) == 0, name  # biases / BN zero (biasbn)
            continue
        rows_d = dp[name].reshape(w.shape[0], -1).norm(dim=1)
        rows_w = w.detach().reshape(w.shape[0], -1).norm(dim=1)
        torch.testing.assert_close(rows_d, rows_w, rtol=1e-5, atol=1e-6)


def test_ignore_none_copies_one_dim_params_like_li_et_al():
    model = cnn()
    space = ParamSpace(model)
    d = space.unflatten(random_direction(model, ignore=None, generator=0))
    for name, w in model.named_parameters():
        if w.ndim <= 1:
            torch.testing.assert_close(d[name], w.detach())


def test_buffers_are_zero_in_directions():
    model = cnn()
    space = ParamSpace(model, buffers=True)
    assert space.buffer_names
    for ignore in ("biasbn", None):
        for norm in ("filter", "layer", "model", "none"):
            d = space.unflatten(random_direction(model, norm, ignore, generator=1, space=space),
                                values=False)
            for name in space.buffer_names:
                assert torch.count_nonzero(d[name]) == 0, (norm, ignore, name)


def test_layer_and_model_normalisation_norms():
    model = cnn()
    space = ParamSpace(model)
    w = space.flatten(model)
    d = space.unflatten(random_direction(model, "layer", generator=2))
    for name, p in model.named_parameters():
        if p.ndim > 1:
            torch.testing.assert_close(d[name].norm(), p.detach().norm(), rtol=1e-5, atol=0)
    dm = random_direction(model, "model", generator=2)
    weights = torch.cat([space.unflatten(w)[n].reshape(-1) for n in space.names
                         if len(space[n].shape) > 1])
    torch.testing.assert_close(dm.norm(), weights.norm(), rtol=1e-5, atol=0)
    dm_all = random_direction(model, "model", ignore=None, generator=2)
    torch.testing.assert_close(dm_all.norm(), w.norm(), rtol=1e-5, atol=0)
    dn = random_direction(model, "none", ignore=None, generator=2)
    torch.testing.assert_close(dn, space.random_like(torch.Generator().manual_seed(2)))


def test_deterministic_with_generator_and_seed():
    model = mlp()
    a = random_direction(model, generator=torch.Generator().manual_seed(7))
    b = random_direction(model, generator=torch.Generator().manual_seed(7))
    c = random_direction(model, generator=8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    torch.testing.assert_close(random_direction(model, generator=7), a, rtol=0, atol=0)


def test_plain_tensors_accepted():
    model = mlp()
    space = ParamSpace(model)
    w = space.flatten(model)
    eig = torch.randn(2, space.dim)  # e.g. Hessian eigenvectors [k, D]
    out = normalize_direction(eig, w, space, "filter")
    assert out.shape == (2, space.dim)
    for k in range(2):
        torch.testing.assert_close(out[k], normalize_direction(eig[k], model, None, "filter"))
    d = random_direction(w, generator=0, space=space)
    torch.testing.assert_close(d, random_direction(model, generator=0))
    with pytest.raises(TypeError, match="ParamSpace"):
        random_direction(w)
    with pytest.raises(ValueError, match="normalization"):
        random_direction(model, normalization="filterwise")
    with pytest.raises(ValueError, match="length"):
        normalize_direction(torch.randn(3), model)


def test_interpolation_direction_and_orthogonalize():
    a, b = mlp(0), mlp(1)
    space = ParamSpace(a)
    d = interpolation_direction(a, b)
    torch.testing.assert_close(d, space.flatten(b) - space.flatten(a))
    u = torch.randn(space.dim)
    v = u * 0.3 + torch.randn(space.dim)
    w = orthogonalize(v, u)
    assert abs(float(w @ u)) < 1e-4 * float(w.norm() * u.norm())
    torch.testing.assert_close(w + (v @ u) / (u @ u) * u, v, rtol=1e-5, atol=1e-5)
    both = orthogonalize(torch.stack([u, v]), torch.randn(space.dim), normalize=True)
    gram = both @ both.T
    torch.testing.assert_close(gram, torch.eye(2), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="span"):
        orthogonalize(2 * u, u)


def test_orthogonal_second_direction_keeps_shape():
    model = nn.Linear(4, 2)
    d1 = random_direction(model, generator=0)
    d2 = orthogonalize(random_direction(model, generator=1), d1)
    assert d2.shape == d1.shape
