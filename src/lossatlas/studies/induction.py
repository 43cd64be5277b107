"""Developmental stages of a small transformer: the bigram plateau, then induction heads.

A two-layer attention-only transformer (:class:`AttentionOnlyTransformer`) learns
next-token prediction on synthetic sequences (:func:`induction_data`): tokens follow a
random Markov chain (so a *bigram* solution pays), and in every sequence one segment of
``segment`` tokens is repeated later at a random place (so in-context copying pays,
but only by content: the offsets vary, no positional shortcut exists). Training first
reaches the bigram loss (:attr:`InductionData.bigram_loss`), stays near it, then drops
as *induction heads* form: a second-layer head attending from a token to the token
after its previous occurrence (Olsson et al. 2022), composed with a first-layer
previous-token head.

Recorded along training: the loss on held-out sequences (all positions, and on the
repeated positions alone), the induction score (:func:`induction_scores`), and at every
checkpoint the local learning coefficient (:func:`lossatlas.curvature.llc`), the
commutator defect (:func:`lossatlas.dynamics.defect_along`) and the similarity of the
attention patterns to the previous and the final checkpoint
(:func:`attention_similarity`). Stage boundaries come from the LLC curve
(:func:`lossatlas.dynamics.stage_boundaries`, Hoogland et al. 2024).

Run directory (``run_induction_heads``)::

    OUT/run.json             config, stage timings (lossatlas.store.Run)
    OUT/metrics.jsonl        step, loss, copy_loss, other_loss, induction_score per row
    OUT/checkpoints/step*.safetensors (+ .json)   checkpoints (:func:`checkpoint_steps`)
    OUT/induction.json       summary (see :func:`run_induction_heads`)
    OUT/induction.png        loss, induction score, LLC with the stage boundaries

Measured (seed 0, one thread of an idle CPU core): the "default" preset (2000 Adam steps,
30 checkpoints) takes 90 s (training 21 s, LLC 64 s, defect 4.5 s). Bigram loss 3.10
nats; the held-out loss reaches it by step ~140 (3.10; the plateau, repeated positions
at 2.9), then drops to 2.29 (repeated positions 3.65 -> 0.46; the others rise slightly,
3.22 -> 3.33) as the induction score rises 0.045 -> 0.75 (half-way at step 283). The LLC grows slowly
1.4 -> 4.0 up to step 246, jumps to 6.5 at 283 and 7.7 at 325, then stays at 7.5-8.0;
the one LLC boundary (plateau end) is at step 230, 1.5 checkpoints before the drop.
The commutator defect is ~0.5 on the plateau and rises to ~1.4 across the drop (from
step 214 on). The "tiny" preset (500 steps, 14 checkpoints; 22 s for its test file on
an idle core): drop at step 288, boundary at
191 (1.3 checkpoints before). The same holds at lr 3e-3 (default preset, drop at step
600, boundary at 476, 1.7 checkpoints before).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InputTypeError
from ..models.transformer import Attention
from ..progress import progress_bar
from ..recorder import Recorder
from ..store import Run, atomic_write_json

__all__ = [
    "INDUCTION_CONFIGS",
    "AttentionOnlyTransformer",
    "checkpoint_steps",
    "InductionData",
    "attention_similarity",
    "induction_data",
    "induction_heads_study",
    "induction_scores",
    "plot_induction",
    "run_induction_heads",
]

log = logging.getLogger(__name__)


class _PatternAttention(Attention):
    """Causal multi-head self-attention that can return its attention pattern."""

    def pattern(self, x: Tensor) -> Tensor:
        """Attention probabilities ``Tensor[N, H, T, T]`` (query, key) of ``x [N, T, D]``."""
        t = x.shape[-2]
        q, k = (
            proj(x).unflatten(-1, (self.num_heads, self.d_head)).transpose(-3, -2)
            for proj in (self.q, self.k)
        )
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)

    def forward(self, x: Tensor, pattern: Tensor | None = None) -> Tensor:
        a = self.pattern(x) if pattern is None else pattern
        v = self.v(x).unflatten(-1, (self.num_heads, self.d_head)).transpose(-3, -2)
        return self.o((a @ v).transpose(-3, -2).flatten(-2))


class AttentionOnlyTransformer(nn.Module):
    """Token + learned positional embedding, ``num_layers`` residual attention layers
    (no MLPs, no normalisation inside), a final LayerNorm and a linear unembedding.

    Input ``LongTensor[N, T]`` (``T <= seq_len``); output logits ``Tensor[N, T, vocab_size]``.
    """

    def __init__(
        self, vocab_size: int, seq_len: int, d_model: int = 32, num_heads: int = 2,
        num_layers: int = 2,
    ) -> None:
        super().__init__()
        self.vocab_size, self.seq_len = int(vocab_size), int(seq_len)
        self.embed = nn.Embedding(self.vocab_size, d_model)
        self.pos = nn.Embedding(self.seq_len, d_model)
        self.layers = nn.ModuleList(
            [_PatternAttention(d_model, num_heads) for _ in range(int(num_layers))]
        )
        self.ln = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, self.vocab_size)

    def _run(self, x: Tensor, keep: bool) -> tuple[Tensor, list[Tensor]]:
        h = self.embed(x) + self.pos.weight[: x.shape[-1]]
        patterns = []
        for layer in self.layers:
            a = layer.pattern(h)
            if keep:
                patterns.append(a)
            h = h + layer(h, a)
        return self.unembed(self.ln(h)), patterns

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, keep=False)[0]

    def attention_patterns(self, x: Tensor) -> Tensor:
        """``Tensor[num_layers, N, H, T, T]`` attention probabilities (query, key)."""
        return torch.stack(self._run(x, keep=True)[1])

    def example_input(self, batch_size: int = 2) -> Tensor:
        return torch.randint(0, self.vocab_size, (batch_size, self.seq_len))


@dataclass(frozen=True)
class InductionData:
    """Sequences with one repeated segment each.

    Attributes
    ----------
    tokens : LongTensor[N, T]
    induction_key : LongTensor[N, T]
        For a position ``q`` inside the repeat (not its last token), the position of
        the token after ``q``'s token's earlier occurrence (where an induction head
        looks, and the position whose token comes next); -1 elsewhere.
    transition : Tensor[V, V]     the Markov chain's transition probabilities
    """

    tokens: Tensor
    induction_key: Tensor
    transition: Tensor

    @property
    def inputs(self) -> Tensor:
        """``LongTensor[N, T-1]``: the tokens but the last."""
        return self.tokens[:, :-1]

    @property
    def targets(self) -> Tensor:
        """``LongTensor[N, T-1]``: the next tokens."""
        return self.tokens[:, 1:]

    @property
    def copy_mask(self) -> Tensor:
        """``BoolTensor[N, T-1]``: input positions whose next token is a copy."""
        return self.induction_key[:, :-1] >= 0

    @property
    def bigram_loss(self) -> float:
        """Mean cross-entropy (nats) over all target positions of the *bigram solution*
        (predicting ``transition[previous token]``): the plateau's level."""
        logp = torch.log(self.transition.clamp_min(1e-30))
        return float(-logp[self.inputs, self.targets].double().mean())


