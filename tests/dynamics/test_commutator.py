import numpy as np
import torch
from torch import nn

from lossatlas.dynamics import commutator_defect, first_order_difference, sgd_commutator
from lossatlas.dynamics.commutator import _loss_of, _norm


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x = torch.randn(64, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    return model, x, y


def test_first_order_form_matches_exact_as_eta_goes_to_zero():
    model, x, y = _setup()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    loss = _loss_of(model, {}, lambda o, t: nn.functional.cross_entropy(o, t))
    a, b = (x[:32], y[:32]), (x[32:], y[32:])
    rel = []
    for eta in (1e-1, 1e-2, 1e-3):
        exact, _, _ = sgd_commutator(loss, params, a, b, eta)
        first, _, _ = first_order_difference(loss, params, a, b, eta)
        diff = {k: exact[k] - first[k] for k in exact}
        rel.append(float(_norm(diff) / _norm(first)))
    assert rel[2] < 1e-2
    assert rel[0] > rel[1] > rel[2]
    # linear in eta: each factor 10 in eta gives about a factor 10 in the error
    assert 5 < rel[1] / rel[2] < 20


def test_defect_is_functional_and_reports_both_forms():
    model, x, y = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = commutator_defect(model, (x, y), eta=1e-4, num_pairs=4, batch_size=16,
                            first_order=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert out["defects"].shape == (4,)
    assert np.isfinite(out["defect"]) and out["defect"] > 0
    assert abs(out["defect"] - out["defect_first_order"]) / out["defect_first_order"] < 1e-2
    again = commutator_defect(model, (x, y), eta=1e-4, num_pairs=4, batch_size=16)
    assert again["defect"] == out["defect"]  # same seed, same pairs
