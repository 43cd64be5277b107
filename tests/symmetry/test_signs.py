"""Sign-flip symmetry of odd (tanh-like) units: which groups have it, signed
permutations preserve the function, and weight matching recovers a randomly
sign-flipped and permuted copy exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lossatlas.symmetry import (
    activation_matching,
    apply_permutation,
    check_spec,
    match_signed_weights,
    match_weights,
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


def test_norm_layers_max_pooling_and_offsets_break_the_sign_symmetry():
    x = torch.randn(4, 6)
    ln = nn.Sequential(nn.Linear(6, 10), nn.LayerNorm(10), nn.Tanh(), nn.Linear(10, 3))
    assert permutation_spec(ln, x).odd == set()
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
