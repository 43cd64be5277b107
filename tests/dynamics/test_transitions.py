import numpy as np
import pytest

from lossatlas.dynamics import detect_all, detect_transitions, grokking_onset, lead_time


def test_planted_step_found_at_index():
    hits = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x = rng.normal(0, 1, 120)
        x[70:] += 4.0
        ts = detect_transitions(x, metric="acc")
        assert len(ts) == 1
        t = ts[0]
        hits += abs(t.index - 70) <= 1
        assert t.metric == "acc"
        assert t.size == pytest.approx(4.0, abs=0.6)
        assert t.confidence > 0.99
    assert hits == 20


def test_two_planted_steps_and_uneven_steps():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.5, 150)
    x[40:] += 3.0
    x[100:] -= 5.0
    steps = np.unique(np.geomspace(1, 1e5, 400).round())[:150]
    ts = detect_transitions(x, steps=steps)
    assert [t.index for t in ts] == pytest.approx([40, 100], abs=1)
    assert ts[0].size > 0 > ts[1].size
    assert ts[0].step == steps[ts[0].index]
    assert ts[0].step_before == steps[ts[0].index - 1]


def test_false_alarm_rate_on_noise():
    alarms = sum(
        len(detect_transitions(np.random.default_rng(s).normal(0, 1, 100))) > 0
        for s in range(100)
    )
    assert alarms <= 5


def test_errors_name_the_culprit():
    with pytest.raises(ValueError, match="non-finite"):
        detect_transitions(np.array([0.0, np.nan, 1.0, 2.0, 3.0, 4.0]), metric="loss")
    with pytest.raises(ValueError, match="steps"):
        detect_transitions(np.zeros(10), steps=np.arange(9))


def test_detect_all_ignores_smooth_trend_details():
    steps = np.arange(200.0)
    loss = np.exp(-steps / 50) + np.random.default_rng(0).normal(0, 1e-3, 200)
    out = detect_all({"loss": loss}, steps=steps)
    assert 1 <= len(out["loss"]) <= 8


def test_grokking_onset_and_lead_time():
    steps = np.arange(0, 3000, 10.0)
    train = np.clip(steps / 200, 0, 1)
    val = 1 / (1 + np.exp(-(steps - 2000) / 50))
    onset = grokking_onset(steps, val, train)
    assert onset["grokked"]
    assert onset["train_fit_step"] == pytest.approx(200, abs=10)
    assert onset["onset_step"] == pytest.approx(2000, abs=10)
    signal = np.where(steps < 1200, 1.0, 3.0) + 0.01 * np.random.default_rng(0).normal(size=300)
    signal[20:30] = 20.0  # the memorisation spike is not the warning
    lt = lead_time(steps, signal, onset["onset_step"], onset["train_fit_step"])
    assert lt["rise_step"] == pytest.approx(1200, abs=10)
    assert lt["lead_time"] == pytest.approx(800, abs=20)
    flat = grokking_onset(steps, np.zeros_like(steps), train)
    assert not flat["grokked"] and flat["onset_step"] is None
