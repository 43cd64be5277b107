"""A built-in grokking run: modular addition with weight decay, recorded for dynamics.

The recipe: all pairs ``(a, b)`` of ``[0, p)^2`` labelled ``(a + b) mod p``, a random
``train_fraction`` of them for training (``lossatlas.data.modular``), full-batch AdamW
with weight decay 1 (betas 0.9 / 0.98). Train accuracy reaches 1 within a few hundred
steps; validation accuracy stays near chance for much longer, then jumps.

Model ``"mlp"`` (default, fast on CPU): a shared embedding of the two operands
(``p x d_embed``), concatenated, one ReLU hidden layer, linear read-out
(:class:`ModularMLP`). Measured (seed 0): p=59, train fraction 0.5, lr 3e-3,
d_embed 32, hidden 128 fits the train set by step ~150 and validation accuracy
crosses 0.5 near step ~1250; p=97, train fraction 0.4, lr 3e-3, d_embed 64,
hidden 256 fits by ~100 and groks near ~1150. ``"transformer"`` uses the registered
one-layer :class:`~lossatlas.models.ModularTransformer` (slower on CPU; needs more
steps, e.g. 10k+ at lr 1e-3).

Run directory (a :class:`~lossatlas.recorder.Recorder` run)::

    OUT/metrics.jsonl               step, train_loss, train_accuracy, val_loss,
                                    val_accuracy, weight_norm every ``eval_every`` steps
    OUT/checkpoints/stepNNNNNNN.*   checkpoints (linear or log schedule)
    OUT/train.json                  model spec + kwargs, data spec + kwargs (so
                                    Population.from_run and dynamics_report can rebuild)
    OUT/grokking.json               summary: onset, train-fit step, defect, lead time
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..progress import progress_bar
from ..recorder import Recorder
from ..store import atomic_write_json
from .transitions import Transition, detect_all, grokking_onset, lead_time

__all__ = ["GrokkingResult", "ModularMLP", "defect_lead", "modular_mlp", "run_grokking"]

log = logging.getLogger(__name__)


class ModularMLP(nn.Module):
    """Embeddings of ``a`` and ``b`` (shared table), concatenated, one ReLU hidden layer.

    Input ``LongTensor[N, 2 or 3]`` (rows ``a, b[, '=']``; the third token is ignored);
    output logits ``Tensor[N, p]``. Parameters: ``embed.weight [p, d_embed]``,
    ``hidden.weight [hidden, 2 d_embed]``, ``hidden.bias``, ``out.weight [p, hidden]``,
    ``out.bias``.
    """

    def __init__(self, p: int = 97, d_embed: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.p = int(p)
        self.embed = nn.Embedding(self.p, d_embed)
        self.hidden = nn.Linear(2 * d_embed, hidden)
        self.act = nn.ReLU()
        self.out = nn.Linear(hidden, self.p)

    def forward(self, x: Tensor) -> Tensor:
        e = self.embed(x[..., :2]).flatten(-2)  # [N, 2 d_embed]
        return self.out(self.act(self.hidden(e)))

    def example_input(self, batch_size: int = 2) -> Tensor:
        """Random ``LongTensor[batch_size, 3]`` of ``a, b, '='`` tokens."""
        ab = torch.randint(0, self.p, (batch_size, 2))
        return torch.cat([ab, torch.full((batch_size, 1), self.p)], dim=1)


def modular_mlp(p: int = 97, d_embed: int = 64, hidden: int = 256) -> ModularMLP:
    """Factory of :class:`ModularMLP` (spec ``"lossatlas.dynamics.grokking:modular_mlp"``)."""
    return ModularMLP(p, d_embed, hidden)


@dataclass
class GrokkingResult:
    """What :func:`run_grokking` measured.

    Attributes
    ----------
    out_dir : Path
    steps : ndarray (m,)            steps of the metrics rows
    metrics : dict name -> ndarray (m,)
        ``train_loss``, ``val_loss`` (nats), ``train_accuracy``, ``val_accuracy``
        (fractions), ``weight_norm`` (L2 norm of all parameters).
    checkpoint_steps : ndarray (c,)
    checkpoints : list[Path]
    onset : dict                    :func:`~lossatlas.dynamics.grokking_onset`
    transitions : dict name -> list[Transition]
    defect : ndarray (c,) or None   commutator defect per checkpoint
    defect_rise : dict or None      :func:`~lossatlas.dynamics.rise_step` of the defect
    lead_time : float or None       onset step - defect rise step (steps; > 0: earlier)
    seconds : float                 wall time of training (+ defect)
    config : dict
    """

    out_dir: Path
    steps: np.ndarray
    metrics: dict[str, np.ndarray]
    checkpoint_steps: np.ndarray
    checkpoints: list[Path]
    onset: dict[str, Any]
    transitions: dict[str, list[Transition]]
    defect: np.ndarray | None = None
    defect_rise: dict[str, Any] | None = None
    lead_time: float | None = None
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def final_val_accuracy(self) -> float:
        return float(self.metrics["val_accuracy"][-1])

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays of metrics)."""
        rise = None
        if self.defect_rise is not None:
            rise = {k: (v.to_dict() if isinstance(v, Transition) else v)
                    for k, v in self.defect_rise.items()}
        return {
            "config": self.config,
            "seconds": round(self.seconds, 3),
            "final_train_accuracy": float(self.metrics["train_accuracy"][-1]),
            "final_val_accuracy": self.final_val_accuracy,
            "onset": self.onset,
            "transitions": {k: [t.to_dict() for t in v] for k, v in self.transitions.items()},
            "checkpoint_steps": self.checkpoint_steps.tolist(),
            "defect": None if self.defect is None else self.defect.tolist(),
            "defect_rise": rise,
            "lead_time": self.lead_time,
        }


