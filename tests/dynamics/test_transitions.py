"""Phase transitions are abrupt changes against a smooth trend (issue 15, item 6).

Every curve is generated here with a fixed seed. Targets: at most 2 of 20 smooth decays
flagged per family; a sharp sigmoid jump riding on a decay found within 5 checkpoints
of its centre in at least 18 of 20.
"""

import numpy as np
import pytest

from lossatlas.dynamics import (
    Transition,
    detect_all,
    detect_transitions,
    grokking_onset,
    lead_time,
    rise_step,
)


def _exp_decay(rng, n=100, multiplicative=False):
    t = np.arange(n, dtype=float)
    a, tau, c = rng.uniform(1, 3), rng.uniform(0.05, 0.5) * n, rng.uniform(0.05, 0.5)
    y = c + a * np.exp(-t / tau)
    if multiplicative:  # 1 % of the value: noisier early, like a real loss
        return y * (1 + 0.01 * rng.standard_normal(n))
    return y + 0.01 * a * rng.standard_normal(n)  # 1 % of the decay's amplitude


def _power_decay(rng, n=100):
    t = np.arange(1, n + 1, dtype=float)
    a, b, t0, c = rng.uniform(1, 3), rng.uniform(0.3, 1.5), rng.uniform(0.5, 10), rng.uniform(0, .5)
    y = c + a * (t + t0) ** -b
    return y + 0.01 * (y[0] - y[-1]) * rng.standard_normal(n)


def _nine_checkpoints(rng):
    return _exp_decay(rng, 9) if rng.uniform() < 0.5 else _power_decay(rng, 9)


@pytest.mark.parametrize("family", ["exp", "exp-multiplicative", "power", "nine-checkpoint"])
def test_smooth_decays_have_no_transition(family):
    make = {"exp": _exp_decay, "exp-multiplicative": lambda r: _exp_decay(r, multiplicative=True),
            "power": _power_decay, "nine-checkpoint": _nine_checkpoints}[family]
    flagged = [s for s in range(20) if detect_transitions(make(np.random.default_rng(s)))]
    assert len(flagged) <= 2, flagged


def _jump_on_decay(rng, n=100):
    """A sigmoid of 10 noise standard deviations, 10-90 % span 1.3-4.4 checkpoints."""
    t = np.arange(n, dtype=float)
    a, tau = rng.uniform(1, 3), rng.uniform(0.1, 0.5) * n
    sd = 0.01 * a
    mu, w = rng.uniform(20, 80), rng.uniform(0.3, 1.0)
    h = 10 * sd * rng.choice([-1, 1])
    y = 0.2 + a * np.exp(-t / tau) + h / (1 + np.exp(-(t - mu) / w))
    return y + sd * rng.standard_normal(n), mu, w, h


def test_sharp_jump_on_a_decay_is_found_with_size_width_and_confidence():
    hits = 0
    for seed in range(20):
        y, mu, w, h = _jump_on_decay(np.random.default_rng(seed))
        ts = detect_transitions(y, metric="loss")
        near = [t for t in ts if abs(t.location - mu) <= 5]
        hits += bool(near)
        if near:
            t = near[0]
            assert t.metric == "loss" and t.index == int(np.ceil(t.location))
            assert np.sign(t.size) == np.sign(h)
            assert t.size == pytest.approx(h, rel=0.35)
            assert t.width < 8  # checkpoints (10-90 % span); true 4.39 w <= 4.4
            assert t.delta_bic > 10 and t.confidence > 0.99 and t.p_value < 0.01
            assert t.trend
    assert hits >= 18


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
        assert t.size == pytest.approx(4.0, abs=0.8)
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
    assert steps[ts[0].index - 1] <= ts[0].location_step <= steps[ts[0].index]


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
    assert detect_transitions(np.ones(50)) == []  # constant: nothing to detect


def test_detect_all_smooth_loss_has_none_and_a_jump_is_placed_past_nans():
    steps = np.arange(200.0)
    rng = np.random.default_rng(0)
    loss = np.exp(-steps / 50) + rng.normal(0, 1e-3, 200)
    jumped = loss + 0.05 * (steps >= 120)
    jumped[[10, 30]] = np.nan  # dropped, indices stay those of the full series
    out = detect_all({"loss": loss, "jumped": jumped}, steps=steps)
    assert out["loss"] == []
    (t,) = out["jumped"]
    assert isinstance(t, Transition) and t.metric == "jumped"
    assert t.index == 120 and t.step == 120.0
    assert t.size == pytest.approx(0.05, abs=0.01)


def test_rise_step_finds_a_rise_riding_on_a_slow_trend():
    steps = np.arange(0, 3100, 100.0)
    rng = np.random.default_rng(2)
    log_defect = 0.15 + 0.0001 * steps + 0.5 / (1 + np.exp(-(steps - 1150) / 60))
    rise = rise_step(steps, 10 ** (log_defect + 0.01 * rng.standard_normal(steps.size)))
    assert rise["step"] == 1200.0  # first checkpoint past the centre (1150)
    assert rise["transition"].size == pytest.approx(0.5, abs=0.1)  # in log10 units


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
