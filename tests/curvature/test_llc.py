"""Local learning coefficient: known answers and agreement with devinterp."""

import logging
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas.curvature import default_nbeta, llc


def _half_mse(out, y):
    return 0.5 * ((out - y) ** 2).mean()  # Gaussian NLL (sigma = 1) up to a constant


def _orthonormal_design(n: int, d: int, seed: int):
    """X with X^T X / n = I, and noise orthogonal to X's columns (so w* is exact)."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(n, d + 1, generator=g, dtype=torch.float64))[0]
    x = Q[:, :d] * math.sqrt(n)
    noise = Q[:, d:] * math.sqrt(n)  # unit variance, orthogonal to x
    return x, noise


class Square(nn.Module):
    """y = a^2 x: K(a) ~ a^4, learning coefficient 1/4 at the true a = 0."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x):
        return self.a**2 * x


def _regular_problem(d=4, n=2000):
    x, noise = _orthonormal_design(n, d, seed=0)
    model = nn.Linear(d, 1, bias=False).double()
    w_true = torch.linspace(-1, 1, d, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(w_true[None])
    y = x @ w_true[:, None] + noise
    return model, x, y


SGLD = dict(epsilon=1e-4, nbeta=100.0, gamma=1.0, num_chains=8, batch_size=100)


def test_regular_model_gives_half_the_dimension():
    d = 4
    model, x, y = _regular_problem(d)
    out = llc(model, (x, y), loss_fn=_half_mse, num_draws=600, num_burnin_steps=300, **SGLD)
    # L(w) - L(w*) = |w - w*|^2 / 2: the localised tempered posterior gives exactly
    # E[nbeta (L - L*)] = d/2 * nbeta / (nbeta + gamma)
    expected = d / 2 * 100 / 101
    assert out.loss_trace.shape == (8, 600)
    assert out.llc_per_chain.shape == (8,)
    spread = out.llc_std / math.sqrt(8)
    assert abs(out.llc_mean - expected) < max(4 * spread, 0.1 * expected)
    assert abs(out.llc_mean - d / 2) < 0.2 * d / 2
    assert not out.diverged and not out.negative and out.mode == "eval"
    assert out.init_loss == pytest.approx(0.5, rel=1e-9)


def test_singular_model_gives_its_learning_coefficient():
    n = 2000
    x, noise = _orthonormal_design(n, 1, seed=1)
    model = Square()
    nbeta, gamma = 200.0, 1.0
    out = llc(
        model,
        (x, noise),
        loss_fn=_half_mse,
        epsilon=2e-4,
        nbeta=nbeta,
        gamma=gamma,
        num_chains=8,
        num_draws=2000,
        num_burnin_steps=300,
        batch_size=100,
        seed=1,
    )
    # exact target of the sampler: L(a) - L* = a^4 / 2, posterior ~ exp(-nbeta a^4/2 - gamma a^2/2)
    a = np.linspace(-3, 3, 200001)
    logp = -nbeta * a**4 / 2 - gamma * a**2 / 2
    p = np.exp(logp - logp.max())
    target = float((nbeta * a**4 / 2 * p).sum() / p.sum())
    spread = out.llc_std / math.sqrt(8)
    assert abs(out.llc_mean - target) < max(4 * spread, 0.1 * target)
    assert abs(out.llc_mean - 0.25) < 0.2 * 0.25  # the learning coefficient 1/4


def test_default_nbeta_and_diagnostics(caplog):
    assert default_nbeta(32) == pytest.approx(32 / math.log(32))
    model, x, y = _regular_problem(2, 200)
    with caplog.at_level(logging.WARNING, logger="lossatlas.curvature.llc"):
        out = llc(model, (x, y), loss_fn=_half_mse, epsilon=1.0, num_draws=30, num_chains=2)
    assert out.diverged and bool(out.diverged_chains.all())
    assert out.nbeta == pytest.approx(default_nbeta(32))
    assert any("diverged" in r.message for r in caplog.records)
    with pytest.raises(ValueError, match="batch_size must be between 1 and the 200 samples"):
        llc(model, (x, y), loss_fn=_half_mse, batch_size=500)
    # negative estimate away from a minimum (at a point the chains slide down from)
    far = torch.tensor([3.0, 3.0], dtype=torch.float64)
    out = llc(
        model,
        (x, y),
        loss_fn=_half_mse,
        params=far,
        epsilon=1e-3,
        gamma=0.0,
        num_draws=100,
        num_chains=2,
    )
    assert out.negative and out.warnings


def test_agrees_with_devinterp():
    devinterp = pytest.importorskip("devinterp", reason="devinterp (dev extra) is not installed")
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from torch.utils.data import DataLoader

    d = 4
    model, x, y = _regular_problem(d)
    # full batches: the spread then comes from the posterior alone (no batch-loss noise)
    sgld = {**SGLD, "epsilon": 1e-3, "batch_size": len(x)}
    hp = dict(num_draws=300, num_burnin_steps=100)
    ours = llc(model, (x, y), loss_fn=_half_mse, **hp, **sgld)
    loader = DataLoader([(x, y)], batch_size=1)  # the full batch as one item (fast)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = estimate_learning_coeff_with_summary(
            model,
            loader,
            evaluate=lambda m, batch: _half_mse(m(batch[0][0]), batch[1][0]),
            optimizer_kwargs=dict(
                lr=sgld["epsilon"], nbeta=sgld["nbeta"], localization=sgld["gamma"]
            ),
            num_chains=sgld["num_chains"],
            init_loss=ours.init_loss,
            seed=0,
            verbose=False,
            **hp,
        )
    assert devinterp is not None
    t_mean, t_std = theirs["llc/mean"], theirs["llc/std"]
    print(
        f"lossatlas {ours.llc_mean:.3f} +- {ours.llc_std:.3f}, devinterp {t_mean:.3f} +- {t_std:.3f}"
    )
    spread = math.sqrt((ours.llc_std ** 2 + t_std**2) / sgld["num_chains"])
    assert abs(ours.llc_mean - t_mean) < max(4 * spread, 0.05 * t_mean)
    np.testing.assert_allclose(
        ours.loss_trace.mean(0)[-100:].mean(),
        theirs["loss/trace"].mean(0)[-100:].mean(),
        rtol=0.02,
    )