def induction_data(
    num_sequences: int,
    seq_len: int = 32,
    vocab_size: int = 32,
    segment: tuple[int, int] = (8, 10),
    alpha: float = 1.0,
    seed: int = 0,
    transition: Tensor | None = None,
) -> InductionData:
    """Markov-chain sequences, each with one segment repeated later.

    Parameters
    ----------
    num_sequences, seq_len, vocab_size : N, T, V
    segment : (lo, hi) inclusive range of the repeated segment's length; needs
        ``2 * hi <= seq_len``
    alpha : Dirichlet concentration of each transition row (smaller: sparser rows, a
        lower bigram loss)
    seed : seeds the chain (unless ``transition``) and the sequences
    transition : Tensor[V, V], optional; reuse another set's chain (a held-out set)

    Returns
    -------
    InductionData
    """
    lo, hi = (int(v) for v in segment)
    if not 2 <= lo <= hi or 2 * hi > int(seq_len):
        raise ValueError(
            f"induction_data: segment must be (lo, hi) with 2 <= lo <= hi and 2 * hi <= "
            f"seq_len {seq_len}, got {segment}"
        )
    if int(num_sequences) < 1 or int(vocab_size) < 2:
        raise ValueError(
            f"induction_data: need num_sequences >= 1 and vocab_size >= 2, got "
            f"{num_sequences} and {vocab_size}"
        )
    n, t_len, v = int(num_sequences), int(seq_len), int(vocab_size)
    if transition is None:
        rng = np.random.default_rng(int(seed))
        transition = torch.tensor(rng.dirichlet(np.full(v, float(alpha)), size=v),
                                  dtype=torch.float32)
    elif tuple(transition.shape) != (v, v):
        raise ValueError(
            f"induction_data: transition must be [{v}, {v}], got {tuple(transition.shape)}"
        )
    gen = torch.Generator().manual_seed(int(seed) + 1)
    toks = torch.empty(n, t_len, dtype=torch.long)
    toks[:, 0] = torch.randint(v, (n,), generator=gen)
    for t in range(1, t_len):
        toks[:, t] = torch.multinomial(transition[toks[:, t - 1]], 1, generator=gen)[:, 0]
    length = torch.randint(lo, hi + 1, (n,), generator=gen)
    src = (torch.rand(n, generator=gen) * (t_len - 2 * length + 1)).long()
    dst = src + length + (torch.rand(n, generator=gen) * (t_len - src - 2 * length + 1)).long()
    k = torch.arange(t_len)[None] - dst[:, None]  # offset inside the repeat
    inside = (k >= 0) & (k < length[:, None])
    toks = torch.where(inside, toks.gather(1, (src[:, None] + k).clamp(0, t_len - 1)), toks)
    key = torch.where(inside & (k < length[:, None] - 1), src[:, None] + k + 1,
                      torch.full_like(toks, -1))
    return InductionData(toks, key, transition)


