"""The lead-time law: the fit recovers a known exponent (checked against scipy's
regression), its interval covers the truth at about the stated rate, and the sweep and
interventions report what their runs measured."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from lossatlas.checkpoints import load_state_dict
from lossatlas.dynamics import (
    fit_lead_time_law,
    grokking_interventions,
    lead_time_sweep,
    onset_effect,
)
from lossatlas.dynamics import lead_law as lead_law_module

ALPHA, C = 1.18, 0.02


def _synthetic(n: int, sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    onsets = np.geomspace(300, 30000, n)
    return onsets, C * onsets**ALPHA * np.exp(sigma * rng.standard_normal(n))


def test_noise_free_law_is_exact():
    onsets, leads = _synthetic(6, 0.0, 0)
    law = fit_lead_time_law(onsets, leads, num_bootstrap=50)
    assert law.exponent == pytest.approx(ALPHA, abs=1e-10)
    assert law.prefactor == pytest.approx(C, rel=1e-8)
    assert law.r2 == pytest.approx(1.0)
    np.testing.assert_allclose(law.predict(onsets), leads, rtol=1e-8)


def test_noisy_fit_recovers_the_exponent_and_matches_scipy():
    onsets, leads = _synthetic(15, 0.1, 1)
    law = fit_lead_time_law(onsets, leads, num_bootstrap=1000, seed=0)
    ref = stats.linregress(np.log(onsets), np.log(leads))
    assert law.exponent == pytest.approx(ref.slope, abs=1e-10)
    assert law.exponent_se == pytest.approx(ref.stderr, rel=1e-8)
    assert law.prefactor == pytest.approx(np.exp(ref.intercept), rel=1e-8)
    assert law.r2 == pytest.approx(ref.rvalue**2, rel=1e-8)
    assert abs(law.exponent - ALPHA) < 0.08
    for lo, hi in (law.exponent_ci, law.exponent_ci_bootstrap):
        assert lo < ALPHA < hi and hi - lo < 0.3
    assert json.loads(json.dumps(law.to_dict()))["num_points"] == 15


def test_interval_covers_the_truth_at_its_level():
    hits = 0
    for seed in range(200):
        law = fit_lead_time_law(*_synthetic(8, 0.2, 100 + seed), num_bootstrap=1)
        hits += law.exponent_ci[0] <= ALPHA <= law.exponent_ci[1]
    assert 0.90 <= hits / 200 <= 0.99  # nominal 0.95; binomial sd 0.015


def test_bad_pairs_are_refused_by_index():
    with pytest.raises(ValueError, match=r"pairs \[1\]"):
        fit_lead_time_law([100, 200, 300], [5, -1, 30])
    with pytest.raises(ValueError, match="2 distinct onsets"):
        fit_lead_time_law([100, 100], [5, 6])
    with pytest.raises(ValueError, match="level"):
        fit_lead_time_law([100, 200, 300], [5, 6, 7], level=1.5)


def test_onset_effect():
    assert onset_effect(1050, 590) == {"onset_change": -460.0, "onset_ratio": 590 / 1050,
                                       "direction": "earlier"}
    assert onset_effect(1000, 1500)["direction"] == "later"
    assert onset_effect(1000, None)["direction"] == "no onset"
    assert onset_effect(None, 500)["direction"] == "baseline without onset"


def test_sweep_fits_the_law_of_its_runs(tmp_path, monkeypatch):
    """run_grokking replaced by a stub with known onsets and leads: the sweep's law is the
    direct fit of those pairs; runs without an onset or with a negative lead are left out."""
    truth = {(47, 1.0): (800.0, 30.0), (47, 2.0): (400.0, 13.0), (59, 1.0): (1200.0, 50.0),
             (59, 2.0): (None, None), (71, 1.0): (2000.0, 95.0), (71, 2.0): (900.0, -20.0)}
    calls = []

    def fake_run(out_dir, p, weight_decay, seed, defect, progress, **kw):
        calls.append((p, weight_decay, seed, defect, kw))
        onset, lead = truth[(p, weight_decay)]
        return SimpleNamespace(
            onset={"onset_step": onset, "train_fit_step": 100.0, "grokked": onset is not None},
            defect_rise=None if lead is None else {"step": onset - lead},
            lead_time=lead, final_val_accuracy=0.99, seconds=1.0, out_dir=Path(out_dir),
            steps=np.array([0.0, 10.0, 20.0]), metrics={"weight_norm": np.array([1.0, 3.0, 2.0])})

    monkeypatch.setattr(lead_law_module, "run_grokking", fake_run)
    summary = lead_time_sweep(tmp_path, moduli=(47, 59, 71), weight_decays=(1.0, 2.0),
                              steps=123, num_bootstrap=200)
    default_rise = {"method": "threshold"}
    assert len(calls) == 6 and all(c[3] and c[4] == {"steps": 123, "rise_kwargs": default_rise}
                                   for c in calls)
    used = [v for v in truth.values() if v[0] is not None and v[1] > 0]
    direct = fit_lead_time_law([u[0] for u in used], [u[1] for u in used], num_bootstrap=200)
    assert summary["num_used"] == 4
    assert (summary["num_runs"], summary["num_grokked"], summary["num_rise"]) == (6, 5, 5)
    assert summary["num_rise_after_onset"] == 1  # (71, 2.0): the defect rose after the onset
    assert all(r["weight_norm_peak_step"] == 10.0 for r in summary["runs"])
    rose = [v for v in truth.values() if v[1] is not None]  # rise step = onset - lead
    ref = stats.linregress([o for o, _ in rose], [o - lead for o, lead in rose])
    line = summary["rise_vs_onset"]
    assert line["num_points"] == 5 and line["slope"] == pytest.approx(ref.slope, abs=1e-12)
    assert line["r"] == pytest.approx(ref.rvalue, abs=1e-12)
    assert summary["law"]["exponent"] == pytest.approx(direct.exponent, abs=1e-12)
    assert summary["law"]["exponent_ci"] == pytest.approx(list(direct.exponent_ci))
    assert json.loads((tmp_path / "lead_time_law.json").read_text())["num_used"] == 4
    assert (tmp_path / "lead_time_law.png").stat().st_size > 0
    with pytest.raises(TypeError, match="'p' is set by the sweep"):
        lead_time_sweep(tmp_path, p=5)


def test_interventions_freeze_the_embedding_and_raise_weight_decay(tmp_path):
    torch.set_num_threads(1)
    rep = grokking_interventions(
        tmp_path, weight_decay=1.0, weight_decay_factor=3.0, p=11, train_fraction=0.5,
        steps=20, num_checkpoints=2, eval_every=10, defect=False,
        model_kwargs={"d_embed": 8, "hidden": 16})
    assert set(rep["runs"]) == {"baseline", "stronger_weight_decay", "frozen_embedding"}
    cfg = {name: json.loads((tmp_path / name / "grokking.json").read_text())["config"]
           for name in rep["runs"]}
    assert cfg["stronger_weight_decay"]["weight_decay"] == 3.0
    assert cfg["frozen_embedding"]["freeze_embedding"] and cfg["baseline"]["weight_decay"] == 1.0

    def embed(name: str, step: int) -> torch.Tensor:
        return load_state_dict(tmp_path / name / "checkpoints" / f"step{step:07d}.safetensors")[
            "embed.weight"]

    assert torch.equal(embed("frozen_embedding", 0), embed("frozen_embedding", 20))
    assert not torch.equal(embed("baseline", 0), embed("baseline", 20))
    assert torch.equal(embed("baseline", 0), embed("frozen_embedding", 0))  # same init
    for name, eff in rep["effects"].items():
        assert eff == onset_effect(rep["runs"]["baseline"]["onset_step"],
                                   rep["runs"][name]["onset_step"])
    assert json.loads((tmp_path / "interventions.json").read_text())["effects"] == rep["effects"]
