"""Weight and activation matching: exact recovery of permuted copies, and the barrier
reduction between independently trained MLPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossatlas import models
from lossatlas.connectivity import barrier
from lossatlas.symmetry import (
    activation_matching,
    compare_alignment,
    match_weights,
    permutation_spec,
    permute_model,
    random_permutation,
    weight_matching,
)

CASES = {
    "mlp": {"hidden": (64, 64)},
    "cnn": {"channels": (16, 16)},
    "resnet20": {"num_classes": 10},
}


def _few_steps(model: nn.Module, x: torch.Tensor, steps: int = 5) -> nn.Module:
    """A few SGD steps on random labels: breaks the initial symmetries of BatchNorm."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the one-thread fixture
    model.train()
    for _ in range(steps):
        y = torch.randint(0, 10, (x.shape[0],), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module", params=sorted(CASES))
def permuted_pair(request):
    name = request.param
    torch.manual_seed(0)
    model = models.create(name, **CASES[name])
    x = model.example_input(16)
    if name == "resnet20":
        x = torch.randn(16, 3, 16, 16)  # any size works (global average pooling)
    _few_steps(model, x)
    spec = permutation_spec(model)
    perms = random_permutation(spec, torch.Generator().manual_seed(1))
    return name, model, permute_model(model, spec, perms), spec, perms


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_weight_matching_recovers_a_permuted_copy_exactly(permuted_pair):
    name, a, b, spec, perms = permuted_pair
    assert not _state_equal(a, b)
    aligned, found = weight_matching(a, b, spec=spec, return_perms=True)
    assert _state_equal(a, aligned)
    for g, p in perms.items():  # b's unit i is a's unit p[i]: the inverse maps it back
        assert torch.equal(found[g], torch.argsort(p))
    x = a.example_input(32)
    data = (x, torch.randint(0, 10, (32,)))
    assert barrier(a, aligned, data, points=5, device="cpu") == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        assert torch.allclose(aligned(x), b(x), atol=1e-5)  # same function as model_b


def test_activation_matching_recovers_a_permuted_copy(permuted_pair):
    name, a, b, spec, _ = permuted_pair
    x = a.example_input(256 if name != "resnet20" else 64)
    aligned = activation_matching(a, b, (x, torch.zeros(len(x))), spec=spec)
    assert _state_equal(a, aligned)


def test_match_weights_rejects_mismatched_states():
    a = models.create("mlp", hidden=(8,))
    b = models.create("mlp", hidden=(9,))
    spec = permutation_spec(a)
    with pytest.raises(ValueError, match="layers.0"):
        match_weights(spec, a.state_dict(), b.state_dict())


@pytest.fixture(scope="module")
def wide_pair(digits, train):
    x, y = digits.x_train, digits.y_train
    torch.manual_seed(0)
    a = train(models.create("mlp", in_features=64, hidden=(512, 512)), x, y, steps=300, seed=0)
    torch.manual_seed(1)
    b = train(models.create("mlp", in_features=64, hidden=(512, 512)), x, y, steps=300, seed=1)
    return a, b


def test_weight_matching_lowers_the_barrier_between_trained_mlps(wide_pair, digits):
    a, b = wide_pair
    train_data = (digits.x_train, digits.y_train)
    before = barrier(a, b, train_data)
    aligned = weight_matching(a, b)
    after = barrier(a, aligned, train_data)
    print(f"\nMLP 64-512-512-10 on digits (train): loss barrier {before:.4f} -> {after:.4f}")
    assert before > 0.1
    assert after < 0.5 * before
    with torch.no_grad():
        assert torch.allclose(aligned(digits.x_test), b(digits.x_test), atol=1e-4)
    table = compare_alignment(a, b, (digits.x_test, digits.y_test), points=11)
    print(table.to_dataframe().to_string())
    assert table["distance"].sel(alignment="aligned") < table["distance"].sel(alignment="none")
    assert table["loss_barrier"].sel(alignment="aligned") < 0.5 * table["loss_barrier"].sel(
        alignment="none")


def test_forward_start_recovers_a_wide_untrained_resnet():
    """Identity-started coordinate descent can stall on wide untrained nets; the
    default forward start recovers the permutation exactly."""
    torch.manual_seed(0)
    a = models.create("resnet20", width=4).eval()
    spec = permutation_spec(a)
    perms = random_permutation(spec, torch.Generator().manual_seed(1))
    b = permute_model(a, spec, perms)
    found = match_weights(spec, a.state_dict(), b.state_dict())
    assert all(torch.equal(found[g], torch.argsort(p)) for g, p in perms.items())
