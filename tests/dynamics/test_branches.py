import numpy as np
import pytest
import torch
from torch import nn

from lossatlas.dynamics import find_branches, linear_cka, representations


def _cka_hsic(x, y):
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    kx, ky = x @ x.T, y @ y.T

    def hsic(k, l):  # noqa: E741
        return torch.trace(k @ h @ l @ h) / (n - 1) ** 2

    return float(hsic(kx, ky) / torch.sqrt(hsic(kx, kx) * hsic(ky, ky)))


def test_linear_cka_invariances_and_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.7 * x @ q) == pytest.approx(1.0, abs=1e-10)
    y = torch.randn(200, 7, generator=g, dtype=torch.float64)
    y2 = x[:, :4] @ torch.randn(4, 30, generator=g, dtype=torch.float64)
    assert linear_cka(x, y) == pytest.approx(_cka_hsic(x, y), abs=1e-10)
    assert linear_cka(x, y2) == pytest.approx(_cka_hsic(x, y2), abs=1e-10)  # n < q path too
    big = torch.randn(2000, 5, generator=g), torch.randn(2000, 5, generator=g)
    assert linear_cka(*big) < 0.05
    with pytest.raises(ValueError, match="rows"):
        linear_cka(x, y[:10])


def _data(n, shortcut_agrees, g):
    x = torch.randn(n, 6, generator=g)
    if shortcut_agrees:
        x[:, 1] = x[:, 0]
    return x


def _train(model, x, y, steps=300):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def _permuted(model):
    perm = torch.randperm(model[0].out_features, generator=torch.Generator().manual_seed(3))
    m = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2))
    with torch.no_grad():
        m[0].weight.copy_(model[0].weight[perm])
        m[0].bias.copy_(model[0].bias[perm])
        m[2].weight.copy_(model[2].weight[:, perm])
        m[2].bias.copy_(model[2].bias)
    return m


def test_permuted_copy_is_one_branch_and_shortcut_is_another():
    from lossatlas.connectivity import barrier

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    init = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2))
    # Rule A uses feature 0, rule B the shortcut feature 1; on the shared train set
    # x1 == x0, so both rules give the same labels there.
    xa = _data(400, False, g)
    xb = _data(400, False, g)
    a = _train(_permuted(_permuted(init)), xa, (xa[:, 0] > 0).long())
    b = _train(_permuted(_permuted(init)), xb, (xb[:, 1] > 0).long())
    shared = _data(400, True, g)
    y_shared = (shared[:, 0] > 0).long()
    held = _data(1000, False, g)
    for m in (a, b):
        assert (m(shared).argmax(1) == y_shared).float().mean() > 0.95
    bar = barrier(a, b, (shared, y_shared), points=11)
    assert bar < 0.1  # linearly connected on the shared training data
    models = [a, _permuted(a), b, _permuted(b)]
    bm = np.array([[0.0 if i // 2 == j // 2 else bar for j in range(4)] for i in range(4)])
    res = find_branches(models, (held, torch.zeros(len(held), dtype=torch.long)),
                        barrier_matrix=bm, barrier_threshold=0.1)
    assert res.basin.tolist() == [0, 0, 0, 0]
    assert res.num_branches == {0: 2}
    assert res.branch[0] == res.branch[1] != res.branch[2] == res.branch[3]
    assert res.distances[0, 1] == 0 and res.distances[0, 2] > 0.3
    assert res.separation[0]["ratio"] == float("inf")
    # CKA on the hidden layer: the permuted copy is the same representation
    reps_a = representations(a, held, ["1"])["1"]
    reps_p = representations(models[1], held, ["1"])["1"]
    assert linear_cka(reps_a, reps_p) == pytest.approx(1.0, abs=1e-6)
    cka = find_branches(models, (held, held[:, 0]), metric="cka", layers=["1", "output"])
    assert cka.num_branches == {0: 2}
    # A model of another basin is never in these branches
    res2 = find_branches(models, (held, held[:, 0]), basins=[0, 0, 0, 1])
    assert res2.num_branches == {0: 2, 1: 1}
    assert res2.branch[3] not in res2.branch[:3]
    with pytest.raises(KeyError, match="no module named"):
        representations(a, held, ["nope"])


def test_branches_report_on_a_population(tmp_path):
    from lossatlas.dynamics import branches_report
    from lossatlas.population import Population

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    init = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2))
    x = _data(300, False, g)
    a = _train(_permuted(_permuted(init)), x, (x[:, 0] > 0).long(), steps=100)
    pop = Population.from_models([a, _permuted(a)], labels=[{"variant": "A", "seed": 0},
                                                            {"variant": "B", "seed": 0}])
    out = branches_report(pop, (x, (x[:, 0] > 0).long()), out_dir=tmp_path)
    assert out["num_branches"] == {"0": 1}
    assert len(out["barrier_matrix"]) == 2
    assert (tmp_path / "branches.json").is_file()
