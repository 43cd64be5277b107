"""ReLU positive rescaling: function preserved, canonical forms of an orbit agree."""

from __future__ import annotations

import pytest
import torch

from lossatlas import models
from lossatlas.symmetry import (
    apply_rescaling,
    canonical_rescaling,
    permutation_spec,
    random_rescaling,
    rescale_canonical,
)


@pytest.mark.parametrize("name,kw", [("mlp", {"hidden": (32, 16)}), ("cnn", {"channels": (8, 8)})])
def test_canonical_form_of_a_rescaled_copy_is_the_same(name, kw):
    torch.manual_seed(0)
    model = models.create(name, **kw).double().eval()
    x = model.example_input(8).double()
    spec = permutation_spec(model, x)
    assert spec.rescalable == set(spec.groups)
    scales = random_rescaling(spec, generator=torch.Generator().manual_seed(1))
    state = apply_rescaling(spec, model.state_dict(), scales)
    rescaled = models.create(name, **kw).double().eval()
    rescaled.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(rescaled(x), model(x), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(state["features.0.weight" if name == "cnn" else "layers.0.weight"],
                              model.state_dict()["features.0.weight" if name == "cnn"
                                                 else "layers.0.weight"])
    ca, _ = canonical_rescaling(spec, model.state_dict())
    cb, _ = canonical_rescaling(spec, state)
    for k in ca:
        torch.testing.assert_close(ca[k], cb[k], rtol=1e-7, atol=1e-9)
    canon = rescale_canonical(model, spec)
    with torch.no_grad():
        torch.testing.assert_close(canon(x), model(x), rtol=1e-10, atol=1e-10)
    # balanced: incoming and outgoing norms of every unit agree
    w_in = canon.state_dict()
    g = next(iter(spec.rescalable))
    n = spec.sizes[g]
    sq = {"in": torch.zeros(n, dtype=torch.float64), "out": torch.zeros(n, dtype=torch.float64)}
    for ax in spec.groups[g]:
        sq[ax.role] += w_in[ax.name].movedim(ax.axis, 0).reshape(n, -1).pow(2).sum(1)
    torch.testing.assert_close(sq["in"], sq["out"], rtol=1e-6, atol=1e-12)


def test_batchnorm_and_tied_groups_are_not_rescalable():
    spec = permutation_spec(models.create("resnet20"))
    assert spec.rescalable == set()
    with pytest.raises(KeyError, match="not rescalable"):
        apply_rescaling(spec, {}, {"conv1": torch.ones(16)})
