"""population_terrain is curvature.terrain (computing) then write_terrain (claiming the
run, merging with the stored measures, writing zarr and JSON): the same files either
way, the eigenvalues those of the dense Hessian, a second measure merged in, and the
run of another population refused."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import full_hessian, tiny_data, tiny_mlp

from lossatlas.curvature import terrain
from lossatlas.curvature.population import population_terrain, write_terrain
from lossatlas.population import Population
from lossatlas.store import StaleResultError


def _pop(seeds=(0, 7)):
    models = [tiny_mlp(s, torch.float32) for s in seeds]
    return Population.from_models(models, labels=[{"variant": v} for v in "ABC"[:len(seeds)]])


def test_population_terrain_is_terrain_then_write_terrain(tmp_path):
    x, y = tiny_data()
    xy = (x.float(), y)
    pop = _pop()
    table = population_terrain(pop, xy, tmp_path / "a", measures=("eigenvalues",), k=2)
    assert table["models"] == ["A", "B"] and table["indices"] == [0, 1]
    for row, i in enumerate(table["indices"]):  # independent: the dense Hessian
        top = torch.linalg.eigvalsh(full_hessian(pop.model(i).double(), x, y)).flip(0)[:2]
        assert table["eigenvalues"][row] == pytest.approx(top.tolist(), rel=1e-4)

    models = [pop.model(i) for i in table["indices"]]
    ds = terrain(models, models[0], xy, measures=["eigenvalues"], k=2, labels=["A", "B"])
    out = tmp_path / "b"
    assert write_terrain(out, ds, [0, 1], population=pop) == table
    assert (json.loads((out / "terrain.json").read_text())
            == json.loads((tmp_path / "a" / "terrain.json").read_text()))
    assert (out / "fields" / "terrain.zarr").is_dir()

    tr = terrain(models, models[0], xy, measures=["trace"], num_probes=5, labels=["A", "B"])
    merged = write_terrain(out, tr, [0, 1])  # the run is claimed already
    assert merged["eigenvalues"] == table["eigenvalues"] and len(merged["trace"]) == 2
    assert json.loads((out / "terrain.json").read_text()) == merged


def test_write_terrain_refuses_bad_input(tmp_path):
    x, y = tiny_data()
    pop = _pop()
    models = [pop.model(0), pop.model(1)]
    ds = terrain(models, models[0], (x.float(), y), measures=["trace"], num_probes=3,
                 labels=["A", "B"])
    with pytest.raises(ValueError, match="2 models .* but 1 indices"):
        write_terrain(tmp_path, ds, [0])
    write_terrain(tmp_path, ds, [0, 1], population=pop)
    with pytest.raises(StaleResultError):
        write_terrain(tmp_path, ds, [0, 1], population=_pop((1, 2, 3)))
    fresh = write_terrain(tmp_path, ds, [0, 1], population=_pop((1, 2, 3)), overwrite=True)
    assert fresh["models"] == ["A", "B"]
