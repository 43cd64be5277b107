"""Aligning one model's hidden units onto another's (git re-basin, Ainsworth et al. 2022).

Weight matching maximises ``sum_params <W_a, P W_b>`` over the permutations of a
:class:`~lossatlas.symmetry.PermutationSpec` by coordinate descent: each step
solves one group's linear assignment (``scipy.optimize.linear_sum_assignment``)
with the other groups held at their current permutations, in a random group
order each round, until no group improves. Activation matching assigns each
group's units by the correlation of their activations on data.

With ``signs`` (:func:`match_signed_weights`, ``weight_matching(signs=True)``) the
groups with the sign-flip symmetry (``spec.odd``: tanh-like units) are matched by
signed permutations: unit ``j`` of b may stand for unit ``i`` of a with either
sign. The inner product splits into the tensors the flip leaves alone and those it
negates (:meth:`~lossatlas.symmetry.PermutationSpec.signed_axes`: all of them, or
after a norm layer its weight and bias and the readers' inputs), so the assignment
maximises ``fixed_ij + |flipped_ij|`` and the sign is that of ``flipped_ij``.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..batches import as_tensor_data
from ..errors import InputTypeError
from ..evaluate import batchable_layers
from ._inputs import resolve_example_input
from .spec import (
    PermutationSpec,
    apply_permutation,
    permutation_spec,
    permute_axis,
    scale_axis,
)

__all__ = [
    "activation_matching",
    "match_activations",
    "match_signed_weights",
    "match_weights",
    "weight_matching",
]

log = logging.getLogger(__name__)


def _units_matrix(t: Tensor, axis: int, n: int, segments: int = 1) -> Tensor:
    """``t`` with ``axis`` (``segments * n * block`` entries) first, as ``[n, -1]``: row
    ``i`` holds unit ``i``'s entries of every segment."""
    t = t.movedim(axis, 0)
    if segments == 1:
        return t.reshape(n, -1)
    return t.reshape(segments, n, -1).transpose(0, 1).reshape(n, -1)


def _check_models(who: str, model_a: nn.Module, model_b: nn.Module) -> None:
    for which, m in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(m, nn.Module):
            raise InputTypeError(f"{who}: {which} must be an nn.Module, got {type(m).__name__}")
    ka, kb = set(model_a.state_dict()), set(model_b.state_dict())
    if ka != kb:
        diff = sorted(ka ^ kb)[:4]
        raise ValueError(f"{who}: model_a and model_b have different tensors, e.g. {diff}")


def match_weights(
    spec: PermutationSpec,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    max_iter: int = 100,
    seed: int = 0,
    init: Literal["forward", "identity"] | Mapping[str, Tensor] = "forward",
    device: str | torch.device | None = None,
) -> dict[str, Tensor]:
    """Permutations that align ``state_b``'s units onto ``state_a``'s by weight matching.

    Parameters
    ----------
    spec : PermutationSpec
    state_a, state_b : state dicts of one architecture (parameters and buffers)
    max_iter : int
        Rounds over all groups at most; stops earlier when a round improves none.
    seed : int
        Seeds the random group order of each round.
    init : "forward", "identity" or dict group -> LongTensor[n]
        Starting permutations. "forward" (default) first matches the groups in
        graph order, each using only the tensors whose other axes belong to
        groups already matched (or to no group), e.g. a layer's incoming weights
        once its inputs are aligned; coordinate descent from the identity can
        stall in a poor local optimum on wide untrained networks (measured on
        ResNet-20 x16: 255 of 256 units wrong), the forward start does not.
    device : where the similarity products run (default: ``state_a``'s device).

    Returns
    -------
    dict group -> LongTensor[n] (CPU): ``apply_permutation(spec, state_b, perms)``
    is ``state_b`` aligned onto ``state_a``.
    """
    return _coordinate_descent(spec, state_a, state_b, max_iter, seed, init, device,
                               signed=False)[0]


