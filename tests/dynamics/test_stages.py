import numpy as np
import pytest
from torch import nn

from lossatlas.dynamics import llc_stages, stage_boundaries


def test_critical_points_of_a_cubic_over_log_step():
    u = np.linspace(0, np.log(1e4), 90)
    steps = np.exp(u)
    values = -(u - 2) * (u - 4) * (u - 6)  # extrema at 4 -+ 2/sqrt(3)
    noisy = values + np.random.default_rng(0).normal(0, 0.05, u.size)
    for smoothing in ("savgol", "gaussian"):
        res = stage_boundaries(steps, noisy, smoothing=smoothing, width=0.6)
        kinds = [b["kind"] for b in res.boundaries]
        assert kinds == ["min", "max"], (smoothing, res.boundaries)
        got = np.log(res.boundary_steps)
        assert got == pytest.approx([4 - 2 / np.sqrt(3), 4 + 2 / np.sqrt(3)], abs=0.2)


def test_plateau_end_and_uneven_steps():
    rng = np.random.default_rng(1)
    steps = np.unique(np.exp(rng.uniform(0, 10, 70)).round())
    u = np.log(steps)
    values = np.where(u < 5, 1.0, 1.0 + 2 * np.tanh(u - 5))
    res = stage_boundaries(np.r_[0.0, steps], np.r_[1.0, values], width=0.5)
    assert res.boundaries[0]["kind"] == "plateau_end"
    assert np.log(res.boundaries[0]["step"]) == pytest.approx(5.0, abs=0.4)


def test_llc_stages_with_a_stub_estimator():
    u = np.linspace(0, np.log(5000), 40)
    curve = np.sin(u)  # maximum at pi/2, minimum at 3 pi/2 (within range up to 8.5)
    models = [nn.Linear(1, 1) for _ in u]
    for m, v in zip(models, curve, strict=True):
        m.llc_value = float(v)
    res = llc_stages(np.exp(u), models, estimate=lambda m: m.llc_value,
                     stage_kwargs={"width": 0.5})
    assert res.values == pytest.approx(curve)
    assert [b["kind"] for b in res.boundaries][:2] == ["max", "min"]
    assert np.log(res.boundary_steps[:2]) == pytest.approx([np.pi / 2, 3 * np.pi / 2], abs=0.25)
