"""connect_population (what `lossatlas connect --population` runs): the barrier matrix of
the final model of each run, named by variant, each entry connectivity.barrier of the
pair; the run is claimed for the population."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lossatlas.connectivity import barrier
from lossatlas.connectivity.population import connect_population
from lossatlas.population import Population
from lossatlas.store import StaleResultError


def _pop(offset=0):
    models, labels = [], []
    for v, variant in enumerate("AB"):
        for epoch in (0, 1):
            torch.manual_seed(offset + 10 * v + epoch)
            models.append(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)))
            labels.append({"variant": variant, "seed": 0, "epoch": epoch})
    return Population.from_models(models, labels=labels)


def test_connect_population_is_the_pairwise_barrier_of_the_final_models(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    xy = (x, (x[:, 0] > 0).long())
    pop = _pop()
    res = connect_population(pop, xy, tmp_path, points=5)
    assert res["names"] == ["A", "B"] and "after" not in res
    a, b = (pop.model(i) for i in pop.final_indices())  # epoch 1 of A and of B
    assert pop.final_indices() == [1, 3]
    want = barrier(a, b, xy, points=5)
    assert res["before"][0][1] == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert res["before"][1][0] == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert json.loads((tmp_path / "connectivity.json").read_text()) == res
    with pytest.raises(StaleResultError):
        connect_population(_pop(offset=100), xy, tmp_path, points=5)
    again = connect_population(_pop(offset=100), xy, tmp_path, points=5, overwrite=True)
    assert again["names"] == ["A", "B"]
