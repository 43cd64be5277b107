"""branches_report reads a path through Population.open: a plain checkpoint folder works
(matched against factory=, or the model a train.json beside the checkpoints names) and
gives the same result as the same models passed in memory; a path that holds no
population is refused with PopulationSourceError naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lossatlas.dynamics import branches_report
from lossatlas.models import MODELS
from lossatlas.population import Population, PopulationSourceError

KWARGS = {"in_features": 4, "hidden": [8], "num_classes": 2}


def _folder(tmp_path):
    """Two MLP checkpoints (different seeds) in a plain folder, and held-out (x, y)."""
    folder = tmp_path / "ckpts"
    folder.mkdir()
    models = []
    for seed in range(2):
        torch.manual_seed(seed)
        net = MODELS.get("mlp")(**KWARGS)
        torch.save(net.state_dict(), folder / f"A_seed{seed}.pt")
        models.append(net)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return folder, models, (x, (x[:, 0] > 0).long())


def test_branches_report_on_a_checkpoint_folder_equals_the_in_memory_models(tmp_path):
    folder, models, data = _folder(tmp_path)
    mem = branches_report(Population.from_models(models, labels=[
        {"variant": "A", "seed": 0}, {"variant": "A", "seed": 1}]), data, final_only=False)
    got = branches_report(folder, data, factory="mlp", factory_kwargs=KWARGS,
                          final_only=False, out_dir=tmp_path)
    assert np.abs(np.asarray(mem["distances"])).max() > 0.01  # two different models
    np.testing.assert_allclose(got["distances"], mem["distances"], atol=1e-6)
    np.testing.assert_allclose(got["barrier_matrix"], mem["barrier_matrix"], atol=1e-6)
    assert got["num_branches"] == mem["num_branches"]
    assert json.loads((tmp_path / "branches.json").read_text()) == got
    # no factory given: the model the folder's train.json names
    (folder / "train.json").write_text(json.dumps({"model": "mlp", "model_kwargs": KWARGS}))
    named = branches_report(folder, data, final_only=False)
    np.testing.assert_allclose(named["distances"], mem["distances"], atol=1e-6)
    assert (folder / "branches.json").is_file()  # written beside the population


def test_branches_report_refuses_what_is_no_population(tmp_path):
    folder, _, data = _folder(tmp_path)
    with pytest.raises(ValueError, match="model factory"):
        branches_report(folder, data)  # checkpoints, no factory, no train.json
    with pytest.raises(PopulationSourceError, match="nothing_here"):
        branches_report(tmp_path / "nothing_here", data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PopulationSourceError, match="holds no checkpoints"):
        branches_report(tmp_path / "empty", data, factory="mlp", factory_kwargs=KWARGS)