def test_result_is_a_dataclass_with_deprecated_dict_access(tmp_path):
    """llc returns an LLCResult; the dict it used to return is still readable (with a
    DeprecationWarning), and JSON writers serialise it like that dict."""
    import dataclasses
    import json

    from lossatlas.curvature import LLCResult
    from lossatlas.store import atomic_write_json

    model, x, y = _regular_problem(2, 64)
    out = llc(model, (x, y), loss_fn=_half_mse, num_draws=3, num_chains=2, batch_size=16)
    assert isinstance(out, LLCResult) and dataclasses.is_dataclass(out)
    assert out.llc_mean == pytest.approx(float(out.llc_per_chain.mean()))
    assert out.loss_trace.shape == (2, 3) and out.num_samples == 64
    with pytest.warns(DeprecationWarning, match=r"result\.llc_std"):
        assert out["llc_std"] == out.llc_std
    with pytest.warns(DeprecationWarning):
        assert "llc_mean" in out and "nope" not in out
    with pytest.warns(DeprecationWarning):
        assert out.get("warnings", None) == out.warnings and out.get("nope", 1) == 1
    with pytest.warns(DeprecationWarning):
        assert list(out.keys()) == [f.name for f in dataclasses.fields(LLCResult)]
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError, match="no field 'nope'"):
        out["nope"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # attribute access and to_dict never warn
        d = out.to_dict()
        assert d["llc_mean"] == out.llc_mean and d["loss_trace"] is out.loss_trace
        atomic_write_json(tmp_path / "llc.json", out)
    written = json.loads((tmp_path / "llc.json").read_text())
    assert written["llc_mean"] == pytest.approx(out.llc_mean)
    assert written["loss_trace"] == out.loss_trace.tolist()
    assert written["diverged_chains"] == [False, False] and written["mode"] == "eval"


def test_cpu_cnn_chains_one_after_another_equal_vmap(monkeypatch):
    """On the CPU a CNN's chains run one after another (grouped convolutions under vmap are
    slow); the estimates equal the vmapped chains' (same batches and noise)."""
    import importlib

    llc_module = importlib.import_module("lossatlas.curvature.llc")  # the module, not llc()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3)).eval()
    x, y = torch.randn(64, 1, 6, 6), torch.randint(0, 3, (64,))
    kw = dict(num_chains=3, num_draws=20, num_burnin_steps=5, batch_size=16, seed=0,
              epsilon=1e-3, gamma=100.0)
    calls = []
    real = llc_module.slow_under_vmap_on_cpu
    monkeypatch.setattr(llc_module, "slow_under_vmap_on_cpu",
                        lambda *a: calls.append(real(*a)) or calls[-1])
    looped = llc_module.llc(model, (x, y), **kw)
    assert calls == [["convolutions"]]
    monkeypatch.setattr(llc_module, "slow_under_vmap_on_cpu", lambda *a: [])
    vmapped = llc_module.llc(model, (x, y), **kw)
    torch.testing.assert_close(looped.loss_trace, vmapped.loss_trace, rtol=1e-4, atol=1e-6)
    assert looped.llc_mean == pytest.approx(vmapped.llc_mean, rel=1e-3)