def induction_scores(model: AttentionOnlyTransformer, data: InductionData) -> np.ndarray:
    """Mean attention from each repeated token to the token after its earlier
    occurrence, ``ndarray[num_layers, num_heads]`` (probability, 0-1; about
    ``1 / position`` for uniform attention)."""
    key = data.induction_key[:, :-1]
    mask = key >= 0
    with torch.no_grad():
        pats = model.attention_patterns(data.inputs)  # [L, N, H, T, T]
    idx = key.clamp_min(0)[None, :, None, :, None].expand(*pats.shape[:-1], 1)
    at_key = pats.gather(-1, idx)[..., 0]  # [L, N, H, T]
    m = mask[None, :, None, :].expand_as(at_key)
    return ((at_key * m).sum((1, 3)) / m.sum((1, 3))).double().numpy()


def attention_similarity(a: Tensor, b: Tensor) -> np.ndarray:
    """Cosine similarity per layer of two attention-pattern tensors
    ``[L, N, H, T, T]`` (same probe inputs), ``ndarray[L]`` in [0, 1]."""
    if a.shape != b.shape:
        raise ValueError(f"attention_similarity: shapes differ, {tuple(a.shape)} vs "
                         f"{tuple(b.shape)}")
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    return (F.cosine_similarity(fa, fb, dim=1)).numpy()


#: Presets: "default" (minutes on a CPU) and "tiny" (seconds; the test's).
INDUCTION_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {
        "vocab_size": 32, "seq_len": 32, "d_model": 32, "num_heads": 2, "segment": (10, 14),
        "steps": 2000, "lr": 1e-2, "batch_size": 64, "num_train": 8192, "num_checkpoints": 30,
        "llc_draws": 100, "llc_chains": 4,
    },
    "tiny": {
        "vocab_size": 32, "seq_len": 24, "d_model": 32, "num_heads": 2, "segment": (8, 10),
        "steps": 500, "lr": 1e-2, "batch_size": 32, "num_train": 4096, "num_checkpoints": 14,
        "llc_draws": 40, "llc_chains": 2,
    },
}


