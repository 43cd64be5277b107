"""Optimal-transport alignment: exact plans recover permuted copies; Sinkhorn does not
raise the barrier between trained MLPs; unequal widths give A's shapes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lossatlas import models
from lossatlas.connectivity import barrier
from lossatlas.symmetry import permutation_spec, permute_model, random_permutation
from lossatlas.symmetry.ot import ot_align, ot_plans


def _perturbed_mlp(hidden=(32, 24), seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.create("mlp", in_features=20, hidden=hidden, num_classes=5)


def test_exact_plan_is_a_permutation_and_recovers_a_permuted_copy():
    a = _perturbed_mlp()
    spec = permutation_spec(a)
    b = permute_model(a, spec, random_permutation(spec, torch.Generator().manual_seed(3)))
    sa, sb = a.state_dict(), b.state_dict()
    assert not all(torch.equal(sa[k], sb[k]) for k in sa)
    aligned, plans = ot_align(a, b, method="exact", return_plans=True)
    for plan in plans:
        n = plan.shape[0]
        scaled = plan * n
        assert torch.allclose(scaled.sum(0), torch.ones(n, dtype=scaled.dtype))
        assert torch.allclose(scaled.sum(1), torch.ones(n, dtype=scaled.dtype))
        assert set(scaled.flatten().round(decimals=9).tolist()) <= {0.0, 1.0}
    sal = aligned.state_dict()
    assert all(torch.equal(sa[k], sal[k]) for k in sa)
    x = torch.randn(16, 20)
    with torch.no_grad():
        assert torch.allclose(aligned(x), b(x), atol=1e-5)  # b's function, a's order


def test_sinkhorn_plans_have_uniform_marginals():
    a, b = _perturbed_mlp(seed=0), _perturbed_mlp(seed=1)
    for plan in ot_plans(a, b, method="sinkhorn", reg=0.02):
        nb, na = plan.shape
        assert torch.allclose(plan.sum(1), torch.full((nb,), 1 / nb, dtype=plan.dtype), atol=1e-6)
        assert torch.allclose(plan.sum(0), torch.full((na,), 1 / na, dtype=plan.dtype), atol=1e-6)


def test_sinkhorn_alignment_does_not_raise_the_barrier_of_trained_mlps(digits, train):
    x, y = digits.x_train, digits.y_train
    torch.manual_seed(0)
    a = train(models.create("mlp", in_features=64, hidden=(64, 64)), x, y, steps=300, seed=0)
    torch.manual_seed(1)
    b = train(models.create("mlp", in_features=64, hidden=(64, 64)), x, y, steps=300, seed=1)
    data = (x, y)
    before = barrier(a, b, data, points=11)
    aligned = ot_align(a, b, method="sinkhorn", reg=0.01)
    after = barrier(a, aligned, data, points=11)
    assert before > 0.1
    assert after <= before
    with torch.no_grad():  # a soft plan averages neurons: still a working model at this reg
        assert (aligned(x).argmax(1) != y).float().mean() < 0.05
    exact = barrier(a, ot_align(a, b, method="exact"), data, points=11)
    assert exact < 0.5 * before  # a permutation: b's function, much lower barrier


def test_unequal_widths_run_and_give_a_shapes():
    a = _perturbed_mlp(hidden=(16, 12), seed=0)
    b = _perturbed_mlp(hidden=(40, 30), seed=1)
    for method in ("exact", "sinkhorn"):
        aligned, plans = ot_align(a, b, method=method, return_plans=True)
        assert [tuple(p.shape) for p in plans] == [(40, 16), (30, 12)]
        sa, sal = a.state_dict(), aligned.state_dict()
        assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sal.items()}
        assert all(torch.isfinite(v).all() for v in sal.values())
        with torch.no_grad():
            assert aligned(torch.randn(4, 20)).shape == (4, 5)


def test_sequential_chains_are_aligned_too():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    b = copy.deepcopy(a)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        b[1].weight.copy_(a[1].weight[perm])
        b[1].bias.copy_(a[1].bias[perm])
        b[3].weight.copy_(a[3].weight[:, perm])
    aligned = ot_align(a, b)
    assert all(torch.equal(v, aligned.state_dict()[k]) for k, v in a.state_dict().items())
    relu = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    with pytest.raises(ValueError, match="activations differ"):
        ot_align(a, relu)


def test_refuses_models_that_are_not_linear_chains():
    a = models.create("cnn", channels=(4, 4))
    with pytest.raises(TypeError, match="model_a .*not a plain chain"):
        ot_align(a, a)
    m = _perturbed_mlp()
    deeper = models.create("mlp", in_features=20, hidden=(8, 8, 8), num_classes=5)
    with pytest.raises(ValueError, match="Linear layers"):
        ot_align(m, deeper)
    with pytest.raises(ValueError, match="method"):
        ot_align(m, m, method="hungarian")
