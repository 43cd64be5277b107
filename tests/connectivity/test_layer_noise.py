"""Per-layer noise tolerance against a direct computation: the same noise written into
one layer of a copy of the model, the loss of a plain forward pass."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas.connectivity import layer_noise_tolerance, layerwise_barriers, layerwise_profile
from lossatlas.space import ParamSpace

SCALES = (0.1, 0.5, 1.0)


def _filter_noise(model: nn.Module, seed: int, draws: int) -> list[dict[str, torch.Tensor]]:
    """Li et al.'s filter-normalised directions, by hand: each row of each weight (>= 2
    dims) scaled to the norm of the model's row, biases and norm parameters zero."""
    space = ParamSpace(model)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(draws):
        raw = space.unflatten(torch.randn(space.dim, generator=gen, dtype=space.dtype))
        noise = {}
        for name, w in model.named_parameters():
            d = raw[name].clone()
            if w.ndim <= 1:
                noise[name] = torch.zeros_like(w)
                continue
            rows_d, rows_w = d.reshape(len(d), -1), w.detach().reshape(len(w), -1)
            scale = rows_w.norm(dim=1, keepdim=True) / (rows_d.norm(dim=1, keepdim=True) + 1e-10)
            noise[name] = (rows_d * scale).reshape(w.shape)
        out.append(noise)
    return out


def _direct_rise(model, x, y, prefix, noise, scale, train_mode_bn=False):
    base_model = copy.deepcopy(model)
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in noisy.named_parameters():
            if name.startswith(prefix):
                p.add_(float(np.float32(scale)) * noise[name])
        # bn="recompute": batch statistics of all samples (train-mode BatchNorm, one batch)
        base_model.train(train_mode_bn)
        noisy.train(train_mode_bn)
        f = nn.functional.cross_entropy
        return float(f(noisy(x), y) - f(base_model(x), y)), float(f(base_model(x), y))


def _data(shape, n=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_mlp_noise_rise_matches_the_direct_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4)).eval()
    x, y = _data((6,))
    ds = layer_noise_tolerance(model, (x, y), scales=SCALES, num_draws=3, seed=5,
                               threshold=0.05)
    assert list(ds["group"].values) == ["0", "2"]
    assert ds["loss_rise"].dims == ("group", "scale")
    noise = _filter_noise(model, 5, 3)
    for group, prefix in (("0", "0."), ("2", "2.")):
        for r in range(3):
            for s in SCALES:
                want, base = _direct_rise(model, x, y, prefix, noise[r], s)
                got = float(ds["loss"].sel(group=group, draw=r, scale=s)) - ds.attrs["base_loss"]
                assert got == pytest.approx(want, abs=2e-5)
        mean = np.mean([[_direct_rise(model, x, y, prefix, noise[r], s)[0] for s in SCALES]
                        for r in range(3)], axis=0)
        np.testing.assert_allclose(ds["loss_rise"].sel(group=group).values, mean, atol=2e-5)
        # the tolerance: where the interpolated mean rise crosses the threshold
        tol = float(ds["tolerance"].sel(group=group))
        curve_s, curve_r = np.r_[0.0, SCALES], np.r_[0.0, mean]
        if math.isfinite(tol):
            assert np.interp(tol, curve_s, curve_r) == pytest.approx(0.05, abs=1e-6)
            assert np.all(curve_r[curve_s < tol] < 0.05)
        else:
            assert np.all(mean < 0.05)
    assert ds.attrs["base_loss"] == pytest.approx(base, abs=1e-6)
    assert bool(ds["moved"].all())


def test_batchnorm_cnn_noise_matches_batch_statistics_and_skips_norm_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 4)).eval()
    x, y = _data((1, 4, 4))
    ds = layer_noise_tolerance(model, (x, y), scales=SCALES, num_draws=2, seed=1)
    assert ds.attrs["bn"] == "recompute"
    assert list(ds["group"].values) == ["0", "1", "4"]
    # the BatchNorm layer gets no noise (ignore="biasbn"): no rise, no tolerance
    assert not bool(ds["moved"].sel(group="1"))
    assert np.all(ds["loss_rise"].sel(group="1").values == 0)
    assert math.isnan(float(ds["tolerance"].sel(group="1")))
    noise = _filter_noise(model, 1, 2)
    for group, prefix in (("0", "0."), ("4", "4.")):
        for r in range(2):
            for s in SCALES:
                want, _ = _direct_rise(model, x, y, prefix, noise[r], s, train_mode_bn=True)
                got = float(ds["loss"].sel(group=group, draw=r, scale=s)) - ds.attrs["base_loss"]
                assert got == pytest.approx(want, abs=5e-5)


def test_profile_puts_barriers_beside_noise_tolerance():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4)).eval()
    b = copy.deepcopy(a)
    with torch.no_grad():
        b[2].weight.add_(0.5 * torch.randn_like(b[2].weight))
    x, y = _data((6,))
    prof = layerwise_profile(a, b, (x, y), scales=SCALES, num_draws=2, points=5)
    assert prof["barrier"].dims == ("group", "anchor")
    assert prof["tolerance"].dims == ("model", "group")
    ref = layerwise_barriers(a, b, (x, y), points=5)
    np.testing.assert_array_equal(prof["barrier"].values, ref.values)
    alone = layer_noise_tolerance(b, (x, y), scales=SCALES, num_draws=2)
    np.testing.assert_array_equal(prof["loss_rise"].sel(model="b").values,
                                  alone["loss_rise"].values)
    assert float(prof["barrier"].sel(group="0", anchor="a")) == 0.0  # identical layer


def test_bad_options_are_refused_by_name():
    model = nn.Sequential(nn.Linear(6, 4))
    x, y = _data((6,))
    with pytest.raises(ValueError, match="scales must be positive"):
        layer_noise_tolerance(model, (x, y), scales=(0.1, -1.0))
    with pytest.raises(ValueError, match="num_draws must be >= 1"):
        layer_noise_tolerance(model, (x, y), num_draws=0)
    with pytest.raises(ValueError, match="threshold must be a positive"):
        layer_noise_tolerance(model, (x, y), threshold=0.0)
    with pytest.raises(ValueError, match="group 'x'"):
        layer_noise_tolerance(model, (x, y), groups={"x": "nothing."})
    with pytest.raises(TypeError, match="needs template="):
        layer_noise_tolerance(ParamSpace(model).flatten(model), (x, y))