def checkpoint_steps(total_steps: int, num: int) -> list[int]:
    """Step 0, then about ``num - 1`` log-spaced steps from ``total_steps / 50`` to
    ``total_steps`` (the first 2 % of training, before any structure, is skipped)."""
    if num < 4:
        raise ValueError(f"checkpoint_steps: num must be >= 4 (stage finding needs 4), got {num}")
    first = max(1, total_steps // 50)
    return sorted({0} | {int(round(s)) for s in np.geomspace(first, total_steps, num - 1)})


def _drop_step(steps: np.ndarray, score: np.ndarray) -> float | None:
    """First step where the induction score is above half-way from its initial to its
    largest value (None if it never rises by 0.1)."""
    lo, hi = float(score[0]), float(np.max(score))
    if hi - lo < 0.1:
        return None
    return float(steps[int(np.flatnonzero(score >= lo + 0.5 * (hi - lo))[0])])


def _eval_row(model: AttentionOnlyTransformer, probe: InductionData) -> dict[str, float]:
    with torch.no_grad():
        out = model(probe.inputs)
        ce = F.cross_entropy(out.flatten(0, 1), probe.targets.flatten(), reduction="none")
        ce = ce.view_as(probe.targets)
    m = probe.copy_mask
    scores = induction_scores(model, probe)
    return {"loss": float(ce.mean()), "copy_loss": float(ce[m].mean()),
            "other_loss": float(ce[~m].mean()), "induction_score": float(scores[1:].max()),
            "induction_scores": scores.tolist()}


def run_induction_heads(
    out_dir: str | Path,
    config: str = "default",
    *,
    seed: int = 0,
    data_seed: int = 0,
    eval_every: int | None = None,
    llc_kwargs: dict[str, Any] | None = None,
    defect_kwargs: dict[str, Any] | None = None,
    stage_kwargs: dict[str, Any] | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train the attention-only transformer, record its development, find LLC stages.

    Parameters
    ----------
    out_dir : run directory (created)
    config : a preset of :data:`INDUCTION_CONFIGS` ("default" or "tiny")
    seed : initialisation and mini-batch seed; data_seed : the chain and sequences
    eval_every : a metrics row every this many steps (default ``steps // 40``)
    llc_kwargs : passed to :func:`lossatlas.curvature.llc` (default epsilon 1e-3,
        gamma 100, the preset's chains and draws, batch size 32, on 1024 training
        sequences)
    defect_kwargs : passed to :func:`lossatlas.dynamics.commutator_defect` (default
        ``eta=lr, num_pairs=4, batch_size=32``)
    stage_kwargs : passed to :func:`lossatlas.dynamics.stage_boundaries` (default
        width 0.3 and plateau_tol 2.0: "flat" is a slope below twice the curve's mean
        slope over log-step, so the LLC's jump at the transition is the one stage
        change and its start a ``plateau_end`` boundary; with the default 0.05 the
        slow LLC growth before the jump is not flat and no boundary marks the jump)
    progress : tqdm bars over training and checkpoints (see lossatlas.progress)
    **overrides : any key of the preset (vocab_size, seq_len, d_model, num_heads,
        segment, steps, lr, batch_size, num_train, num_checkpoints, llc_draws,
        llc_chains)

    Returns
    -------
    JSON-able dict: ``config``; ``bigram_loss`` (nats, the plateau's level);
    ``metrics`` (lists over rows: step, loss, copy_loss, other_loss, induction_score);
    ``checkpoint_steps``; ``llc`` / ``llc_std`` (per checkpoint); ``defect`` (per
    checkpoint); ``attention_similarity_prev`` / ``attention_similarity_final``
    (per checkpoint, lists over layers); ``stages`` (the LLC stage boundaries, dicts
    with step, kind, value); ``drop_step`` (step where the induction score is half-way
    up, None if it never rises); ``nearest_boundary_step`` / ``boundary_offset_checkpoints``
    (the LLC boundary nearest the drop in log-step, and its position minus the drop's
    in checkpoint indices, interpolated: negative when the LLC boundary comes first);
    ``plateau_loss`` (lowest probe loss before the drop), ``final_loss``,
    ``final_induction_score``; ``paths``.
    """
    from ..checkpoints import load_state_dict
    from ..curvature import llc
    from ..dynamics import defect_along, stage_boundaries
    from ..surfaces.plot import save_figure

    if config not in INDUCTION_CONFIGS:
        raise ValueError(f"run_induction_heads: config must be one of {sorted(INDUCTION_CONFIGS)}, "
                         f"got {config!r}")
    unknown = set(overrides) - set(INDUCTION_CONFIGS[config])
    if unknown:
        raise InputTypeError(f"run_induction_heads: unknown options {sorted(unknown)}; the preset "
                        f"keys are {sorted(INDUCTION_CONFIGS[config])}")
    cfg = {**INDUCTION_CONFIGS[config], **overrides}
    steps = int(cfg["steps"])
    if steps < 20:
        raise ValueError(f"run_induction_heads: steps must be >= 20, got {steps}")
    every = int(eval_every or max(1, steps // 40))
    cfg.update({"study": "induction_heads", "preset": config, "seed": int(seed),
                "data_seed": int(data_seed), "eval_every": every, "optimizer": "adam",
                "segment": list(cfg["segment"]), "loss": "cross-entropy (nats)"})
    out = Path(out_dir)
    run = Run(out, config=cfg)
    t0 = time.perf_counter()
    train = induction_data(cfg["num_train"], cfg["seq_len"], cfg["vocab_size"],
                           tuple(cfg["segment"]), seed=data_seed)
    probe = induction_data(256, cfg["seq_len"], cfg["vocab_size"], tuple(cfg["segment"]),
                           seed=data_seed + 10_000, transition=train.transition)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = AttentionOnlyTransformer(cfg["vocab_size"], cfg["seq_len"], cfg["d_model"],
                                         cfg["num_heads"])
    rec = Recorder(out, steps=checkpoint_steps(steps, int(cfg["num_checkpoints"])),
                   metadata={"variant": "induction", "seed": int(seed)})
    if rec.metrics_path.exists():
        rec.metrics_path.unlink()  # a fresh run
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))
    gen = torch.Generator().manual_seed(int(seed))
    x, y = train.inputs, train.targets
    for step in progress_bar(range(steps + 1), progress=progress, desc="induction: train",
                             unit="step"):
        if step % every == 0 or rec.wants(step):
            rec.step(model, step, _eval_row(model, probe))
        if step == steps:
            break
        idx = torch.randint(len(x), (int(cfg["batch_size"]),), generator=gen)
        loss = F.cross_entropy(model(x[idx]).flatten(0, 1), y[idx].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    run.record_stage("train", time.perf_counter() - t0)

    t1 = time.perf_counter()
    rows = rec.metrics()
    ck_steps = np.array([int(s) for s in rec.schedule.steps or [] if s <= steps], dtype=float)
    states = [load_state_dict(p) for p in rec.paths]
    sub = (x[:1024], y[:1024])
    lk = {"epsilon": 1e-3, "gamma": 100.0, "num_chains": int(cfg["llc_chains"]),
          "num_draws": int(cfg["llc_draws"]), "batch_size": 32, "seed": 0, **(llc_kwargs or {})}
    ck_model = AttentionOnlyTransformer(cfg["vocab_size"], cfg["seq_len"], cfg["d_model"],
                                        cfg["num_heads"])
    llcs, llc_std, patterns = [], [], []
    for state in progress_bar(states, progress=progress, desc="induction: LLC", unit="ckpt"):
        ck_model.load_state_dict(state)
        est = llc(ck_model, sub, **lk)
        llcs.append(est.llc_mean)
        llc_std.append(est.llc_std)
        with torch.no_grad():
            patterns.append(ck_model.attention_patterns(probe.inputs[:128]))
    run.record_stage("llc", time.perf_counter() - t1)
    t2 = time.perf_counter()
    dk = {"eta": float(cfg["lr"]), "num_pairs": 4, "batch_size": 32, **(defect_kwargs or {})}
    defect = defect_along(ck_model, states, sub, **dk)
    run.record_stage("defect", time.perf_counter() - t2)
    sim_prev = [[1.0] * len(patterns[0])] + [
        attention_similarity(patterns[i - 1], patterns[i]).tolist()
        for i in range(1, len(patterns))
    ]
    sim_final = [attention_similarity(p, patterns[-1]).tolist() for p in patterns]
    sk = {"width": 0.3, "plateau_tol": 2.0, **(stage_kwargs or {})}
    stages = stage_boundaries(ck_steps, np.asarray(llcs), **sk)

    m_steps = np.array([r["step"] for r in rows], dtype=float)
    score = np.array([r["induction_score"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    drop = _drop_step(m_steps, score)
    nearest, offset = None, None
    if drop is not None and stages.boundaries:
        nearest = min(stages.boundary_steps, key=lambda s: abs(math.log(s) - math.log(drop)))
        pos = np.log(np.maximum(ck_steps, 1.0))
        offset = (float(np.interp(math.log(nearest), pos, np.arange(len(pos))))
                  - float(np.interp(math.log(drop), pos, np.arange(len(pos)))))
    before = loss[m_steps < drop] if drop is not None else loss
    summary = {
        "config": cfg,
        "bigram_loss": probe.bigram_loss,
        "metrics": {k: [r[k] for r in rows] for k in
                    ("step", "loss", "copy_loss", "other_loss", "induction_score")},
        "checkpoint_steps": ck_steps.tolist(),
        "llc": llcs,
        "llc_std": llc_std,
        "llc_kwargs": lk,
        "defect": defect.tolist(),
        "defect_kwargs": dk,
        "attention_similarity_prev": sim_prev,
        "attention_similarity_final": sim_final,
        "stages": stages.boundaries,
        "stage_kwargs": sk,
        "drop_step": drop,
        "nearest_boundary_step": nearest,
        "boundary_offset_checkpoints": offset,
        "plateau_loss": float(before[1:].min()) if before.size > 1 else float(loss[0]),
        "final_loss": float(loss[-1]),
        "final_induction_score": float(score[-1]),
        "seconds": round(time.perf_counter() - t0, 3),
        "paths": {"run": str(out / "run.json"), "summary": str(out / "induction.json"),
                  "figure": str(out / "induction.png"), "metrics": str(rec.metrics_path),
                  "checkpoints": str(out / "checkpoints")},
    }
    save_figure(plot_induction(summary), out / "induction.png", dpi=120)
    atomic_write_json(out / "induction.json", summary)
    run.update("summary", "induction.json")
    log.info("induction heads: drop at %s, LLC boundaries %s, final loss %.3f (bigram %.3f)",
             drop, stages.boundary_steps, summary["final_loss"], summary["bigram_loss"])
    return summary


def plot_induction(summary: dict[str, Any]) -> Figure:
    """Three panels over training step (log axis): probe loss (all and repeated
    positions, the bigram loss dashed), induction score, LLC (with its chain spread)
    and the commutator defect; LLC stage boundaries and the drop as vertical lines."""
    m = summary["metrics"]
    st = np.maximum(np.asarray(m["step"], dtype=float), 1.0)
    ck = np.maximum(np.asarray(summary["checkpoint_steps"], dtype=float), 1.0)
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_loss, ax_score, ax_llc = fig.subplots(1, 3, sharex=True)
    ax_loss.plot(st, m["loss"], label="all positions")
    ax_loss.plot(st, m["copy_loss"], label="repeated positions")
    ax_loss.axhline(summary["bigram_loss"], color="grey", ls="--", label="bigram solution")
    ax_loss.set_ylabel("held-out cross-entropy (nats)")
    ax_score.plot(st, m["induction_score"], color="C2")
    ax_score.set_ylabel("induction score (attention prob.)")
    llc_v, llc_s = np.asarray(summary["llc"]), np.asarray(summary["llc_std"])
    ax_llc.plot(ck, llc_v, "o-", color="C3", ms=3, label="LLC")
    ax_llc.fill_between(ck, llc_v - llc_s, llc_v + llc_s, color="C3", alpha=0.2)
    ax_llc.set_ylabel("local learning coefficient", color="C3")
    ax_def = ax_llc.twinx()
    ax_def.plot(ck, summary["defect"], "s:", color="C4", ms=3, label="commutator defect")
    ax_def.set_ylabel("commutator defect", color="C4")
    for ax in (ax_loss, ax_score, ax_llc):
        ax.set_xscale("log")
        ax.set_xlabel("training step")
        for b in summary["stages"]:
            ax.axvline(b["step"], color="C3", ls=":", lw=1)
        if summary["drop_step"] is not None:
            ax.axvline(summary["drop_step"], color="k", ls="--", lw=1)
    ax_loss.legend(fontsize="small")
    ax_llc.set_title("LLC stages (dotted), induction drop (dashed)", fontsize="small")
    return fig


induction_heads_study = run_induction_heads
"""The name the CLI would use (``lossatlas study induction-heads``)."""
