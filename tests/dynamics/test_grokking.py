"""The built-in grokking run groks, and the commutator defect rises before the onset.

Configuration (measured on a loaded 2-core CPU: ~80-100 s): p=59, train fraction 0.4,
MLP (embeddings 64, hidden 256), AdamW lr 3e-3, wd 1, 3000 full-batch steps.
"""

import json

import numpy as np
import pytest
import torch

from lossatlas.dynamics import dynamics_report, plot_trajectory_transitions, run_grokking
from lossatlas.plotting import save_figure


@pytest.fixture(scope="module")
def grok(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("grok")
        return run_grokking(out, p=59, train_fraction=0.4, steps=3000, seed=0,
                            model_kwargs={"d_embed": 64, "hidden": 256},
                            num_checkpoints=31, eval_every=20)
    finally:
        torch.set_num_threads(threads)


def test_groks_late_and_defect_rises_first(grok):
    m = grok.metrics
    assert m["train_accuracy"][-1] > 0.99
    assert grok.final_val_accuracy > 0.9
    onset = grok.onset
    assert onset["grokked"]
    assert onset["train_fit_step"] <= 300
    assert onset["onset_step"] > 4 * onset["train_fit_step"] + 800  # well after the fit
    assert grok.lead_time is not None and grok.lead_time > 0
    assert grok.defect_rise["step"] < onset["onset_step"]
    summary = json.loads((grok.out_dir / "grokking.json").read_text())
    assert summary["lead_time"] == grok.lead_time
    assert len(grok.checkpoints) == len(grok.checkpoint_steps) == 31


def test_dynamics_report_reads_the_run(grok):
    rep = dynamics_report(grok.out_dir, representation=True, defect=False)
    entry = rep["runs"]["grok/seed0"]
    assert entry["onset"]["onset_step"] == grok.onset["onset_step"]
    n = entry["num_rows"]
    # the grokking rise spans ~90 rows: a smooth trend on the checkpoint scale; the
    # onset is grokking_onset's, not a "transition"; the smooth val loss has none
    assert entry["transitions"]["val_loss"] == []
    ups = [t for t in entry["transitions"]["val_accuracy"] if t["size"] > 0]
    assert all(t["step"] > grok.onset["train_fit_step"] for t in ups)
    found = [t for v in entry["transitions"].values() for t in v]
    for t in found:  # every reported change is abrupt and beats the trend
        assert t["width"] <= 8 and t["delta_bic"] > np.log(n) and t["trend"]
    assert len(entry["consecutive_cka"]) == 31
    assert (grok.out_dir / "dynamics.json").is_file()
    for f in entry["figures"]:
        assert f.endswith(".png")
        with open(f, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_trajectory_transitions(grok, tmp_path):
    from types import SimpleNamespace

    from lossatlas.population import Population

    pop = Population.from_run(grok.out_dir)
    codes = torch.as_tensor(np.c_[np.arange(len(pop)), np.sin(np.arange(len(pop)))]).float()
    atlas = SimpleNamespace(codes_=codes, population=pop)
    key = next(iter(pop.trajectories()))
    ax = plot_trajectory_transitions(atlas, {key: [3, 10]})
    assert ax is not None and save_figure(ax, tmp_path / "t.png").is_file()
    with pytest.raises(KeyError, match="unknown run"):
        plot_trajectory_transitions(atlas, {"nope": [1]})


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_freeze_embedding_keeps_every_embedding_at_its_init(tmp_path, model):
    from lossatlas.checkpoints import load_state_dict

    kw = {"d_embed": 8, "hidden": 16} if model == "mlp" else {
        "d_model": 16, "num_heads": 2, "d_mlp": 32}
    res = run_grokking(tmp_path, p=7, train_fraction=0.5, steps=12, model=model,
                       model_kwargs=kw, num_checkpoints=2, eval_every=6, defect=False,
                       freeze_embedding=True, weight_decay=1.0, progress=False)
    first, last = (load_state_dict(p) for p in (res.checkpoints[0], res.checkpoints[-1]))
    assert torch.equal(first["embed.weight"], last["embed.weight"])  # the token embedding
    others = [k for k in first if k != "embed.weight"]
    assert any(not torch.equal(first[k], last[k]) for k in others)  # the rest trained
    assert json.loads((tmp_path / "grokking.json").read_text())["config"]["freeze_embedding"]


def test_rise_kwargs_choose_how_the_defect_rise_is_found(tmp_path):
    from lossatlas.dynamics import lead_time

    rk = {"method": "threshold", "factor": 1.0, "baseline": 1}
    res = run_grokking(tmp_path, p=7, train_fraction=0.5, steps=12, num_checkpoints=6,
                       eval_every=2, model_kwargs={"d_embed": 4, "hidden": 8},
                       defect_kwargs={"num_pairs": 2, "batch_size": 4}, rise_kwargs=rk,
                       progress=False)
    direct = lead_time(res.checkpoint_steps, res.defect, res.onset["onset_step"],
                       res.onset["train_fit_step"], **rk)
    assert res.defect_rise["method"] == "threshold"
    assert res.defect_rise["step"] == direct["rise"]["step"]
    assert res.lead_time == direct["lead_time"]
    assert json.loads((tmp_path / "grokking.json").read_text())["config"]["rise_kwargs"] == rk
