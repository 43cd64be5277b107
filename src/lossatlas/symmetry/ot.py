"""Soft alignment of two MLPs by optimal transport (OT fusion, Singh & Jaggi 2020).

Layer by layer, from the input to the last hidden layer, a transport plan
``T_l`` of shape ``[n_B, n_A]`` moves the uniform mass ``1 / n_B`` on model B's
neurons of layer ``l`` onto the uniform mass ``1 / n_A`` on model A's. The
ground cost between B's neuron ``j`` and A's neuron ``i`` is the squared
distance of their incoming weights (and bias), with B's input axis first
carried into A's previous-layer order by the previous plan:

    W_B_hat = W_B @ (T_{l-1} * n_A_{l-1})          # [n_B, k_B] -> [n_B, k_A]
    C[j, i] = |W_B_hat[j] - W_A[i]|^2              # [n_B, n_A]
    W_aligned = (T_l * n_A)^T @ W_B_hat            # [n_A, k_A]

The aligned layer is the *barycentric projection* of B's neurons onto A's: A's
neuron ``i`` receives the average of B's incoming weights weighted by the mass
``T_l[:, i]`` that B's neurons send it. With equal widths, uniform marginals and
the exact solver (``ot.emd``), ``n * T_l`` is a permutation matrix and the
result is B with its hidden units permuted (the same function as B). With
Sinkhorn (``ot.sinkhorn``) or unequal widths the plan is soft: several B
neurons are averaged into one slot (or one B neuron is split across slots), so
the aligned model has A's widths but in general no longer computes B's function.
The output layer keeps its classes; only its input axis is transported.

Measured (two MLPs 64-64-64-10 trained by Adam for 300 steps on sklearn digits
from different seeds; loss barrier on the training set, Entezari definition):
0.76 unaligned; 0.055 after ``method="exact"`` (weight matching: 0.046);
Sinkhorn with reg 0.01 / 0.02 / 0.05: 0.031 / 0.005 / 0.0 -- but the aligned
endpoint itself degrades as reg grows (train loss 0.03 for B, 0.13 / 0.24 / 1.0
aligned; train error 1.3 / 2.6 / 13 %), so a vanishing barrier at large reg
partly reflects a worse endpoint, not a better alignment. Keep reg small
(default 0.01) when the aligned model should stay close to B's function.
Unequal widths, same setting with B 64-128-128-10 (train loss 0.011) projected
onto A 64-64-64-10: exact plans give train error 1.1 % but loss 0.94 (the
projection does not preserve B's function: most predictions survive, their
confidence does not); Sinkhorn reg 0.01 gives 2.0 % and 1.17.

With ``signs=True`` the hidden layers followed by an odd activation (tanh-like,
:mod:`~lossatlas.symmetry.spec`) have the sign-flip symmetry as well: B's neuron
``j`` may stand for A's ``i`` with either sign, so the ground cost is
``min(|W_B_hat[j] - W_A[i]|^2, |W_B_hat[j] + W_A[i]|^2)`` and the pair's sign
``S[j, i]`` is the minimiser's. The plan then moves signed mass: the barycentric
projection and the carry to the next layer use ``T_l * S_l`` in place of ``T_l``
(for equal widths and the exact solver: B's units permuted and sign-flipped, B's
function).

Only plain chains of ``nn.Linear`` layers with element-wise activations in
between are supported (:class:`lossatlas.models.MLP`, or an ``nn.Sequential`` of
Linear / activation / Flatten / Dropout modules).
"""

from __future__ import annotations

import copy
import logging
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputTypeError
from .spec import _is_odd

__all__ = ["ot_align", "ot_plans"]

log = logging.getLogger(__name__)

Method = Literal["exact", "sinkhorn"]

_ELEMENTWISE = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.SiLU, nn.Sigmoid, nn.ELU, nn.Softplus,
    nn.Identity, nn.Flatten, nn.Dropout,
)


