"""Sign-flip symmetry of odd (tanh-like) units: which groups have it (also through
BatchNorm / LayerNorm), signed permutations preserve the function, and weight,
activation and OT matching recover a randomly sign-flipped and permuted copy exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lossatlas.symmetry import (
    activation_matching,
    align,
    apply_permutation,
    check_spec,
    compare_alignment,
    match_signed_weights,
    match_weights,
    ot_align,
    ot_plans,
    permutation_spec,
    permute_model,
    random_permutation,
    random_signs,
    weight_matching,
)
from lossatlas.symmetry.spec import scale_axis


def _tanh_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 24), nn.Tanh(),
                         nn.Linear(24, 4))


def _tanh_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.Tanh(), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 4))


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


@pytest.mark.parametrize("build,shape", [(_tanh_mlp, (8,)), (_tanh_cnn, (1, 8, 8))])
def test_signed_permuted_copy_aligns_back_exactly(build, shape):
    torch.manual_seed(0)
    model = build().eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, *shape, generator=g), torch.randint(0, 4, (64,), generator=g)
    spec = permutation_spec(model, x[:2])
    assert spec.odd == set(spec.groups) and len(spec.odd) == 2
    perms, signs = random_permutation(spec, g), random_signs(spec, g)
    assert all(bool((s < 0).any()) for s in signs.values())
    copy_b = permute_model(model, spec, perms, signs)
    assert _loss(copy_b, x, y) == pytest.approx(_loss(model, x, y), abs=1e-6)
    aligned, _, found = weight_matching(model, copy_b, spec, return_perms=True, signs=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(aligned.state_dict()[k], v, rtol=0, atol=1e-6)
    assert _loss(aligned, x, y) == _loss(model, x, y)
    assert set(found) == spec.odd
    # without signs the flipped units cannot be matched: the weights stay apart
    unsigned = weight_matching(model, copy_b, spec)
    gap = max(float((unsigned.state_dict()[k] - v).abs().max())
              for k, v in model.state_dict().items())
    assert gap > 0.1
    # the functional form agrees with the module one
    p2, s2 = match_signed_weights(spec, model.state_dict(), copy_b.state_dict())
    state = apply_permutation(spec, copy_b.state_dict(), p2, s2)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=1e-6)


def test_activation_matching_with_signs_recovers_a_flipped_copy():
    torch.manual_seed(0)
    model = _tanh_mlp().eval()
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(256, 8, generator=g), torch.randint(0, 4, (256,), generator=g)
    spec = permutation_spec(model, x[:2])
    copy_b = permute_model(model, spec, random_permutation(spec, g), random_signs(spec, g))
    aligned, _, found = activation_matching(model, copy_b, (x, y), spec, return_perms=True,
                                            signs=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(aligned.state_dict()[k], v, rtol=0, atol=1e-6)
    assert any(bool((s < 0).any()) for s in found.values())
    plain = activation_matching(model, copy_b, (x, y), spec)
    assert not torch.allclose(plain.state_dict()["0.weight"], model.state_dict()["0.weight"])


def test_signed_matching_of_models_without_odd_units_is_plain_matching():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 8 * 8, 4))
    x = torch.randn(32, 1, 8, 8)
    with torch.no_grad():
        model.train()(x)
    model.eval()
    spec = permutation_spec(model, x[:2])
    assert spec.odd == set() and len(spec.groups) == 1
    b = permute_model(model, spec, random_permutation(spec, torch.Generator().manual_seed(2)))
    perms, signs = match_signed_weights(spec, model.state_dict(), b.state_dict())
    assert signs == {}
    plain = match_weights(spec, model.state_dict(), b.state_dict())
    assert all(torch.equal(perms[g], plain[g]) for g in spec.groups)
    state = apply_permutation(spec, b.state_dict(), perms)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=1e-6)


@pytest.mark.parametrize("act,odd", [
    (nn.Tanh(), True), (nn.Softsign(), True), (nn.Hardtanh(), True), (nn.Identity(), True),
    (nn.ReLU(), False), (nn.ReLU6(), False), (nn.Hardtanh(0.0, 1.0), False), (nn.GELU(), False),
    (nn.Sigmoid(), False),
])
def test_which_activations_give_sign_symmetry(act, odd):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), act, nn.Linear(10, 3)).eval()
    x = torch.randn(16, 6)
    spec = permutation_spec(model, x[:2])
    assert (spec.odd == {"0"}) is odd
    assert check_spec(model, spec, x)  # random signs of the odd groups included
    # flipping one unit by hand changes the function exactly when the group is not odd
    flipped = copy.deepcopy(model)
    sign = torch.ones(10)
    sign[3] = -1.0
    with torch.no_grad():
        flipped[0].weight.copy_(scale_axis(model[0].weight, 0, sign))
        flipped[0].bias.copy_(scale_axis(model[0].bias, 0, sign))
        flipped[2].weight.copy_(scale_axis(model[2].weight, 1, sign))
        diff = float((flipped(x) - model(x)).abs().max())
    assert (diff < 1e-6) is odd


def test_norm_layers_without_affine_max_pooling_and_offsets_break_the_sign_symmetry():
    x = torch.randn(4, 6)
    for norm in (nn.LayerNorm(10, elementwise_affine=False), nn.BatchNorm1d(10, affine=False)):
        model = nn.Sequential(nn.Linear(6, 10), norm, nn.Tanh(), nn.Linear(10, 3))
        assert permutation_spec(model, x).odd == set()
    img = torch.randn(4, 1, 8, 8)
    maxpool = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    assert permutation_spec(maxpool, img).odd == set()

    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 10), nn.Linear(10, 3)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)) + 1.0)

    spec = permutation_spec(Shifted(), x)
    assert spec.odd == set() and "a" in spec.groups
    assert check_spec(Shifted().eval(), spec, x)


def test_signs_are_checked_by_name():
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    spec = permutation_spec(model, torch.randn(2, 6))
    perms = random_permutation(spec)
    with pytest.raises(KeyError, match="no sign-flip symmetry"):
        apply_permutation(spec, model.state_dict(), perms, {"0": torch.ones(10)})
    tanh = _tanh_mlp()
    spec = permutation_spec(tanh, torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"Tensor\[32\] of \+-1"):
        apply_permutation(spec, tanh.state_dict(), {}, {"0": torch.full((32,), 0.5)})


# ------------------------------------------------------- sign flips through norm layers
def _normed_tanh_mlp(norm: str) -> nn.Module:
    """Linear -> norm -> tanh -> Linear -> ReLU -> norm -> tanh -> Linear, trained-looking
    (random affine parameters and running statistics)."""
    make = (lambda n: nn.BatchNorm1d(n)) if norm == "batch" else (lambda n: nn.LayerNorm(n))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), make(32), nn.Tanh(), nn.Linear(32, 24), nn.ReLU(),
                          make(24), nn.Tanh(), nn.Linear(24, 4))
    x = torch.randn(128, 8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))  # gamma of either sign, beta far from 0
        model.train()(x)
    return model.eval()


def _max_gap(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def test_flipping_gamma_and_beta_not_the_producer_is_the_symmetry_of_a_layer_norm():
    """By hand, no spec: with a LayerNorm between Linear and tanh, negating one unit's
    norm weight and bias and its outgoing column keeps the function; negating its
    producer row and bias instead (and the outgoing column) does not (the norm's
    statistics change, and beta is not odd)."""
    model = _normed_tanh_mlp("layer")
    x = torch.randn(64, 8)
    after, before = copy.deepcopy(model), copy.deepcopy(model)
    sign = torch.ones(32)
    sign[[3, 17]] = -1.0
    with torch.no_grad():
        for m, first in ((after, 1), (before, 0)):
            m[first].weight.mul_(sign if first else sign[:, None])
            m[first].bias.mul_(sign)
            m[3].weight.mul_(sign[None])
        ref = model(x)
        assert float((after(x) - ref).abs().max()) < 1e-5
        assert float((before(x) - ref).abs().max()) > 1e-2


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_signed_permuted_copy_through_norm_layers_aligns_back_exactly(norm):
    model = _normed_tanh_mlp(norm)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(256, 8, generator=g)
    spec = permutation_spec(model, x[:2])
    assert spec.odd == {"0", "3"} and spec.sign_from == {"0": "1", "3": "5"}
    signed = {(ax.name, ax.axis) for ax in spec.signed_axes("0")}
    assert signed == {("1.weight", 0), ("1.bias", 0), ("3.weight", 1)}  # not 0.* nor stats
    perms, signs = random_permutation(spec, g), random_signs(spec, g)
    copy_b = permute_model(model, spec, perms, signs)
    assert _max_gap(copy_b, model) > 0.1
    with torch.no_grad():
        assert float((copy_b(x) - model(x)).abs().max()) < 1e-5
        if norm == "batch":  # batch statistics: the flip is exact in train mode too
            diff = copy_b.train()(x) - model.train()(x)
            model.eval(), copy_b.eval()
            assert float(diff.abs().max()) < 1e-5
    for how in ("weight", "activation"):
        _, aligned = align(model, copy_b, how, (x, torch.zeros(256, dtype=torch.long)),
                           spec=spec, signs=True)
        assert _max_gap(aligned, model) < 1e-6, how
        with torch.no_grad():
            assert float((aligned(x) - model(x)).abs().max()) < 1e-5
    _, unsigned = align(model, copy_b, "weight", spec=spec)
    assert _max_gap(unsigned, model) > 0.1


def test_which_norm_placements_keep_the_sign_symmetry():
    x = torch.randn(4, 6)

    def odd(*layers: nn.Module) -> set[str]:
        return permutation_spec(nn.Sequential(nn.Linear(6, 10), *layers, nn.Linear(10, 3)),
                                x).odd

    assert odd(nn.ReLU(), nn.BatchNorm1d(10), nn.Tanh()) == {"0"}  # anything before the norm
    assert odd(nn.BatchNorm1d(10)) == {"0"}  # nothing after it: gamma and beta flip y
    assert odd(nn.LayerNorm(10), nn.ReLU()) == set()  # not odd after the norm
    assert odd(nn.LayerNorm(10), nn.Tanh(), nn.LayerNorm(10)) == set()  # two norms

    class Skip(nn.Module):  # a path around the norm: the flip of gamma does not reach it
        def __init__(self):
            super().__init__()
            self.a, self.n, self.b = nn.Linear(6, 10), nn.LayerNorm(10), nn.Linear(10, 3)

        def forward(self, x):
            h = self.a(x)
            return self.b(torch.tanh(self.n(h)) + torch.tanh(h))

    spec = permutation_spec(Skip(), x)
    assert "a" in spec.groups and spec.odd == set()
    for model in (nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.BatchNorm1d(10), nn.Tanh(),
                                nn.Linear(10, 3)), Skip()):
        model.eval()
        assert check_spec(model, permutation_spec(model, x), x)


# ----------------------------------------------------------------- signs in OT matching
def test_ot_with_signs_recovers_a_flipped_copy_exactly():
    torch.manual_seed(0)
    model = _tanh_mlp().eval()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 8, generator=g)
    spec = permutation_spec(model, x[:2])
    copy_b = permute_model(model, spec, random_permutation(spec, g), random_signs(spec, g))
    aligned, plans = ot_align(model, copy_b, signs=True, return_plans=True)
    assert _max_gap(aligned, model) == 0.0  # gathers and exact sign flips
    with torch.no_grad():
        assert float((aligned(x) - model(x)).abs().max()) < 1e-5
    for plan in plans:
        assert bool((plan < 0).any())  # flipped pairs carry a negative sign
        torch.testing.assert_close(plan.abs().sum(0), torch.full((plan.shape[1],),
                                   1 / plan.shape[0], dtype=torch.float64))
    assert _max_gap(ot_align(model, copy_b), model) > 0.1  # unsigned OT cannot undo flips
    # a soft plan with signs stays close to the flipped copy's function
    soft = ot_align(model, copy_b, method="sinkhorn", reg=0.002, signs=True)
    with torch.no_grad():
        assert float((soft(x) - model(x)).abs().max()) < 0.05
    # ReLU layers have no sign symmetry: signs=True changes nothing
    relu = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    relu_b = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    for p, q in zip(ot_plans(relu, relu_b, signs=True), ot_plans(relu, relu_b), strict=True):
        assert torch.equal(p, q)


def test_compare_alignment_with_signs_takes_the_flipped_copy_to_distance_zero():
    torch.manual_seed(0)
    model = _tanh_mlp().eval()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 8, generator=g)
    spec = permutation_spec(model, x[:2])
    copy_b = permute_model(model, spec, random_permutation(spec, g), random_signs(spec, g))
    signed = compare_alignment(model, copy_b, spec=spec, signs=True)
    plain = compare_alignment(model, copy_b, spec=spec)
    assert signed.attrs["signs"] == 1 and plain.attrs["signs"] == 0
    assert float(signed["distance"].sel(alignment="aligned")) < 1e-5
    assert float(plain["distance"].sel(alignment="aligned")) > 0.5
