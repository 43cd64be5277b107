"""Local learning coefficient (Lau et al. 2023) by SGLD chains run together with vmap."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from .._compat import DeprecatedDictAccess
from ..progress import progress_bar
from ..vmap_ops import slow_under_vmap_on_cpu
from ._objective import LossFn, Objective
from .lanczos import _generator

__all__ = ["LLCResult", "SGLDState", "default_nbeta", "llc", "sgld_init", "sgld_step"]

log = logging.getLogger(__name__)


@dataclass
class LLCResult(DeprecatedDictAccess):
    """The local learning coefficient estimate of :func:`llc` and how it was sampled.

    Dict-style access (``result["llc_mean"]``, ``in``, ``.get``, ``keys()``; what
    ``llc`` returned before) still works with a ``DeprecationWarning``;
    :meth:`to_dict` gives that dict.
    """

    llc_mean: float
    """Mean estimate over chains (dimensionless: the learning coefficient)."""
    llc_std: float
    """Standard deviation across chains (unbiased; 0 for one chain)."""
    llc_per_chain: Tensor
    """``Tensor[C]``: each chain's estimate ``nbeta * (mean draw loss - init_loss)``."""
    loss_trace: Tensor
    """``Tensor[C, num_draws]`` (float64): batch loss at each draw, in the loss's units."""
    init_loss: float
    """``L(w*)``, the loss at the centre."""
    nbeta: float
    epsilon: float
    gamma: float
    num_chains: int
    num_draws: int
    num_burnin_steps: int
    num_steps_bw_draws: int
    batch_size: int
    num_samples: int
    """``n``, the samples of ``data``."""
    mode: str
    """``"eval"`` or ``"train"`` (the model's mode while sampling)."""
    group: list[str] | None
    """The sampled tensors' name prefixes (``None``: all)."""
    diverged: bool
    """Some chain diverged (non-finite or blowing-up loss trace)."""
    diverged_chains: Tensor
    """``Tensor[C]`` (bool): which chains diverged."""
    negative: bool
    """Some chain's estimate is below 0."""
    warnings: list[str] = field(default_factory=list)
    """What went wrong, in words (also logged)."""


def default_nbeta(batch_size: int) -> float:
    """devinterp's default inverse temperature ``n beta = m / log m`` for batch size ``m``
    (Watanabe's WBIC temperature ``1 / log n`` with the batch size in place of ``n``)."""
    m = int(batch_size)
    return 1.0 if m <= 1 else m / math.log(m)


class SGLDState(NamedTuple):
    """State of ``C`` chains: ``w`` Tensor[C, Dg] (current points), ``step`` int."""

    w: Tensor
    step: int


def sgld_init(center: Tensor, num_chains: int) -> SGLDState:
    """All chains start at ``center`` [Dg] (the localisation point ``w*``)."""
    return SGLDState(center.detach().expand(num_chains, -1).clone(), 0)


def sgld_step(
    state: SGLDState,
    grads: Tensor,
    center: Tensor,
    *,
    epsilon: float,
    nbeta: float,
    gamma: float,
    generator: torch.Generator,
) -> SGLDState:
    """``w <- w - (eps / 2) (nbeta grad L_batch(w) + gamma (w - w*)) + N(0, eps)``.

    ``grads`` Tensor[C, Dg] are the batch-loss gradients at ``state.w``.
    """
    w = state.w
    noise = torch.randn(w.shape, device=w.device, dtype=w.dtype, generator=generator)
    drift = (w - center).mul_(gamma).add_(grads, alpha=nbeta)  # in place: fewer passes
    return SGLDState(w.add(drift, alpha=-0.5 * epsilon).add_(noise, alpha=math.sqrt(epsilon)),
                     state.step + 1)


def _batch_indices(
    num_samples: int, batch_size: int, num_chains: int, num_steps: int, gen: torch.Generator, device
):
    """Per chain, consecutive batches of independent random permutations (epochs,
    dropping the incomplete last batch): yields Tensor[C, m] per step."""
    per_epoch = num_samples // batch_size
    perm = None
    for t in range(num_steps):
        j = t % per_epoch
        if j == 0:
            perm = torch.argsort(
                torch.rand(num_chains, num_samples, generator=gen, device=device), 1
            )
        yield perm[:, j * batch_size : (j + 1) * batch_size]


