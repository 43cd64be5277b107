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

Normalised layers have a scale symmetry too: a Linear/Conv whose output feeds
only a BatchNorm can scale each output unit by ``c_i > 0`` (weights and bias,
with the BatchNorm's running mean by ``c_i`` and running variance by ``c_i^2``),
one feeding only a LayerNorm the whole layer by one ``c > 0``; the function is
unchanged up to the norm's ``eps`` (``eps / var`` relative). When the norm has an
affine weight ``gamma`` the scale may be negative too: ``c < 0`` negates the
normalised value, and ``gamma`` times ``sign(c)`` (per unit for a BatchNorm, the whole
weight for a LayerNorm) restores the output exactly. The canonical form scales such
units (layers) to unit weight norm and then picks the sign with ``gamma_i >= 0`` (a
BatchNorm) or ``sum(gamma) >= 0`` (a LayerNorm) (``spec.norm_scales``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import MissingKeyError
from ._inputs import resolve_example_input
from .spec import NormScale, PermutationSpec, permutation_spec, scale_axis

__all__ = [
    "apply_norm_scaling",
    "apply_rescaling",
    "canonical_rescaling",
    "random_norm_scaling",
    "random_rescaling",
    "rescale_canonical",
]


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
            raise MissingKeyError(
                f"apply_rescaling: group {g!r} is not rescalable (rescalable: "
                f"{sorted(spec.rescalable)[:6]})"
            )
        c = torch.as_tensor(c)
        if bool((c <= 0).any()):
            raise ValueError(f"apply_rescaling: scales of group {g!r} must be positive")
        for ax in spec.groups[g]:
            factor = c if ax.role == "in" else 1.0 / c
            out[ax.name] = scale_axis(out[ax.name], ax.axis, factor, ax.block, ax.segments)
    return out


def _norm_units(ns: NormScale, state: Mapping[str, Tensor]) -> int:
    return 1 if ns.kind == "layer" else state[f"{ns.producer}.weight"].shape[ns.axis]


def apply_norm_scaling(
    spec: PermutationSpec, state: Mapping[str, Tensor], scales: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Scale the layers before a BatchNorm / LayerNorm (``spec.norm_scales``).

    ``scales[producer]`` is a nonzero Tensor[n] (one per output unit, before a
    BatchNorm) or Tensor[1] (the whole layer, before a LayerNorm); negative entries
    only when the norm has an affine weight. The producer's weight and bias are
    multiplied by it, a BatchNorm's running mean by ``c`` and running variance by
    ``c ** 2``, the norm's weight by ``sign(c)``: the function is unchanged up to the
    norm's eps.
    """
    by_producer = {ns.producer: ns for ns in spec.norm_scales}
    out = dict(state)
    for name, c in scales.items():
        if name not in by_producer:
            raise MissingKeyError(
                f"apply_norm_scaling: {name!r} does not feed a norm layer alone (scalable "
                f"layers: {sorted(by_producer)[:6]})"
            )
        ns = by_producer[name]
        c = torch.as_tensor(c, dtype=torch.float64).reshape(-1)
        n = _norm_units(ns, out)
        if c.shape != (n,):
            raise ValueError(f"apply_norm_scaling: scales of {name!r} must be a Tensor[{n}] "
                             f"({ns.kind} scale before {ns.norm}), got shape {tuple(c.shape)}")
        gamma = f"{ns.norm}.weight"
        if bool((c == 0).any()):
            raise ValueError(f"apply_norm_scaling: scales of {name!r} must be nonzero")
        if bool((c < 0).any()) and gamma not in out:
            raise ValueError(f"apply_norm_scaling: scales of {name!r} must be positive: "
                             f"{ns.norm} has no affine weight to absorb a sign")
        weight = f"{ns.producer}.weight"
        unit = c if ns.kind == "unit" else c.expand(out[weight].shape[ns.axis])
        out[weight] = scale_axis(out[weight], ns.axis, unit)
        if bool((c < 0).any()):  # the normalised value flips; gamma flips it back
            out[gamma] = (scale_axis(out[gamma], 0, torch.sign(c)) if ns.kind == "unit"
                          else out[gamma] * torch.sign(c).to(out[gamma].dtype))
        scaled = [(f"{ns.producer}.bias", unit)]
        if ns.kind == "unit":  # a BatchNorm's statistics follow its input
            scaled += [(f"{ns.norm}.running_mean", unit), (f"{ns.norm}.running_var", unit**2)]
        for key, factor in scaled:
            if key in out:
                out[key] = scale_axis(out[key], 0, factor)
    return out


def random_norm_scaling(
    spec: PermutationSpec, state: Mapping[str, Tensor], low: float = 0.25, high: float = 4.0,
    generator: torch.Generator | None = None, signs: bool = False,
) -> dict[str, Tensor]:
    """Log-uniform random scales in ``[low, high]`` for every layer in ``spec.norm_scales``
    (Tensor[n] per unit before a BatchNorm, Tensor[1] before a LayerNorm); with ``signs``
    each also negated with probability 1/2 where the norm has an affine weight."""
    lo, hi = torch.log(torch.tensor(low)), torch.log(torch.tensor(high))
    out = {}
    for ns in spec.norm_scales:
        n = _norm_units(ns, state)
        c = torch.exp(lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64))
        if signs and f"{ns.norm}.weight" in state:
            c = c * (2 * torch.randint(0, 2, (n,), generator=generator) - 1)
        out[ns.producer] = c
    return out


def _gamma_signs(spec: PermutationSpec, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Scales of -1 / +1 that make every norm's weight ``gamma`` non-negative (per unit
    before a BatchNorm) or of non-negative sum (before a LayerNorm); norms without a
    weight are left out."""
    out = {}
    for ns in spec.norm_scales:
        gamma = state.get(f"{ns.norm}.weight")
        if gamma is None:
            continue
        g = gamma.detach().double().cpu()
        g = g.reshape(-1) if ns.kind == "unit" else g.sum().reshape(1)
        out[ns.producer] = torch.where(g < 0, -1.0, 1.0).double()
    return out


def _unit_norm_scales(spec: PermutationSpec, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Scales that bring each layer of ``spec.norm_scales`` to unit weight norm (per unit
    before a BatchNorm, per layer before a LayerNorm); 1 where the norm is 0."""
    out = {}
    for ns in spec.norm_scales:
        w = state[f"{ns.producer}.weight"].detach().double().cpu()
        if ns.kind == "unit":
            norm = w.movedim(ns.axis, 0).reshape(w.shape[ns.axis], -1).norm(dim=1)
        else:
            norm = w.norm().reshape(1)
        out[ns.producer] = torch.where(norm > 0, 1.0 / norm.clamp_min(1e-300),
                                       torch.ones_like(norm))
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


def _settled(c: Tensor, rounding: float) -> Tensor:
    """``c`` with entries within ``rounding`` of 1 (in log) set to 1."""
    return torch.where(c.log().abs() <= rounding, torch.ones_like(c), c)


def canonical_rescaling(
    spec: PermutationSpec, state: Mapping[str, Tensor], max_iter: int = 1000, tol: float = 1e-10
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Balance every rescalable unit's incoming and outgoing norms, and bring every layer
    before a BatchNorm (per unit) or LayerNorm (per layer) to unit weight norm, with the
    sign that makes the norm's weight non-negative (its sum, for a LayerNorm).

    Returns ``(state, scales)``: the canonical state dict and the accumulated
    scales that map ``state`` onto it (float64): Tensor[n] per rescalable group,
    and under ``"norm:" + producer`` those of the layers before a norm. Iterates
    until every ``|log c| < tol`` or ``max_iter`` rounds (the two kinds of scale
    interact when a ReLU unit feeds a layer before a norm; alternating them
    converges like Sinkhorn scaling). Every model of one orbit (rescaled by
    :func:`apply_rescaling` / :func:`apply_norm_scaling`) has the same canonical form.
    """
    out = dict(state)
    groups = sorted(spec.rescalable, key=list(spec.groups).index)
    # scales within a few roundings of 1 are left at 1: a float32 state would otherwise
    # random-walk by ~1e-7 a round and never meet tol
    floats = [t.dtype for t in state.values() if torch.is_tensor(t) and t.is_floating_point()]
    rounding = 8 * max((torch.finfo(d).eps for d in floats), default=0.0)
    total = {g: torch.ones(spec.sizes[g], dtype=torch.float64) for g in groups}
    for _ in range(int(max_iter)):
        worst = 0.0
        for g in groups:
            inc, outg = _sq_norms(out, spec, g, "in"), _sq_norms(out, spec, g, "out")
            ok = (inc > 0) & (outg > 0)
            c = torch.ones_like(inc)
            c[ok] = (outg[ok] / inc[ok]) ** 0.25
            c = _settled(c, rounding)
            out = apply_rescaling(spec, out, {g: c})
            total[g] *= c
            worst = max(worst, float(c.log().abs().max()) if len(c) else 0.0)
        unit = {k: _settled(c, rounding) for k, c in _unit_norm_scales(spec, out).items()}
        out = apply_norm_scaling(spec, out, unit)
        for name, c in unit.items():
            key = f"norm:{name}"
            total[key] = total[key] * c if key in total else c
            worst = max(worst, float(c.log().abs().max()))
        if worst < tol:
            break
    flips = _gamma_signs(spec, out)
    out = apply_norm_scaling(spec, out, flips)
    for name, c in flips.items():
        key = f"norm:{name}"
        total[key] = total[key] * c if key in total else c
    return out, total


def rescale_canonical(
    model: nn.Module, spec: PermutationSpec | None = None, example_input: Tensor | None = None,
    max_iter: int = 1000, tol: float = 1e-10, data: Any = None,
) -> nn.Module:
    """A copy of ``model`` in the rescaling canonical form (same function, up to the
    eps of norm layers): see :func:`canonical_rescaling`.

    ``spec`` defaults to ``permutation_spec(model, example_input, data=data)``
    (traced on ``example_input``, else the first samples of ``data``, else an
    inferred input).

    Returns
    -------
    nn.Module: a new model.
    """
    if spec is None:
        example_input = resolve_example_input(model, example_input, data,
                                              who="rescale_canonical")
        spec = permutation_spec(model, example_input)
    state, _ = canonical_rescaling(spec, model.state_dict(), max_iter, tol)
    new = copy.deepcopy(model)
    new.load_state_dict(state)
    return new