def defect_lead(
    checkpoint_steps: np.ndarray,
    defect: np.ndarray,
    onset: dict[str, Any],
    rise_kwargs: dict[str, Any] | None = None,
    median: int = 3,
) -> dict[str, Any]:
    """The commutator defect's rise and its lead over the grokking onset.

    Parameters
    ----------
    checkpoint_steps : array (c,) of steps
    defect : array (c,) of the defect at those steps
    onset : :func:`~lossatlas.dynamics.grokking_onset` of the run (``onset_step``,
        ``train_fit_step``)
    rise_kwargs : passed to :func:`~lossatlas.dynamics.lead_time` (the rise detector)
    median : width (checkpoints, odd) of a running median taken of the defect before
        its rise is searched; 1 takes the defect as it is. A single checkpoint whose
        pair of batches happened to give a large defect is then not a rise.

    Returns
    -------
    :func:`~lossatlas.dynamics.lead_time`'s dict (``rise``, ``lead_time`` in steps).
    """
    from scipy.ndimage import median_filter

    median = int(median)
    if median < 1 or median % 2 == 0:
        raise ValueError(f"defect_lead: median must be an odd width >= 1, got {median}")
    v = np.asarray(defect, dtype=float)
    if median > 1:
        v = median_filter(v, size=median, mode="nearest")
    return lead_time(checkpoint_steps, v, onset["onset_step"], onset["train_fit_step"],
                     **(rise_kwargs or {}))


def _build(model: str, p: int, model_kwargs: dict[str, Any]) -> tuple[nn.Module, str, dict]:
    if model == "mlp":
        kw = {"p": p, "d_embed": 64, "hidden": 256, **model_kwargs}
        return modular_mlp(**kw), "lossatlas.dynamics.grokking:modular_mlp", kw
    if model == "transformer":
        from ..models import create

        kw = {"p": p, **model_kwargs}
        return create("transformer", **kw), "transformer", kw
    raise ValueError(f"run_grokking: model must be 'mlp' or 'transformer', got {model!r}")


def _embedding_names(net: nn.Module) -> set[str]:
    """Names of the parameters of every ``nn.Embedding`` in ``net``."""
    return {
        f"{mod_name}.{n}" if mod_name else n
        for mod_name, mod in net.named_modules() if isinstance(mod, nn.Embedding)
        for n, _ in mod.named_parameters(recurse=False)
    }


def _weight_norm(model: nn.Module) -> float:
    with torch.no_grad():
        return float(torch.sqrt(sum((q.double() ** 2).sum() for q in model.parameters())))