def _linear_chain(model: nn.Module, which: str) -> list[tuple[str, nn.Linear]]:
    """The Linear layers of a plain MLP in forward order, as ``(name, module)``."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(
            f"ot_align: {which} must be an nn.Module, got {type(model).__name__}")
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.ModuleList) and all(isinstance(m, nn.Linear) for m in layers):
        others = [n for n, m in model.named_children() if n not in ("layers", "act")]
        act = getattr(model, "act", None)
        if not others and (act is None or isinstance(act, _ELEMENTWISE)):
            return [(f"layers.{i}", m) for i, m in enumerate(layers)]
    if isinstance(model, nn.Sequential):
        chain, bad = [], []
        for name, m in model.named_children():
            if isinstance(m, nn.Linear):
                chain.append((name, m))
            elif not isinstance(m, _ELEMENTWISE):
                bad.append(f"{name} ({type(m).__name__})")
        if not bad and chain:
            return chain
    raise InputTypeError(
        f"ot_align: {which} ({type(model).__name__}) is not a plain chain of nn.Linear layers "
        "with element-wise activations (lossatlas MLP or an nn.Sequential of Linear / "
        "activation modules); use symmetry.weight_matching for other architectures"
    )


def _nonlinear_parts(model: nn.Module) -> list[str]:
    """The types of a checked chain's non-Linear modules, in order."""
    if isinstance(model, nn.Sequential):
        return [type(m).__name__ for m in model.children() if not isinstance(m, nn.Linear)]
    act = getattr(model, "act", None)
    return [type(act).__name__] if act is not None else []


def _odd_after(model: nn.Module, num_hidden: int) -> list[bool]:
    """Whether the modules between each hidden Linear of a checked chain and the next
    are all odd (tanh-like: the layer's units have the sign-flip symmetry)."""
    if isinstance(model, nn.Sequential):
        odd: list[bool] = []
        seen_linear, current = False, True
        for m in model.children():
            if isinstance(m, nn.Linear):
                if seen_linear:
                    odd.append(current)
                seen_linear, current = True, True
            else:
                current = current and (_is_odd(m) or isinstance(m, nn.Flatten))
        return odd
    act = getattr(model, "act", None)
    return [act is None or _is_odd(act)] * num_hidden


def _check_pair(
    model_a: nn.Module, model_b: nn.Module
) -> tuple[list[tuple[str, nn.Linear]], list[tuple[str, nn.Linear]]]:
    ca, cb = _linear_chain(model_a, "model_a"), _linear_chain(model_b, "model_b")
    if len(ca) != len(cb):
        raise ValueError(
            f"ot_align: model_a has {len(ca)} Linear layers but model_b has {len(cb)}; "
            "OT alignment needs the same depth"
        )
    (na, la), (nb, lb) = ca[0], cb[0]
    if la.in_features != lb.in_features:
        raise ValueError(
            f"ot_align: input widths differ: model_a {na} has {la.in_features} inputs, "
            f"model_b {nb} has {lb.in_features}"
        )
    (na, la), (nb, lb) = ca[-1], cb[-1]
    if la.out_features != lb.out_features:
        raise ValueError(
            f"ot_align: output widths differ: model_a {na} has {la.out_features} outputs, "
            f"model_b {nb} has {lb.out_features}"
        )
    acts_a, acts_b = _nonlinear_parts(model_a), _nonlinear_parts(model_b)
    if acts_a != acts_b:
        raise ValueError(
            f"ot_align: the activations differ (model_a {acts_a}, model_b {acts_b}); the "
            "aligned weights would be read by model_a's"
        )
    for (na, la), (nb, lb) in zip(ca, cb, strict=True):
        if (la.bias is None) != (lb.bias is None):
            raise ValueError(f"ot_align: {na} of model_a and {nb} of model_b differ in having a bias")
    return ca, cb


def _rows(layer: nn.Linear) -> np.ndarray:
    """Incoming weights and bias of each neuron, float64 ``[out, in (+1)]``."""
    w = layer.weight.detach().double().cpu().numpy()
    if layer.bias is None:
        return w
    return np.concatenate([w, layer.bias.detach().double().cpu().numpy()[:, None]], axis=1)


