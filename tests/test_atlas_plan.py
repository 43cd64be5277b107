"""The atlas says what its field will compute before computing it (issue 17 item 1)."""

import logging
import math
import re

import pytest
import torch
from torch import nn

from lossatlas.atlas import Atlas
from lossatlas.population import Population

MODELS = 5


@pytest.fixture()
def atlas(tmp_path):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    models = []
    for _ in range(MODELS):
        m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        m.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.5 * torch.randn_like(p))
        models.append(m)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    a = Atlas(Population.from_models(models), (x, y), tmp_path / "run")
    return a.embed("pca", dim=2)


def test_plan_logged_with_its_numbers_before_the_field(atlas, caplog):
    res, budget = 6, 150
    with caplog.at_level(logging.INFO, logger="lossatlas"):
        field = atlas.field(resolution=res, budget=budget, tol=0.01)
    lines = [r.getMessage() for r in caplog.records if r.name == "lossatlas.atlas"]
    plan = next(m for m in lines if m.startswith("atlas plan:"))
    first = res * res + MODELS
    # the base grid, the models, the budget and the refinement, counted by hand
    assert f"base grid {res}x{res} = {res * res} points + {MODELS} model codes" in plan
    assert f"budget {budget}: at most {budget} points" in plan
    # rounds of at most 4096 points: one spends the budget
    rounds = math.ceil((budget - first) / 4096)
    assert f"{first} first, then up to {budget - first} in refinement rounds of at most " \
           f"4,096 ({rounds} or more to spend the budget" in plan
    assert field.n <= budget and field.rounds >= 1
    # the plan came before the estimate, which came from a measured chunk
    estimate = next(m for m in lines if m.startswith("atlas estimate:"))
    assert lines.index(plan) < lines.index(estimate)
    pts, secs = re.search(r"first chunk of ([\d,]+) points in ([\d.]+) s", estimate).groups()
    assert 0 < int(pts.replace(",", "")) <= first and float(secs) >= 0
    assert f"for {budget} points" in estimate
    # and stored with the stage's time
    stored = atlas.run.read()["stages"]["field"]["plan"]
    assert (stored["base"], stored["extra"], stored["max_points"], stored["rounds"]) == (
        res * res, MODELS, budget, rounds)
    assert stored["estimated_seconds"] > 0


def test_plan_on_the_console_with_a_progress_bar(atlas, capsys):
    atlas.field(resolution=5, budget=40, tol=0.01, refine=False, progress=True)
    err = capsys.readouterr().err
    assert "atlas plan: base grid 5x5 = 25 points + 5 model codes; budget 40: at most 30 " \
           "points, no refinement" in err
    assert "atlas estimate: first chunk of" in err


def test_plan_silent_without_a_bar(atlas, capsys):
    atlas.field(resolution=5, budget=40, refine=False, progress=False)
    assert "plan" not in capsys.readouterr().err


def test_estimate_leaves_out_the_first_chunks_warm_up(caplog):
    """A first chunk slowed by compiling gives way to the second chunk's rate; a steady
    first chunk keeps its estimate."""
    from types import SimpleNamespace

    from lossatlas.atlas_field import _FieldClock

    plan = SimpleNamespace(max_points=100)
    with caplog.at_level(logging.INFO, logger="lossatlas"):
        clock = _FieldClock("atlas", plan, show=False)
        clock.chunk(10, 5.0)  # 10 points in 5 s, of which ~4.5 s compiling
        assert clock.estimate == pytest.approx(50.0)
        clock.chunk(10, 0.5)  # 20 points/s from now on
        assert clock.estimate == pytest.approx(5.0 + 90 / 20)
        clock.chunk(10, 0.1)  # later chunks change nothing
        assert clock.estimate == pytest.approx(9.5)
        steady = _FieldClock("atlas", plan, show=False)
        steady.chunk(10, 1.0)
        steady.chunk(10, 0.9)
        assert steady.estimate == pytest.approx(10.0)
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("after the warm-up" in m for m in msgs) == 1
    assert any("about 10 s for 100 points" in m for m in msgs)
