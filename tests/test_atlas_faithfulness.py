"""Faithfulness that can fail: overlays measured at decoded projected points, included
overlays, held-out checkpoints, and the map with and without the residual correction."""

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from lossatlas import Atlas, Evaluator, Population


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    return x[:300], torch.tensor(d.target)[:300]


def _gd_checkpoints(x, y, seed: int, steps: int, every: int, start: int, lr: float = 0.5):
    """Checkpoints of one full-batch gradient-descent run of a small MLP: a smooth,
    monotone descent along one valley."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    out = []
    for step in range(1, steps + 1):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        if step >= start and step % every == 0:
            out.append(copy.deepcopy(m))
    return out


@pytest.fixture(scope="module")
def one_valley(digits):
    x, y = digits
    models = _gd_checkpoints(x, y, 0, 300, 20, 200)
    return Population.from_models(models, [{"variant": "A", "seed": 0, "epoch": i}
                                           for i in range(len(models))])


def test_the_correction_does_not_make_a_basin_at_every_model(one_valley, digits, tmp_path):
    """Checkpoints of one descent share one basin: the corrected map (which pins every
    model to its own loss) must show one basin, as the uncorrected one does."""
    atlas = Atlas(one_valley, digits, tmp_path / "run")
    atlas.embed("ae", dim=2)
    atlas.field(resolution=12, budget=250)
    atlas.topology()
    assert atlas.summary()["basins"]["num_model_basins"] == 1
    raw = atlas.raw_check(resolution=12)
    assert raw["raw"]["num_model_basins"] == 1
    assert raw["corrected"]["num_model_basins"] == 1
    assert (tmp_path / "run" / "raw_check.json").exists()


@pytest.fixture(scope="module")
def two_runs(digits):
    x, y = digits
    models, labels = [], []
    for v, seed in enumerate((1, 2)):
        ms = _gd_checkpoints(x, y, seed, 240, 40, 80)
        models += ms
        labels += [{"variant": "AB"[v], "seed": seed, "epoch": i} for i in range(len(ms))]
    return Population.from_models(models, labels)


def test_overlay_reports_the_loss_at_decoded_projected_points(two_runs, digits, tmp_path):
    pop = two_runs
    kept, held = pop.holdout(0.25, seed=1)
    # the held-out models also serve as "included" points in a second map
    atlas = Atlas(kept, digits, tmp_path / "run")
    atlas.embed("ae", dim=2)
    atlas.field(resolution=10, budget=150)
    atlas.topology()
    pts = held.as_points()
    ov = atlas.overlay(pts, "holdout")
    # the independent computation: encode, decode, evaluate with a fresh evaluator
    ev = Evaluator(pop.model(0), digits)
    true = ev.evaluate(pts)["loss"].double().numpy()
    decoded = ev.evaluate(atlas.decode(atlas.encode(pts)))["loss"].double().numpy()
    np.testing.assert_allclose(ov["true_loss"], true, rtol=1e-5)
    np.testing.assert_allclose(ov["projected_loss"], decoded, rtol=1e-4)
    assert ov["median_abs_error"] == pytest.approx(float(np.median(np.abs(decoded - true))),
                                                   rel=1e-4)
    assert ov["units"] == "nats" and "included_median_abs_error" not in ov
    # fitted into the map under the same name: the included error is reported too and is
    # measured at the fitted codes (not pinned by the correction, so it is not zero by
    # construction, but it is far smaller than the projection's)
    atlas2 = Atlas(kept, digits, tmp_path / "run2")
    atlas2.embed("ae", dim=2, include={"holdout": pts})
    assert atlas2.include_codes_["holdout"].shape == (len(pts), 2)
    assert len(atlas2.codes_) == len(kept)  # not population members
    atlas2.field(resolution=10, budget=150)
    atlas2.topology()
    ov2 = atlas2.overlay(pts, "holdout")
    inc = ev.evaluate(atlas2.decode(atlas2.include_codes_["holdout"]))["loss"].double().numpy()
    np.testing.assert_allclose(ov2["included_loss"], inc, rtol=1e-4)
    assert ov2["included_median_abs_error"] == pytest.approx(
        float(np.median(np.abs(inc - true))), rel=1e-4, abs=1e-7)
    assert ov2["included_median_abs_error"] <= ov["median_abs_error"]
    # the models' residual correction is pinned to zero at the included points (their
    # decoded points are the uncorrected map's), and the models stay exact
    z_inc = atlas2.include_codes_["holdout"]
    raw = atlas2.decode(z_inc, corrected=False)
    torch.testing.assert_close(atlas2.decode(z_inc), raw, rtol=0, atol=1e-5 * raw.abs().max())
    torch.testing.assert_close(atlas2.decode(atlas2.codes_), kept.as_points(), rtol=0,
                               atol=1e-4 * kept.as_points().abs().max())
    # the basins count only the population's models
    assert sum(sum(v.values()) for v in atlas2.summary()["basins"]["variants_per_basin"]) \
        == len(kept)


def test_holdout_split_is_deterministic_and_refuses_too_few(two_runs):
    a, b = two_runs.holdout(0.25, seed=3)
    c, d = two_runs.holdout(0.25, seed=3)
    assert [lab for lab in b.labels] == [lab for lab in d.labels]
    assert len(a) + len(b) == len(two_runs) and len(b) == round(0.25 * len(two_runs))
    with pytest.raises(ValueError, match="fewer than 3"):
        two_runs.holdout(0.9)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        two_runs.holdout(1.5)
