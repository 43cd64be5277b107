"""Scale symmetry of layers before a BatchNorm / LayerNorm: detected from the graph,
function preserved (up to the norm's eps), and a rescaled copy has the same canonical
form."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lossatlas.symmetry import (
    NormScale,
    apply_norm_scaling,
    apply_rescaling,
    canonical_rescaling,
    permutation_spec,
    random_norm_scaling,
    random_rescaling,
    rescale_canonical,
)


def _bn_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def _ln_mlp() -> nn.Module:
    # a tiny eps: then the scale symmetry is exact up to rounding (with eps=1e-5 a layer
    # scaled by 1/4 moves the outputs by ~5e-4)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16, eps=1e-12), nn.Tanh(),
                         nn.Linear(16, 12), nn.LayerNorm(12, eps=1e-12), nn.ReLU(),
                         nn.Linear(12, 4))


def _load(model: nn.Module, state) -> nn.Module:
    new = copy.deepcopy(model)
    new.load_state_dict(state)
    return new.eval()


def _same_canonical_form(spec, a, b):
    ca, _ = canonical_rescaling(spec, a)
    cb, _ = canonical_rescaling(spec, b)
    for k in ca:
        torch.testing.assert_close(ca[k], cb[k], rtol=1e-5, atol=1e-7)
    return ca


def test_batchnorm_cnn_rescaled_copy_has_the_same_canonical_form():
    torch.manual_seed(0)
    model = _bn_cnn().double()
    x = torch.randn(64, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():  # running statistics that belong to the weights
        model.train()(x)
    model.eval()
    spec = permutation_spec(model, x[:2])
    assert spec.norm_scales == [NormScale("0", "1", "unit"), NormScale("3", "4", "unit")]
    state = model.state_dict()
    scales = random_norm_scaling(spec, state, generator=torch.Generator().manual_seed(1))
    rescaled = apply_norm_scaling(spec, state, scales)
    assert not torch.allclose(rescaled["0.weight"], state["0.weight"])
    torch.testing.assert_close(rescaled["1.running_var"], state["1.running_var"]
                               * scales["0"] ** 2)
    with torch.no_grad():  # equal up to BatchNorm's eps (1e-5 against variances ~ 0.1-1)
        torch.testing.assert_close(_load(model, rescaled)(x), model(x), rtol=0, atol=1e-3)
    canon = _same_canonical_form(spec, state, rescaled)
    rows = canon["3.weight"].reshape(8, -1).norm(dim=1)
    torch.testing.assert_close(rows, torch.ones(8, dtype=torch.float64))
    with torch.no_grad():
        torch.testing.assert_close(rescale_canonical(model, spec)(x), model(x), rtol=0,
                                   atol=1e-3)


def test_layernorm_mlp_rescaled_copy_has_the_same_canonical_form():
    torch.manual_seed(0)
    model = _ln_mlp().double().eval()
    x = torch.randn(32, 8, dtype=torch.float64)
    spec = permutation_spec(model, x[:2])
    assert spec.norm_scales == [NormScale("0", "1", "layer"), NormScale("3", "4", "layer")]
    state = model.state_dict()
    scales = random_norm_scaling(spec, state, generator=torch.Generator().manual_seed(1))
    assert scales["0"].shape == (1,)
    rescaled = apply_norm_scaling(spec, state, scales)
    with torch.no_grad():
        torch.testing.assert_close(_load(model, rescaled)(x), model(x), rtol=0, atol=1e-9)
    canon = _same_canonical_form(spec, state, rescaled)
    assert float(canon["0.weight"].norm()) == pytest.approx(1.0, rel=1e-12)
    # idempotent: the canonical form is its own canonical form
    again, scales_again = canonical_rescaling(spec, canon)
    assert all(bool((c == 1).all()) for c in scales_again.values())
    for k in canon:
        torch.testing.assert_close(again[k], canon[k])


def test_relu_units_feeding_a_batchnorm_layer_settle_together():
    # group "0" has the ReLU rescaling, layer "2" the BatchNorm scale: both act on
    # 2.weight, so the canonical form alternates them to a joint fixed point
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.BatchNorm1d(8),
                          nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(64, 6, dtype=torch.float64)
    with torch.no_grad():
        model.train()(x)
    model.eval()
    spec = permutation_spec(model, x[:2])
    assert spec.rescalable == {"0"} and [n.producer for n in spec.norm_scales] == ["2"]
    state = model.state_dict()
    g = torch.Generator().manual_seed(3)
    rescaled = apply_rescaling(spec, state, random_rescaling(spec, generator=g))
    rescaled = apply_norm_scaling(spec, rescaled, random_norm_scaling(spec, rescaled, generator=g))
    with torch.no_grad():
        torch.testing.assert_close(_load(model, rescaled)(x), model(x), rtol=0, atol=1e-3)
    canon = _same_canonical_form(spec, state, rescaled)
    inc = canon["0.weight"].pow(2).sum(1) + canon["0.bias"].pow(2)
    out = canon["2.weight"].pow(2).sum(0)
    torch.testing.assert_close(inc, out, rtol=1e-6, atol=1e-9)  # balanced
    torch.testing.assert_close(canon["2.weight"].norm(dim=1), torch.ones(8, dtype=torch.float64),
                               rtol=1e-6, atol=1e-9)  # unit rows


def test_layers_read_elsewhere_are_not_scale_invariant_and_bad_scales_refused():
    class Skip(nn.Module):  # the Linear's output also reaches the head: no invariance
        def __init__(self):
            super().__init__()
            self.a, self.norm, self.head = nn.Linear(6, 6), nn.LayerNorm(6), nn.Linear(6, 2)

        def forward(self, x):
            h = self.a(x)
            return self.head(self.norm(h) + h)

    spec = permutation_spec(Skip(), torch.randn(2, 6))
    assert spec.norm_scales == []
    model = _bn_cnn()
    spec = permutation_spec(model, torch.randn(2, 1, 8, 8))
    state = model.state_dict()
    with pytest.raises(KeyError, match="does not feed a norm layer alone"):
        apply_norm_scaling(spec, state, {"7": torch.ones(10)})
    with pytest.raises(ValueError, match="must be nonzero"):
        apply_norm_scaling(spec, state, {"0": torch.zeros(6)})
    plain = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5, affine=False), nn.Linear(5, 2))
    spec = permutation_spec(plain, torch.randn(2, 6))
    with pytest.raises(ValueError, match="no affine weight to absorb a sign"):
        apply_norm_scaling(spec, plain.state_dict(), {"0": -torch.ones(5)})
    with pytest.raises(ValueError, match=r"Tensor\[6\]"):
        apply_norm_scaling(spec, state, {"0": torch.ones(5)})


@pytest.mark.parametrize("build,shape", [(_bn_cnn, (1, 8, 8)), (_ln_mlp, (8,))])
def test_negative_scales_flip_gamma_and_share_the_canonical_form(build, shape):
    """A negative scale of a unit (layer) before a norm negates the normalised value;
    the norm's weight times -1 restores the output exactly (BatchNorm in train mode too).
    The canonical form has gamma >= 0 (its sum, for a LayerNorm) and is shared."""
    torch.manual_seed(0)
    model = build().double()
    x = torch.randn(64, *shape, dtype=torch.float64)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("1.weight", "4.weight"):
                p.copy_(torch.randn_like(p))  # gammas of both signs
        model.train()(x)
    model.eval()
    spec = permutation_spec(model, x[:2])
    state = model.state_dict()
    g = torch.Generator().manual_seed(4)
    scales = random_norm_scaling(spec, state, generator=g, signs=True)
    assert any(bool((c < 0).any()) for c in scales.values())
    scales = {k: torch.cat([-c[:1].abs(), c[1:]]) for k, c in scales.items()}  # one per layer
    flips = {k: torch.sign(c) for k, c in scales.items()}
    flipped = apply_norm_scaling(spec, state, flips)  # pure signs: exact in float64
    for ns in spec.norm_scales:  # gamma times the sign of its unit's (layer's) scale
        gamma = state[f"{ns.norm}.weight"]
        assert torch.equal(flipped[f"{ns.norm}.weight"], gamma * flips[ns.producer]
                           if ns.kind == "unit" else gamma * flips[ns.producer][0])
    with torch.no_grad():
        torch.testing.assert_close(_load(model, flipped)(x), model(x), rtol=0, atol=1e-12)
        if build is _bn_cnn:  # batch statistics negate with the unit as well
            torch.testing.assert_close(_load(model, flipped).train()(x), model.train()(x),
                                       rtol=0, atol=1e-12)
            model.eval()
    rescaled = apply_norm_scaling(spec, state, scales)
    canon = _same_canonical_form(spec, state, rescaled)
    for ns in spec.norm_scales:
        gamma = canon[f"{ns.norm}.weight"]
        assert bool((gamma >= 0).all()) if ns.kind == "unit" else float(gamma.sum()) >= 0
    with torch.no_grad():
        torch.testing.assert_close(_load(model, canon)(x), model(x), rtol=0, atol=1e-3)