def match_signed_weights(
    spec: PermutationSpec,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    max_iter: int = 100,
    seed: int = 0,
    init: Literal["forward", "identity"] | Mapping[str, Tensor] = "forward",
    device: str | torch.device | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Signed permutations aligning ``state_b`` onto ``state_a`` by weight matching.

    As :func:`match_weights`, with the sign-flip symmetry of the groups in
    ``spec.odd`` (tanh-like units) as well: each such group's assignment maximises
    ``sum_i |<a_i, b_perm(i)>|`` over the other groups' current signed permutations.

    Returns
    -------
    ``(perms, signs)``: dict group -> LongTensor[n] and dict odd group -> Tensor[n]
    of +-1 (float32, CPU); ``apply_permutation(spec, state_b, perms, signs)`` is
    ``state_b`` aligned onto ``state_a``.
    """
    return _coordinate_descent(spec, state_a, state_b, max_iter, seed, init, device,
                               signed=True)


def _coordinate_descent(
    spec: PermutationSpec,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    max_iter: int,
    seed: int,
    init: Literal["forward", "identity"] | Mapping[str, Tensor],
    device: str | torch.device | None,
    signed: bool,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Weight matching by coordinate descent; ``(perms, signs)`` (signs of odd groups
    only when ``signed``, else empty)."""
    spec.validate(state_a, "state_a")
    spec.validate(state_b, "state_b")
    names = {ax.name for axes in spec.groups.values() for ax in axes}
    dev = torch.device(device) if device is not None else next(iter(state_a.values())).device
    a = {k: state_a[k].detach().to(dev, torch.float32) for k in names}
    b = {k: state_b[k].detach().to(dev, torch.float32) for k in names}
    perms = {g: torch.arange(n) for g, n in spec.sizes.items()}
    odd = set(spec.odd) if signed else set()
    signs = {g: torch.ones(spec.sizes[g]) for g in spec.groups if g in odd}
    signed = {(g, ax.name, ax.axis) for g in odd for ax in spec.signed_axes(g)}
    axes_of = spec.axes_of()
    groups = list(spec.groups)

    def cost_of(g: str, usable: set[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Similarities ``[n, n]`` of group ``g``'s units over the tensors its sign flip
        leaves alone and over those it flips (zero for a group without signs)."""
        n = spec.sizes[g]
        cost = torch.zeros(2, n, n, dtype=torch.float64, device=dev)
        for ax in spec.groups[g]:
            others = [(g2, ax2) for g2, ax2 in axes_of[ax.name] if (g2, ax2.axis) != (g, ax.axis)]
            if usable is not None and any(g2 not in usable for g2, _ in others):
                continue
            wb = b[ax.name]
            for g2, ax2 in others:
                wb = permute_axis(wb, ax2.axis, perms[g2], ax2.block, ax2.segments)
                if (g2, ax2.name, ax2.axis) in signed:
                    wb = scale_axis(wb, ax2.axis, signs[g2], ax2.block, ax2.segments)
            cost[int((g, ax.name, ax.axis) in signed)] += (
                _units_matrix(a[ax.name], ax.axis, n, ax.segments)
                @ _units_matrix(wb, ax.axis, n, ax.segments).T
            ).double()
        c = cost.cpu().numpy()
        return c[0], c[1]

    def assign(g: str, c: tuple[np.ndarray, np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray | None, float]:
        """Best assignment of group ``g`` for similarities ``c = (fixed, flipped)``: the
        gain is ``fixed + |flipped|`` for an odd group, whose signs are those of the
        picked ``flipped`` entries: columns, signs, objective."""
        fixed, flipped = c
        gain = fixed + np.abs(flipped) if g in odd else fixed + flipped
        rows, cols = linear_sum_assignment(gain, maximize=True)
        flips = np.where(flipped[rows, cols] < 0, -1.0, 1.0) if g in odd else None
        return cols, flips, float(gain[rows, cols].sum())

    def take(g: str, cols: np.ndarray, flips: np.ndarray | None) -> None:
        perms[g] = torch.as_tensor(cols, dtype=torch.long)
        if flips is not None:
            signs[g] = torch.as_tensor(flips, dtype=torch.float32)

    if isinstance(init, str):
        if init not in ("forward", "identity"):
            raise ValueError(
                f"match_weights: init must be 'forward', 'identity' or a dict, got {init!r}"
            )
        if init == "forward":
            done: set[str] = set()
            for g in groups:  # spec order follows the graph
                c = cost_of(g, usable=done | {g})
                if np.any(c[0]) or np.any(c[1]):
                    take(g, *assign(g, c)[:2])
                done.add(g)
    else:
        perms.update({g: torch.as_tensor(p).long().cpu() for g, p in init.items()})
    gen = torch.Generator().manual_seed(int(seed))
    rounds = 0
    for rounds in range(1, int(max_iter) + 1):  # noqa: B007 - reported below
        improved = False
        for k in torch.randperm(len(groups), generator=gen).tolist():
            g = groups[k]
            n = spec.sizes[g]
            c = cost_of(g)
            idx = (np.arange(n), perms[g].numpy())
            current = c[1][idx] * signs[g].numpy() if g in signs else c[1][idx]
            old = float((c[0][idx] + current).sum())
            cols, flips, new = assign(g, c)
            if new > old + 1e-12 * max(1.0, abs(old)):
                take(g, cols, flips)
                improved = True
        if not improved:
            break
    log.info("match_weights: %d groups converged after %d rounds", len(groups), rounds)
    return perms, signs


def weight_matching(
    model_a: nn.Module,
    model_b: nn.Module,
    spec: PermutationSpec | None = None,
    example_input: Tensor | tuple | None = None,
    max_iter: int = 100,
    seed: int = 0,
    device: str | torch.device | None = None,
    return_perms: bool = False,
    data: Any = None,
    signs: bool = False,
) -> nn.Module | tuple:
    """A copy of ``model_b`` permuted onto ``model_a`` by weight matching.

    The copy computes the same function as ``model_b``. ``spec`` defaults to
    ``permutation_spec(model_a, example_input, data=data)``: traced on
    ``example_input``, else on the first samples of ``data`` (only used for
    that), else on ``model_a.example_input(2)``, else on an input inferred from
    the model's first layer (:func:`~lossatlas.symmetry.infer_example_input`).

    With ``signs=True`` the units of the ``spec.odd`` groups (tanh-like) may also
    be sign-flipped (signed permutations, :func:`match_signed_weights`).

    Returns
    -------
    The aligned copy of ``model_b``; with ``return_perms=True`` the pair
    ``(model, perms)`` with ``perms`` as in :func:`match_weights`, or the triple
    ``(model, perms, signs)`` with ``signs=True``.
    """
    _check_models("weight_matching", model_a, model_b)
    if spec is None:
        example_input = resolve_example_input(model_a, example_input, data,
                                              who="weight_matching")
        spec = permutation_spec(model_a, example_input)
    perms, flips = _coordinate_descent(spec, model_a.state_dict(), model_b.state_dict(),
                                       max_iter, seed, "forward", device, signed=bool(signs))
    aligned = copy.deepcopy(model_b)
    aligned.load_state_dict(apply_permutation(spec, model_b.state_dict(), perms, flips))
    if not return_perms:
        return aligned
    return (aligned, perms, flips) if signs else (aligned, perms)


class _Stats:
    """Running first and second moments of paired unit activations ``[n, m]``."""

    def __init__(self) -> None:
        self.count = 0
        self.sa = self.sb = self.saa = self.sbb = self.sab = None

    def update(self, xa: Tensor, xb: Tensor) -> None:
        xa, xb = xa.double(), xb.double()
        m = xa.shape[1]
        if self.sa is None:
            self.sa, self.sb = xa.sum(1), xb.sum(1)
            self.saa, self.sbb = (xa * xa).sum(1), (xb * xb).sum(1)
            self.sab = xa @ xb.T
        else:
            self.sa += xa.sum(1)
            self.sb += xb.sum(1)
            self.saa += (xa * xa).sum(1)
            self.sbb += (xb * xb).sum(1)
            self.sab += xa @ xb.T
        self.count += m

    def correlation(self, eps: float = 1e-8) -> Tensor:
        c = self.count
        ma, mb = self.sa / c, self.sb / c
        va = (self.saa / c - ma**2).clamp_min(0)
        vb = (self.sbb / c - mb**2).clamp_min(0)
        cov = self.sab / c - ma[:, None] * mb[None]
        return cov / (va.sqrt()[:, None] * vb.sqrt()[None] + eps)


def match_activations(
    spec: PermutationSpec,
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    batch_size: int = 256,
    max_samples: int | None = 2048,
    device: str | torch.device | None = None,
) -> dict[str, Tensor]:
    """Permutations aligning ``model_b`` onto ``model_a`` by activation correlation.

    For each group, the activations are the inputs of the Linear/Conv layers
    that read the group (``spec.consumers``; for a tied residual group the
    correlation matrices of all its readers are summed). Each group's units are
    assigned by ``linear_sum_assignment`` on the ``[n, n]`` correlation matrix. A group
    no Linear/Conv module reads (attention heads) is left out, with a warning.

    Parameters
    ----------
    data : (X, y) tensors, Dataset or DataLoader (targets unused)
    max_samples : int, optional
        Use at most this many samples (first ones).

    Returns
    -------
    dict group -> LongTensor[n] as in :func:`match_weights` (groups with a reader).
    """
    corrs = _group_correlations(spec, model_a, model_b, data, batch_size, max_samples, device)
    return _assign_correlations(spec, corrs, signed=False)[0]


def _group_correlations(
    spec: PermutationSpec,
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    batch_size: int,
    max_samples: int | None,
    device: str | torch.device | None,
) -> dict[str, Tensor]:
    """Correlation matrices ``[n, n]`` (a's units x b's units) of every group's
    activations, summed over the group's readers."""
    _check_models("match_activations", model_a, model_b)
    td = as_tensor_data(data, "match_activations data")
    if max_samples is not None:
        td = td.subset(int(max_samples))
    dev = torch.device(device) if device is not None else next(model_a.parameters()).device
    sites: dict[str, list[tuple[str, int, int, int]]] = {}  # module -> (group, axis, block, n)
    for g, readers in spec.consumers.items():
        for mod, axis, block in readers:
            sites.setdefault(mod, []).append((g, axis, block, spec.sizes[g]))
    missing = [g for g in spec.groups if g not in spec.consumers]
    if missing:  # e.g. attention heads: read inside F.multi_head_attention_forward
        warnings.warn(
            f"match_activations: groups {missing[:3]} have no Linear/Conv reader to take "
            "activations from; they are left in place (weight matching aligns them)",
            stacklevel=3)
    stats = {(g, mod): _Stats() for mod, items in sites.items() for g, *_ in items}
    captured: dict[str, list[Tensor]] = {}
    models = [copy.deepcopy(m).to(dev).eval() for m in (model_a, model_b)]
    handles = []
    for which, m in enumerate(models):
        mods = dict(m.named_modules())
        for name in sites:
            def hook(_mod, inputs, name=name, which=which):  # noqa: ANN001
                captured.setdefault(name, [None, None])[which] = inputs[0].detach()
            handles.append(mods[name].register_forward_pre_hook(hook))
    try:
        # batchable_layers: nn.TransformerEncoderLayer's fused inference path would skip
        # the hooked Linear modules inside it
        with torch.no_grad(), batchable_layers(math_attention=False):
            for x, _ in td.batches(batch_size):
                captured.clear()
                x = x.to(dev)
                models[0](x)
                models[1](x)
                for mod, items in sites.items():
                    xa, xb = captured[mod]
                    for g, axis, _block, n in items:  # a unit's block counts as samples
                        stats[(g, mod)].update(
                            _units_matrix(xa, axis, n), _units_matrix(xb, axis, n)
                        )
    finally:
        for h in handles:
            h.remove()
    return {g: sum(stats[(g, mod)].correlation() for mod, _, _ in spec.consumers[g]).cpu()
            for g in spec.sizes if g in spec.consumers}


def _assign_correlations(
    spec: PermutationSpec, corrs: dict[str, Tensor], signed: bool
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Assignments maximising the summed correlation, on ``|corr|`` for the odd groups
    when ``signed`` (their signs: those of the picked correlations)."""
    perms: dict[str, Tensor] = {}
    signs: dict[str, Tensor] = {}
    for g, corr in corrs.items():
        c = corr.numpy()
        odd = signed and g in spec.odd
        rows, cols = linear_sum_assignment(np.abs(c) if odd else c, maximize=True)
        perms[g] = torch.as_tensor(cols, dtype=torch.long)
        if odd:
            signs[g] = torch.as_tensor(np.where(c[rows, cols] < 0, -1.0, 1.0),
                                       dtype=torch.float32)
    return perms, signs


def activation_matching(
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    spec: PermutationSpec | None = None,
    example_input: Tensor | tuple | None = None,
    batch_size: int = 256,
    max_samples: int | None = 2048,
    device: str | torch.device | None = None,
    return_perms: bool = False,
    signs: bool = False,
) -> nn.Module | tuple:
    """A copy of ``model_b`` permuted onto ``model_a`` by activation matching on ``data``.

    ``spec`` defaults to the permutation spec of ``model_a`` traced on
    ``example_input``, else on the first samples of ``data``. With ``signs=True``
    the units of the ``spec.odd`` groups (tanh-like) may also be sign-flipped: a
    flipped unit's activations are anti-correlated, so they are assigned on the
    absolute correlation.

    Returns
    -------
    The aligned copy of ``model_b``; with ``return_perms=True`` the pair
    ``(model, perms)`` with ``perms`` as in :func:`match_weights`, or the triple
    ``(model, perms, signs)`` with ``signs=True``.
    """
    _check_models("activation_matching", model_a, model_b)
    if spec is None:
        example_input = resolve_example_input(model_a, example_input, data,
                                              who="activation_matching")
        spec = permutation_spec(model_a, example_input)
    corrs = _group_correlations(spec, model_a, model_b, data, batch_size, max_samples, device)
    perms, flips = _assign_correlations(spec, corrs, signed=bool(signs))
    aligned = copy.deepcopy(model_b)
    aligned.load_state_dict(apply_permutation(spec, model_b.state_dict(), perms, flips))
    if not return_perms:
        return aligned
    return (aligned, perms, flips) if signs else (aligned, perms)
