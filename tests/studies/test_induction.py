"""Induction heads: the tiny preset plateaus near the bigram loss, then drops as an
induction head forms, and an LLC stage boundary falls within three checkpoints of the
drop; the recorded numbers equal direct computations.

The tiny preset (500 Adam steps, 14 checkpoints) measured on a loaded 2-core CPU
(load ~12-19, one thread, seed 0): bigram loss 3.11 nats, lowest loss before the drop
2.85, final 2.44 (repeated positions 3.62 -> 0.75); induction score 0.06 -> 0.81,
half-way up at step 288; LLC 1.2-1.3 on the plateau, 3.1 at step 261, 5.4 at the end;
one LLC boundary, the plateau end at step 191, 1.3 checkpoints before the drop. This
file: 22 s on an idle core (28 s with start-up); 71 s of CPU time, 7.7 min wall, on
the shared 2-core machine at load ~19.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lossatlas.checkpoints import load_state_dict
from lossatlas.curvature import llc
from lossatlas.dynamics import commutator_defect, stage_boundaries
from lossatlas.models.transformer import Attention
from lossatlas.studies import (
    INDUCTION_CONFIGS,
    AttentionOnlyTransformer,
    attention_similarity,
    induction_data,
    induction_scores,
    run_induction_heads,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("induction")
        return out, run_induction_heads(out, "tiny", progress=False,
                                        defect_kwargs={"num_pairs": 2})
    finally:
        torch.set_num_threads(old)


def _model(summary, state) -> AttentionOnlyTransformer:
    cfg = summary["config"]
    m = AttentionOnlyTransformer(cfg["vocab_size"], cfg["seq_len"], cfg["d_model"],
                                 cfg["num_heads"])
    m.load_state_dict(state)
    return m


def _sets(summary):
    cfg = summary["config"]
    train = induction_data(cfg["num_train"], cfg["seq_len"], cfg["vocab_size"],
                           tuple(cfg["segment"]), seed=cfg["data_seed"])
    probe = induction_data(256, cfg["seq_len"], cfg["vocab_size"], tuple(cfg["segment"]),
                           seed=cfg["data_seed"] + 10_000, transition=train.transition)
    return train, probe


def test_plateau_then_induction_drop(study):
    out, s = study
    m = s["metrics"]
    assert abs(s["plateau_loss"] - s["bigram_loss"]) < 0.4  # the plateau is the bigram level
    assert s["final_loss"] < s["bigram_loss"] - 0.4
    assert m["copy_loss"][0] > 3.0 and m["copy_loss"][-1] < 1.5  # in-context copying learnt
    assert m["induction_score"][0] < 0.15 and s["final_induction_score"] > 0.5
    steps = s["config"]["steps"]
    assert s["drop_step"] is not None and steps / 10 < s["drop_step"] < steps
    i = m["step"].index(s["drop_step"])
    assert m["loss"][i] < m["loss"][0]
    assert json.loads((out / "induction.json").read_text()) == json.loads(json.dumps(s))
    assert (out / "induction.png").stat().st_size > 0


def test_llc_stage_boundary_at_the_drop(study):
    _, s = study
    assert s["boundary_offset_checkpoints"] is not None
    assert abs(s["boundary_offset_checkpoints"]) <= 3.0
    direct = stage_boundaries(s["checkpoint_steps"], s["llc"], **s["stage_kwargs"])
    assert [b["step"] for b in s["stages"]] == direct.boundary_steps
    ck, v = np.asarray(s["checkpoint_steps"]), np.asarray(s["llc"])
    assert v[ck > s["drop_step"]].mean() > 1.5 * v[(ck > 0) & (ck < s["drop_step"] / 2)].mean()


def test_recorded_numbers_equal_direct_computations(study):
    out, s = study
    train, probe = _sets(s)
    assert s["bigram_loss"] == pytest.approx(probe.bigram_loss)
    paths = sorted((out / "checkpoints").glob("*.safetensors"))
    assert len(paths) == len(s["checkpoint_steps"])
    model = _model(s, load_state_dict(paths[-1]))
    sub = (train.inputs[:1024], train.targets[:1024])
    assert llc(model, sub, **s["llc_kwargs"]).llc_mean == pytest.approx(s["llc"][-1],
                                                                          rel=1e-6)
    d = commutator_defect(model, sub, **s["defect_kwargs"])["defect"]
    assert d == pytest.approx(s["defect"][-1], rel=1e-9)
    # the induction score: an explicit loop over sequences and positions
    pats = model.attention_patterns(probe.inputs).detach()
    key = probe.induction_key
    total, count = np.zeros(pats.shape[2]), 0
    for n in range(key.shape[0]):
        for q in range(key.shape[1] - 1):
            if key[n, q] >= 0:
                total += pats[1, n, :, q, key[n, q]].double().numpy()
                count += 1
    assert s["final_induction_score"] == pytest.approx(float((total / count).max()), rel=1e-5)
    first = _model(s, load_state_dict(paths[0]))
    sim = attention_similarity(first.attention_patterns(probe.inputs[:128]).detach(),
                               pats[:, :128])
    np.testing.assert_allclose(sim, s["attention_similarity_final"][0], rtol=1e-6)


def test_pattern_attention_equals_the_model_zoo_attention():
    torch.manual_seed(0)
    m = AttentionOnlyTransformer(11, 9, 12, 3)
    x = m.example_input(4)
    h = m.embed(x) + m.pos.weight[:9]
    for layer in m.layers:
        torch.testing.assert_close(layer(h), Attention.forward(layer, h))
        h = h + layer(h)
    pats = m.attention_patterns(x)
    assert pats.shape == (2, 4, 3, 9, 9)
    torch.testing.assert_close(pats.sum(-1), torch.ones(2, 4, 3, 9))
    assert (pats.triu(1) == 0).all()  # causal


def test_induction_data_repeats_a_segment():
    d = induction_data(300, seq_len=20, vocab_size=7, segment=(3, 6), seed=3)
    toks, key = d.tokens, d.induction_key
    for n in range(300):
        qs = (key[n] >= 0).nonzero().flatten()
        assert 2 <= len(qs) <= 5  # segment length - 1 query positions
        for q in qs.tolist():
            k = int(key[n, q])
            assert k <= q and toks[n, k - 1] == toks[n, q] and toks[n, k] == toks[n, q + 1]
    logp = np.log(d.transition.numpy().astype(float))
    direct = -np.mean([logp[a, b] for a, b in zip(d.inputs.flatten().tolist(),
                                                  d.targets.flatten().tolist(), strict=True)])
    assert d.bigram_loss == pytest.approx(direct, rel=1e-6)
    torch.testing.assert_close(d.transition.sum(1), torch.ones(7))
    with pytest.raises(ValueError, match="2 \\* hi <= seq_len"):
        induction_data(4, seq_len=10, segment=(3, 6))
    with pytest.raises(ValueError, match="transition must be"):
        induction_data(4, seq_len=10, vocab_size=5, segment=(2, 3),
                       transition=torch.ones(4, 4) / 4)


def test_scores_and_similarity_on_known_patterns():
    a = torch.rand(2, 3, 4, 5, 5)
    b = torch.rand(2, 3, 4, 5, 5)
    an, bn = a.flatten(1).double().numpy(), b.flatten(1).double().numpy()
    ref = [float(an[i] @ bn[i] / np.linalg.norm(an[i]) / np.linalg.norm(bn[i])) for i in range(2)]
    np.testing.assert_allclose(attention_similarity(a, b), ref, rtol=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        attention_similarity(a, b[:, :2])
    # a model whose second layer attends exactly to the induction key scores 1
    data = induction_data(8, seq_len=12, vocab_size=9, segment=(3, 4), seed=1)

    class Oracle(AttentionOnlyTransformer):
        def attention_patterns(self, x):
            pats = torch.zeros(2, x.shape[0], 1, x.shape[1], x.shape[1])
            k = data.induction_key[:, :-1]
            for n, q in (k >= 0).nonzero().tolist():
                pats[1, n, 0, q, k[n, q]] = 1.0
            return pats

    scores = induction_scores(Oracle(9, 12, 4, 1), data)
    assert scores.shape == (2, 1) and scores[1, 0] == 1.0 and scores[0, 0] == 0.0


def test_bad_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="config must be one of"):
        run_induction_heads(tmp_path, "huge")
    with pytest.raises(TypeError, match="unknown options \\['widht'\\]"):
        run_induction_heads(tmp_path, "tiny", widht=3)
    assert set(INDUCTION_CONFIGS) == {"default", "tiny"}