def _plan(cost: np.ndarray, method: str, reg: float, num_iter: int) -> np.ndarray:
    """Transport plan ``[n_B, n_A]`` between uniform marginals for ``cost`` ``[n_B, n_A]``."""
    import ot

    nb, na = cost.shape
    a, b = np.full(nb, 1.0 / nb), np.full(na, 1.0 / na)
    scale = cost.max()
    c = cost / scale if scale > 0 else cost
    if method == "exact":
        return ot.emd(a, b, c, numItermax=max(100000, 50 * nb * na))
    plan = ot.sinkhorn(a, b, c, reg, numItermax=num_iter, stopThr=1e-9)
    if not np.all(np.isfinite(plan)):
        raise FloatingPointError(
            f"ot_align: Sinkhorn diverged with reg={reg} (cost normalised to max 1); "
            "use a larger reg (e.g. 0.01-0.1) or method='exact'"
        )
    return plan


def _as_permutation(plan: np.ndarray) -> np.ndarray | None:
    """``perm`` with ``n * plan[perm[i], i] == 1`` if ``n * plan`` is a permutation matrix."""
    nb, na = plan.shape
    if nb != na:
        return None
    scaled = plan * na
    perm = scaled.argmax(axis=0)
    if np.allclose(scaled[perm, np.arange(na)], 1.0, atol=1e-9) and len(set(perm)) == na:
        if np.abs(scaled).sum() <= na + 1e-6:
            return perm
    return None


def ot_plans(
    model_a: nn.Module,
    model_b: nn.Module,
    method: Method = "exact",
    reg: float = 0.01,
    num_iter: int = 10000,
    signs: bool = False,
) -> list[Tensor]:
    """Layer-wise transport plans from ``model_b``'s hidden neurons to ``model_a``'s.

    Parameters
    ----------
    model_a, model_b : plain MLPs of equal depth, input and output widths
        (hidden widths may differ).
    method : {"exact", "sinkhorn"}
        ``ot.emd`` (network simplex; a permutation for equal widths) or
        ``ot.sinkhorn`` (entropic, soft).
    reg : float
        Sinkhorn's entropic regularisation, relative to the layer's ground cost
        normalised to a maximum of 1 (so it is scale-free); ignored by "exact".
        Small values (< 0.005) approach the exact plan but may underflow.
    num_iter : int
        Sinkhorn iterations at most.
    signs : bool
        Also match the sign flips of the layers followed by an odd (tanh-like)
        activation (see the module docstring).

    Returns
    -------
    list of Tensor[n_B_l, n_A_l] (float64), one per hidden layer, each with row
    sums ``1 / n_B_l`` and column sums ``1 / n_A_l`` of its absolute values; with
    ``signs`` the entries of a layer with the sign symmetry carry the pair's sign
    (negative: B's neuron enters flipped).
    """
    return [torch.as_tensor(p) for p in _solve(model_a, model_b, method, reg, num_iter,
                                               signs)[0]]


def _solve(model_a: nn.Module, model_b: nn.Module, method: str, reg: float, num_iter: int,
           signs: bool) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray | None]]]:
    """Check the options and the pair; :func:`_transport`'s plans and aligned layers."""
    if method not in ("exact", "sinkhorn"):
        raise ValueError(f"ot_align: method must be 'exact' or 'sinkhorn', got {method!r}")
    if method == "sinkhorn" and not float(reg) > 0:
        raise ValueError(f"ot_align: reg must be > 0 for method='sinkhorn', got {reg}")
    ca, cb = _check_pair(model_a, model_b)
    odd = _odd_after(model_a, len(ca) - 1) if signs else [False] * (len(ca) - 1)
    return _transport(ca, cb, method, float(reg), int(num_iter), odd)


