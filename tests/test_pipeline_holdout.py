"""build_atlas(holdout=fraction) is the CLI's --holdout as a library argument: the map is
fitted to the kept models, the held-out ones are overlaid, and the run records the whole
population (its fingerprint), exactly as a split done by hand with Population.holdout."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lossatlas.fingerprint import population_fingerprint
from lossatlas.pipeline import build_atlas
from lossatlas.population import Population


def _pop(n=8):
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        models.append(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    return Population.from_models(models, labels=[{"variant": "AB"[i % 2], "seed": i}
                                                  for i in range(n)])


def _build(pop, out, **kw):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=g)
    return build_atlas(pop, (x, (x[:, 0] > 0).long()), out, "pca", 2, 5, 30, 0.1, "0.1",
                       "cpu", "fp32", False, **kw)


def test_holdout_fraction_equals_the_split_by_hand(tmp_path):
    pop = _pop()
    _, summary = _build(pop, tmp_path / "lib", holdout=0.25)
    assert summary["models"] == 6 and summary["holdout_models"] == 2
    run = json.loads((tmp_path / "lib" / "run.json").read_text())
    assert run["population"]["fingerprint"] == population_fingerprint(pop)  # the whole one

    kept, held = pop.holdout(0.25)  # by hand (seed 0, as --holdout)
    _, manual = _build(kept, tmp_path / "hand", held_out=held)
    assert summary["holdout_median_abs_error"] == pytest.approx(
        manual["holdout_median_abs_error"], rel=1e-6)
    assert summary["basins"] == manual["basins"]

    with pytest.raises(ValueError, match="not both"):
        _build(pop, tmp_path / "both", holdout=0.25, held_out=held)
    with pytest.raises(ValueError, match="fewer than 3"):
        _build(_pop(4), tmp_path / "few", holdout=0.5)
