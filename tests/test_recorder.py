"""Tests of lossatlas.recorder: step schedules, checkpoints, metrics, population."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lossatlas.models import create
from lossatlas.recorder import Recorder, linear_steps, log_steps, read_jsonl, select_steps
from lossatlas.space import ParamSpace

KW = {"in_features": 2, "hidden": (8,), "num_classes": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a busy machine) with one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_linear_steps():
    assert linear_steps(100, 5) == [0, 25, 50, 75, 100]
    assert linear_steps(3, 10) == [0, 1, 2, 3]
    sched = select_steps("linear", every=10, total_steps=95)
    assert sched.steps == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    open_ended = select_steps("linear", every=7)
    assert open_ended.steps is None
    assert 0 in open_ended and 700 in open_ended and 701 not in open_ended
    assert select_steps([5, 1, 5, 0]).steps == [0, 1, 5]


def test_log_steps():
    steps = log_steps(1000, 10)
    assert steps[0] == 0 and steps[-1] == 1000
    assert len(steps) == 10 and steps == sorted(set(steps))
    assert all(isinstance(s, int) for s in steps)
    ratios = np.diff(np.log(steps[2:]))
    assert ratios.max() / ratios.min() < 3  # roughly geometric
    assert log_steps(5, 10) == [0, 1, 2, 3, 4, 5]
    small = log_steps(50, 20)
    assert len(small) == 20 and small[0] == 0 and small[-1] == 50
    assert select_steps("log", num=10, total_steps=1000).steps == steps


def test_schedule_errors():
    with pytest.raises(ValueError, match="total_steps"):
        select_steps("log", num=5)
    with pytest.raises(ValueError, match="'linear', 'log'"):
        select_steps("cubic", num=5, total_steps=10)
    with pytest.raises(ValueError, match="non-negative"):
        select_steps([1, -2])
    with pytest.raises(ValueError, match="metrics_at"):
        Recorder("x", metrics_at="sometimes")


def _train(rec: Recorder, total: int, start: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create("mlp", **KW)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
    rec.step(model, start, {"loss": F.cross_entropy(model(x), y)})
    for step in range(start + 1, total + 1):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.step(model, step, {"loss": loss.detach(), "lr": 0.1})
    return model


def test_recorder_in_a_training_loop(tmp_path):
    rec = Recorder(tmp_path, steps="log", num=8, total_steps=40,
                   metadata={"variant": "A", "seed": 3})
    model = _train(rec, 40)
    want = log_steps(40, 8)
    saved = sorted(int(p.stem[4:]) for p in (tmp_path / "checkpoints").glob("*.safetensors"))
    assert saved == want
    assert [p.name for p in rec.paths] == [f"step{s:07d}.safetensors" for s in want]
    side = json.loads((tmp_path / "checkpoints" / "step0000040.json").read_text())
    assert side == {"variant": "A", "seed": 3, "step": 40}
    rows = rec.metrics()
    assert [r["step"] for r in rows] == list(range(41))
    assert all(isinstance(r["loss"], float) for r in rows)
    assert all(r["lr"] == 0.1 for r in rows[1:])
    pop = rec.population("mlp", KW)
    assert len(pop) == len(want)
    assert [lab["step"] for lab in pop.labels] == want
    assert pop.trajectories() == {"A/seed3": list(range(len(want)))}
    assert torch.equal(pop.vector(-1), ParamSpace(model).flatten(model))


def test_restart_does_not_duplicate_metrics(tmp_path):
    _train(Recorder(tmp_path, every=5), 12)
    rec = Recorder(tmp_path, every=5)
    _train(rec, 12)
    assert [r["step"] for r in read_jsonl(rec.metrics_path)] == list(range(13))
    # a restart from a later step keeps the earlier lines
    rec = Recorder(tmp_path, every=5)
    _train(rec, 14, start=10)
    assert [r["step"] for r in read_jsonl(rec.metrics_path)] == list(range(15))
    # a torn last line (killed writer) is skipped
    with open(rec.metrics_path, "a") as f:
        f.write('{"step": 15, "lo')
    assert len(read_jsonl(rec.metrics_path)) == 15


def test_metrics_at_checkpoints_and_names(tmp_path):
    rec = Recorder(tmp_path, steps=[0, 3], metrics_at="checkpoints",
                   name="{variant}_s{seed}_it{step}", metadata={"variant": "V", "seed": 1},
                   metrics_file="m/run.jsonl")
    _train(rec, 5)
    assert [r["step"] for r in rec.metrics()] == [0, 3]
    assert (tmp_path / "m" / "run.jsonl").is_file()
    assert sorted(p.name for p in rec.paths) == ["V_s1_it0.safetensors", "V_s1_it3.safetensors"]
    bad = Recorder(tmp_path, steps=[0], name="{missing}_{step}")
    with pytest.raises(ValueError, match="missing"):
        bad.step(create("mlp", **KW), 0)
    with pytest.raises(ValueError, match="no checkpoint written"):
        Recorder(tmp_path, steps=[7]).population("mlp", KW)


def test_labels_and_metrics_go_through_the_one_json_rule(tmp_path):
    """Tensors, numpy values and paths are written as plain JSON, NaN/inf as null
    (``store.jsonable``), in the sidecar and in the metrics lines alike."""
    rec = Recorder(tmp_path, steps=[0], metadata={"where": tmp_path / "x", "seed": np.int64(4)})
    model = create("mlp", **KW)
    metrics = {"loss": torch.tensor(0.25), "nan": torch.tensor(float("nan")),
               "inf": np.float32("inf"), "vec": torch.tensor([1.0, float("nan")]),
               "arr": np.array([2, 3]), "acc": np.float64(0.5), "ok": np.bool_(True)}
    rec.step(model, 0, metrics, labels={"lr": np.float32(0.125)})
    side = json.loads((tmp_path / "checkpoints" / "step0000000.json").read_text())
    assert side == {"where": str(tmp_path / "x"), "seed": 4, "step": 0, "lr": 0.125}
    assert isinstance(side["seed"], int)
    (row,) = rec.metrics()
    assert row == {"step": 0, "lr": 0.125, "loss": 0.25, "nan": None, "inf": None,
                   "vec": [1.0, None], "arr": [2, 3], "acc": 0.5, "ok": True}
    assert "NaN" not in rec.metrics_path.read_text()