def _transport(
    ca: list[tuple[str, nn.Linear]],
    cb: list[tuple[str, nn.Linear]],
    method: str,
    reg: float,
    num_iter: int,
    odd: list[bool],
) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray | None]]]:
    """Plans per hidden layer (signed, ``T * S``, where ``odd``) and B's aligned
    ``(weight, bias)`` per layer (float64)."""
    plans: list[np.ndarray] = []
    aligned: list[tuple[np.ndarray, np.ndarray | None]] = []
    carry: np.ndarray | None = None  # [k_B, k_A] = T_{l-1} * S_{l-1} * n_A_{l-1}
    perm_prev: np.ndarray | None = None
    sign_prev: np.ndarray | None = None
    for depth, ((_, la), (_, lb)) in enumerate(zip(ca, cb, strict=True)):
        wb = lb.weight.detach().double().cpu().numpy()
        bb = None if lb.bias is None else lb.bias.detach().double().cpu().numpy()
        if perm_prev is not None:
            wb_hat = wb[:, perm_prev]  # exact gather: no rounding
            if sign_prev is not None:
                wb_hat = wb_hat * sign_prev[None]  # exact: multiplies by +-1
        elif carry is not None:
            wb_hat = wb @ carry
        else:
            wb_hat = wb
        if depth == len(ca) - 1:  # classes stay in place
            aligned.append((wb_hat, bb))
            break
        rows_b = wb_hat if bb is None else np.concatenate([wb_hat, bb[:, None]], axis=1)
        rows_a = _rows(la)
        norms = (rows_b**2).sum(1)[:, None] + (rows_a**2).sum(1)[None]
        cross = rows_b @ rows_a.T
        sign = np.where(cross < 0, -1.0, 1.0) if odd[depth] else None  # |b + a| < |b - a|
        cost = (norms - 2.0 * (np.abs(cross) if odd[depth] else cross)).clip(min=0.0)
        plan = _plan(cost, method, reg, num_iter)
        signed = plan if sign is None else plan * sign
        plans.append(signed)
        na = plan.shape[1]
        perm = _as_permutation(plan) if method == "exact" else None
        if perm is not None:
            flip = None if sign is None else sign[perm, np.arange(na)]
            w, b = wb_hat[perm], None if bb is None else bb[perm]
            if flip is not None:
                w, b = w * flip[:, None], None if b is None else b * flip
            aligned.append((w, b))
            perm_prev, sign_prev, carry = perm, flip, None
        else:
            proj = (signed * na).T  # [n_A, n_B]: barycentric weights of B's neurons
            aligned.append((proj @ wb_hat, None if bb is None else proj @ bb))
            perm_prev, sign_prev, carry = None, None, signed * na
    return plans, aligned


def ot_align(
    model_a: nn.Module,
    model_b: nn.Module,
    method: Method = "exact",
    reg: float = 0.01,
    num_iter: int = 10000,
    return_plans: bool = False,
    signs: bool = False,
) -> nn.Module | tuple[nn.Module, list[Tensor]]:
    """``model_b`` transported onto ``model_a``'s neuron order and widths.

    Parameters
    ----------
    model_a, model_b : plain MLPs (see the module docstring) with the same depth,
        input and output widths; hidden widths may differ.
    method, reg, num_iter, signs : see :func:`ot_plans`.
    return_plans : bool
        Also return the plans (list of Tensor[n_B_l, n_A_l]; signed with ``signs``).

    Returns
    -------
    nn.Module
        A copy of ``model_a``'s architecture (A's widths) holding B's weights
        transported by barycentric projection. For equal widths with the exact
        solver this is ``model_b`` with its hidden units permuted (and, with
        ``signs``, sign-flipped: the same function, tensors copied exactly); otherwise a soft average of B's
        neurons (a different function, close to B's when the plans are nearly
        one-to-one). The inputs are never changed.

    Example
    -------
    >>> aligned = ot_align(a, b, method="sinkhorn", reg=0.01)
    >>> barrier(a, aligned, data)  # usually lower than barrier(a, b, data)
    """
    plans, aligned = _solve(model_a, model_b, method, reg, num_iter, signs)
    out = copy.deepcopy(model_a)
    out_chain = _linear_chain(out, "model_a")
    with torch.no_grad():
        for (_, layer), (w, b) in zip(out_chain, aligned, strict=True):
            layer.weight.copy_(torch.as_tensor(w, dtype=layer.weight.dtype))
            if layer.bias is not None and b is not None:
                layer.bias.copy_(torch.as_tensor(b, dtype=layer.bias.dtype))
    log.info(
        "ot_align: %s plans for %d hidden layers (widths B %s -> A %s)", method, len(plans),
        [p.shape[0] for p in plans], [p.shape[1] for p in plans],
    )
    result_plans = [torch.as_tensor(p) for p in plans]
    return (out, result_plans) if return_plans else out
