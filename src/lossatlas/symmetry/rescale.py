"""The ReLU positive-rescaling symmetry and its canonical form.

For a hidden unit between two Linear/Conv layers with only positively
homogeneous operations in between (ReLU, LeakyReLU, max/avg pooling, flatten,
dropout; no normalisation, no residual tie), scaling its incoming weights and
bias by ``c > 0`` and its outgoing weights by ``1 / c`` leaves the function
unchanged. The canonical form picks, in every orbit, the point with balanced
norms ``||incoming_i|| = ||outgoing_i||`` for every such unit (the minimiser of
the total squared norm over the orbit, which is unique), reached by iterating
the per-group balance to a fixed point. Remove this symmetry before measuring
distances between models. The groups come from the permutation spec
(``spec.rescalable``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ._inputs import resolve_example_input
from .spec import PermutationSpec, permutation_spec

__all__ = ["apply_rescaling", "canonical_rescaling", "random_rescaling", "rescale_canonical"]


def _scale_axis(t: Tensor, axis: int, c: Tensor, block: int) -> Tensor:
    c = c.to(t.dtype).repeat_interleave(block)
    shape = [1] * t.ndim
    shape[axis] = -1
    return t * c.reshape(shape)


def apply_rescaling(
    spec: PermutationSpec, state: Mapping[str, Tensor], scales: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Scale each rescalable group's incoming weights by ``c`` and outgoing by ``1 / c``.

    ``scales[g]`` is a positive Tensor[n]. Function-preserving for groups in
    ``spec.rescalable``; a KeyError names any other group.
    """
    out = dict(state)
    for g, c in scales.items():
        if g not in spec.rescalable:
            raise KeyError(
                f"apply_rescaling: group {g!r} is not rescalable (rescalable: "
                f"{sorted(spec.rescalable)[:6]})"
            )
        c = torch.as_tensor(c)
        if bool((c <= 0).any()):
            raise ValueError(f"apply_rescaling: scales of group {g!r} must be positive")
        for ax in spec.groups[g]:
            factor = c if ax.role == "in" else 1.0 / c
            out[ax.name] = _scale_axis(out[ax.name], ax.axis, factor, ax.block)
    return out


def random_rescaling(
    spec: PermutationSpec, low: float = 0.25, high: float = 4.0,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Log-uniform random scales in ``[low, high]`` for every rescalable group."""
    lo, hi = torch.log(torch.tensor(low)), torch.log(torch.tensor(high))
    return {
        g: torch.exp(lo + (hi - lo) * torch.rand(spec.sizes[g], generator=generator,
                                                   dtype=torch.float64))
        for g in sorted(spec.rescalable)
    }


def _sq_norms(state: Mapping[str, Tensor], spec: PermutationSpec, g: str, role: str) -> Tensor:
    n = spec.sizes[g]
    total = torch.zeros(n, dtype=torch.float64)
    for ax in spec.groups[g]:
        if ax.role == role:
            t = state[ax.name].detach().double().movedim(ax.axis, 0).reshape(n, -1)
            total += t.pow(2).sum(1).cpu()
    return total


def canonical_rescaling(
    spec: PermutationSpec, state: Mapping[str, Tensor], max_iter: int = 1000, tol: float = 1e-10
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Balance every rescalable unit's incoming and outgoing norms.

    Returns ``(state, scales)``: the canonical state dict and the accumulated
    scales per group (Tensor[n], float64) that map ``state`` onto it. Iterates
    over groups until every ``|log c| < tol`` or ``max_iter`` rounds.
    """
    out = dict(state)
    groups = sorted(spec.rescalable, key=list(spec.groups).index)
    total = {g: torch.ones(spec.sizes[g], dtype=torch.float64) for g in groups}
    for _ in range(int(max_iter)):
        worst = 0.0
        for g in groups:
            inc, outg = _sq_norms(out, spec, g, "in"), _sq_norms(out, spec, g, "out")
            ok = (inc > 0) & (outg > 0)
            c = torch.ones_like(inc)
            c[ok] = (outg[ok] / inc[ok]) ** 0.25
            out = apply_rescaling(spec, out, {g: c})
            total[g] *= c
            worst = max(worst, float(c.log().abs().max()) if len(c) else 0.0)
        if worst < tol:
            break
    return out, total


def rescale_canonical(
    model: nn.Module, spec: PermutationSpec | None = None, example_input: Tensor | None = None,
    max_iter: int = 1000, tol: float = 1e-10, data: Any = None,
) -> nn.Module:
    """A copy of ``model`` in the ReLU-rescaling canonical form (same function).

    ``spec`` defaults to ``permutation_spec(model, example_input, data=data)``
    (traced on ``example_input``, else the first samples of ``data``, else an
    inferred input).

    Returns
    -------
    nn.Module: a new model.
    """
    if spec is None:
        example_input = resolve_example_input(model, example_input, data,
                                              where="rescale_canonical")
        spec = permutation_spec(model, example_input)
    state, _ = canonical_rescaling(spec, model.state_dict(), max_iter, tol)
    new = copy.deepcopy(model)
    new.load_state_dict(state)
    return new