def run_grokking(
    out_dir: str | Path,
    p: int = 97,
    train_fraction: float = 0.4,
    steps: int = 3000,
    seed: int = 0,
    model: Literal["mlp", "transformer"] = "mlp",
    checkpoints: Literal["log", "linear"] = "linear",
    num_checkpoints: int = 41,
    lr: float = 3e-3,
    weight_decay: float = 1.0,
    eval_every: int = 10,
    model_kwargs: dict[str, Any] | None = None,
    data_seed: int = 0,
    defect: bool = True,
    defect_kwargs: dict[str, Any] | None = None,
    rise_kwargs: dict[str, Any] | None = None,
    defect_median: int = 3,
    num_threads: int | None = None,
    device: str | torch.device = "cpu",
    freeze_embedding: bool = False,
    progress: bool | None = None,
) -> GrokkingResult:
    """Train a model on modular addition until it groks, recording metrics and checkpoints.

    Parameters
    ----------
    out_dir : run directory (created)
    p : modulus (a prime); the number of classes
    train_fraction : fraction of the ``p**2`` pairs used for training (0.3-0.5 groks)
    steps : optimizer updates (full batch)
    seed : initialisation seed (the run is deterministic for a seed on the CPU)
    model : "mlp" (:class:`ModularMLP`) or "transformer"
    checkpoints : "linear" or "log" schedule of ``num_checkpoints`` checkpoints
    lr, weight_decay : AdamW settings (betas 0.9 / 0.98). The classic recipe is lr 1e-3;
        3e-3 groks about 3x sooner with the MLP.
    eval_every : metrics row every this many steps (and at every checkpoint)
    model_kwargs : e.g. ``{"d_embed": 32, "hidden": 128}``
    data_seed : seed of the train/validation split
    defect : compute the commutator defect at every checkpoint (on the train split)
        and its lead time over the onset
    defect_kwargs : passed to :func:`~lossatlas.dynamics.commutator_defect`
        (default ``eta=lr, num_pairs=8, batch_size=64``)
    rise_kwargs : passed to :func:`~lossatlas.dynamics.lead_time` (how the defect's rise
        is found), e.g. ``{"method": "threshold", "factor": 2.0}``; default its
        change-point method
    defect_median : the rise is searched in a running median of the defect over this
        many checkpoints (:func:`defect_lead`; 1: none); ``result.defect`` is the raw
        defect
    num_threads : torch intra-op threads during the run (restored afterwards)
    device : where to train (default CPU, where runs are bit-reproducible)
    freeze_embedding : an intervention: the token embeddings (every ``nn.Embedding``)
        stay at their initial values (left out of the optimizer, weight decay
        included); the survey reports that it delays the onset. The defect is still
        taken over all parameters.
    progress : a tqdm bar over the steps (see :mod:`lossatlas.progress`)

    Returns
    -------
    GrokkingResult; also ``OUT/grokking.json``.
    """
    from ..data import create as create_data

    if steps < 10:
        raise ValueError(f"run_grokking: steps must be >= 10, got {steps}")
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    data = create_data("modular", p=p, train_fraction=train_fraction, seed=data_seed)
    data = data.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net, spec, kw = _build(model, p, dict(model_kwargs or {}))
    net = net.to(device)
    config = {
        "p": p, "train_fraction": train_fraction, "steps": steps, "seed": seed, "model": model,
        "model_kwargs": kw, "lr": lr, "weight_decay": weight_decay, "optimizer": "adamw",
        "betas": [0.9, 0.98], "eval_every": eval_every, "checkpoints": checkpoints,
        "num_checkpoints": num_checkpoints, "data_seed": data_seed,
        "freeze_embedding": bool(freeze_embedding),
    }
    atomic_write_json(out_dir / "train.json", {
        "model": spec, "model_kwargs": kw, "data": "modular",
        "data_kwargs": {"p": p, "train_fraction": train_fraction, "seed": data_seed},
        "grokking": config,
    })
    rec = Recorder(out_dir, steps=checkpoints, num=num_checkpoints, total_steps=steps,
                   metadata={"variant": "grok", "seed": seed})
    if rec.metrics_path.exists():
        rec.metrics_path.unlink()  # a fresh run
    frozen = _embedding_names(net) if freeze_embedding else set()
    if freeze_embedding and not frozen:
        raise ValueError(f"run_grokking: freeze_embedding=True but model {model!r} has no "
                         f"nn.Embedding")
    trainable = [q for n, q in net.named_parameters() if n not in frozen]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        for step in progress_bar(range(steps + 1), progress=progress, desc=f"grokking p={p}",
                                 unit="step"):
            out = net(data.x_train)
            loss = F.cross_entropy(out, data.y_train)
            if step % eval_every == 0 or rec.wants(step):
                with torch.no_grad():
                    val_out = net(data.x_test)
                    row = {
                        "train_loss": loss.detach(),
                        "train_accuracy": (out.argmax(-1) == data.y_train).float().mean(),
                        "val_loss": F.cross_entropy(val_out, data.y_test),
                        "val_accuracy": (val_out.argmax(-1) == data.y_test).float().mean(),
                        "weight_norm": _weight_norm(net),
                    }
                rec.step(net, step, row)
            if step == steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rows = rec.metrics()
        names = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "weight_norm"]
        m_steps = np.array([r["step"] for r in rows], dtype=float)
        metrics = {k: np.array([r[k] for r in rows], dtype=float) for k in names}
        onset = grokking_onset(m_steps, metrics["val_accuracy"], metrics["train_accuracy"])
        transitions = detect_all(metrics, steps=m_steps)
        ck_steps = np.array(
            [int(s) for s in rec.schedule.steps or [] if s <= steps], dtype=float
        )
        result = GrokkingResult(
            out_dir=out_dir, steps=m_steps, metrics=metrics, checkpoint_steps=ck_steps,
            checkpoints=list(rec.paths), onset=onset, transitions=transitions, config=config,
        )
        if defect:
            from ..checkpoints import load_state_dict
            from .commutator import defect_along

            dk = {"eta": lr, "num_pairs": 8, "batch_size": 64, **(defect_kwargs or {})}
            states = [load_state_dict(pth) for pth in rec.paths]
            result.defect = defect_along(net, states, (data.x_train, data.y_train), **dk)
            lt = defect_lead(ck_steps, result.defect, onset, rise_kwargs, defect_median)
            result.defect_rise = lt["rise"]
            result.lead_time = lt["lead_time"]
            config["defect_kwargs"] = dk
            config["rise_kwargs"] = dict(rise_kwargs or {})
            config["defect_median"] = int(defect_median)
    finally:
        torch.set_num_threads(old_threads)
    result.seconds = time.perf_counter() - t0
    atomic_write_json(out_dir / "grokking.json", result.summary())
    log.info(
        "run_grokking: %.1fs, final val accuracy %.3f, onset %s, lead time %s",
        result.seconds, result.final_val_accuracy, onset["onset_step"], result.lead_time,
    )
    return result