def _chain_steps(obj: Objective):
    """``(w [C, Dg], x [C, m, ...], y [C, m]) -> (grads [C, Dg], losses [C])``: every
    chain's batch-loss gradient, vectorised with ``vmap``, or on the CPU one chain after
    another for models whose convolutions or fused attention run slowly under it
    (:func:`~lossatlas.vmap_ops.slow_under_vmap_on_cpu`: a small CNN 2.6x slower than
    devinterp's loop before)."""
    one = grad_and_value(obj.group_loss)
    slow = (set(slow_under_vmap_on_cpu(obj.net, obj.data.subset(2).x))
            if obj.device.type == "cpu" else set())
    if not slow & {"attention", "convolutions"}:  # a written-out softmax: about even here
        return vmap(one, randomness="different")

    def loop(w: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        outs = [one(w[c], x[c], y[c]) for c in range(w.shape[0])]
        return torch.stack([g for g, _ in outs]), torch.stack([v for _, v in outs])

    return loop


def _diverged(trace: Tensor, init_loss: float, nbeta: float) -> Tensor:
    """Chains with a non-finite loss, or whose loss rises at the end: the last fifth's
    mean excess over ``L(w*)`` is more than 10x the first fifth's and above 1 / nbeta."""
    bad = ~torch.isfinite(trace).all(1)
    d = trace.shape[1]
    seg = max(1, d // 5)
    early = (trace[:, :seg].mean(1) - init_loss).abs()
    late = trace[:, -seg:].mean(1) - init_loss
    blow = (late > 10 * early) & (late > 1.0 / nbeta)
    return bad | (blow & (d >= 10))


def llc(
    model: nn.Module,
    data,
    *,
    epsilon: float = 1e-3,
    nbeta: float | None = None,
    gamma: float = 100.0,
    num_chains: int = 8,
    num_draws: int = 200,
    num_burnin_steps: int = 0,
    num_steps_bw_draws: int = 1,
    batch_size: int = 32,
    loss_fn: LossFn | None = None,
    params: Tensor | None = None,
    group: str | Sequence[str] | None = None,
    train: bool = False,
    bn: str | None = None,
    init_loss: float | None = None,
    device: str | torch.device | None = None,
    seed: int | None = 0,
    progress: bool | None = None,
) -> LLCResult:
    """Estimate the local learning coefficient at ``w*`` with SGLD (Lau et al. 2023).

    All chains run together (``vmap`` of ``functional_call`` over the stacked chain
    states), each on its own random mini-batches of ``data``. Update (as devinterp's
    SGLD)::

        w <- w - (eps / 2) * (nbeta * grad L_batch(w) + gamma * (w - w*)) + N(0, eps)

    and per chain ``llc = nbeta * (mean over draws of L_batch(w_t) - L(w*))``, where
    ``L_batch(w_t)`` is the batch loss at the step's start (as devinterp records it).

    Parameters
    ----------
    model : nn.Module
        Supplies ``w*`` (unless ``params``), the architecture and buffers; unchanged.
    data : (X, y) tensors, Dataset or DataLoader
        The ``n`` training samples.
    epsilon : float
        SGLD step size.
    nbeta : float, optional
        Inverse temperature ``n beta``; default :func:`default_nbeta` (``m / log m``
        with ``m = batch_size``, devinterp's default).
    gamma : float
        Localisation strength (pull towards ``w*``).
    num_chains, num_draws, num_burnin_steps, num_steps_bw_draws, batch_size : int
        ``num_burnin_steps + num_draws * num_steps_bw_draws`` steps per chain.
    loss_fn : callable(output, target) -> scalar batch mean
        Default mean cross-entropy. For regression with Gaussian noise of variance
        ``s^2`` use the negative log-likelihood ``mse / (2 s^2)`` (the learning
        coefficient refers to the log-likelihood's scale).
    params : Tensor[D], optional
        ``w*`` in the ``ParamSpace(model)`` layout; default the model's values.
    group : str or list of str, optional
        Sample only these tensors (name prefixes); others stay at ``w*``.
    train : bool
        Model in train mode (BatchNorm batch statistics); default eval mode.
    bn : {"recompute", "own"}, optional
        The BatchNorm policy in eval mode (statistics recomputed at ``w*`` by
        default, or the model's own); see :class:`~lossatlas.curvature.HVP`.
    init_loss : float, optional
        ``L(w*)``; default the mean loss over all of ``data`` (devinterp averages
        ``num_chains`` mini-batches instead).
    device : optional
        Default: the model's device.
    seed : int, optional
        Seeds batches and noise (a generator on ``device``).
    progress : bool, optional
        A bar over the SGLD steps, all chains advancing together (``None``: auto).

    Returns
    -------
    :class:`LLCResult`: ``llc_mean``, ``llc_std`` (across chains, unbiased),
    ``llc_per_chain`` Tensor[C], ``loss_trace`` Tensor[C, num_draws], ``init_loss``, the
    hyper-parameters, ``mode``, ``diverged`` (bool) and ``diverged_chains`` Tensor[C]
    (non-finite or blowing-up loss traces), ``negative`` (an estimate < 0) and
    ``warnings`` (list of str; also logged). (Before, a dict with these keys; dict-style
    access still works, deprecated.)
    """
    obj = Objective(
        model,
        data,
        loss_fn=loss_fn,
        params=params,
        group=group,
        train=train,
        bn=bn,
        batch_size=None,
        device=device,
        who="llc",
    )
    n = obj.num_samples
    m = int(batch_size)
    if m < 1 or m > n:
        raise ValueError(f"llc: batch_size must be between 1 and the {n} samples, got {batch_size}")
    for name, value in (("num_chains", num_chains), ("num_draws", num_draws)):
        if int(value) < 1:
            raise ValueError(f"llc: {name} must be >= 1, got {value}")
    if num_burnin_steps < 0 or num_steps_bw_draws < 1:
        raise ValueError(
            f"llc: num_burnin_steps must be >= 0 and num_steps_bw_draws >= 1, got "
            f"{num_burnin_steps} and {num_steps_bw_draws}"
        )
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"llc: epsilon must be a finite number > 0, got {epsilon}")
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"llc: gamma must be a finite number >= 0, got {gamma}")
    if nbeta is not None and not (math.isfinite(nbeta) and nbeta > 0):
        raise ValueError(f"llc: nbeta must be a finite number > 0, got {nbeta}")
    nbeta = default_nbeta(m) if nbeta is None else float(nbeta)
    C = int(num_chains)
    L0 = float(obj.value()) if init_loss is None else float(init_loss)

    center = obj.origin
    gen = _generator(seed, obj.device)
    step_fn = _chain_steps(obj)
    num_steps = num_burnin_steps + num_draws * num_steps_bw_draws
    trace = torch.zeros(C, num_draws, device=obj.device, dtype=torch.float64)
    state = sgld_init(center, C)
    x_all, y_all = obj.data.x, obj.data.y
    steps = progress_bar(_batch_indices(n, m, C, num_steps, gen, obj.device), total=num_steps,
                         desc=f"llc ({C} chains)", unit="step", progress=progress)
    for t, idx in enumerate(steps):
        g, loss = step_fn(state.w, x_all[idx], y_all[idx])
        k = t - num_burnin_steps
        if k >= 0 and k % num_steps_bw_draws == 0:
            trace[:, k // num_steps_bw_draws] = loss.detach().double()
        state = sgld_step(
            state, g.detach(), center, epsilon=epsilon, nbeta=nbeta, gamma=gamma, generator=gen
        )

    trace = trace.cpu()
    per_chain = nbeta * (trace.mean(1) - L0)
    diverged_chains = _diverged(trace, L0, nbeta)
    warnings: list[str] = []
    if bool(diverged_chains.any()):
        warnings.append(
            f"llc: {int(diverged_chains.sum())} of {C} chains diverged (non-finite or rising "
            f"loss); lower epsilon or raise gamma"
        )
    negative = bool((per_chain < 0).any())
    if negative:
        warnings.append(
            "llc: negative estimate in some chains: w* is not a local minimum of the loss at "
            "this resolution, or epsilon is too large; check the loss traces"
        )
    for w in warnings:
        log.warning(w)
    return LLCResult(
        llc_mean=float(per_chain.mean()),
        llc_std=float(per_chain.std()) if C > 1 else 0.0,
        llc_per_chain=per_chain,
        loss_trace=trace,
        init_loss=L0,
        nbeta=nbeta,
        epsilon=float(epsilon),
        gamma=float(gamma),
        num_chains=C,
        num_draws=int(num_draws),
        num_burnin_steps=int(num_burnin_steps),
        num_steps_bw_draws=int(num_steps_bw_draws),
        batch_size=m,
        num_samples=n,
        mode=obj.mode,
        group=obj.group,
        diverged=bool(diverged_chains.any()),
        diverged_chains=diverged_chains,
        negative=negative,
        warnings=warnings,
    )
