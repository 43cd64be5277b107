"""An atlas's population measured model by model, not through the map.

Functions of an :class:`~lossatlas.atlas.Atlas` (its population, data, loss, device and
BatchNorm policy): :func:`eval_mode_values` (each checkpoint as saved), :func:`align`
(weight matching onto a reference, an :class:`Alignment`), :func:`connect` (barrier
matrices, curves) and :func:`terrain` (Hessian spectrum, trace, sharpness, LLC);
:func:`select` turns population indices into models and names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import xarray as xr
from torch import Tensor, nn

from .evaluate import Evaluator

if TYPE_CHECKING:
    from .atlas import Atlas

__all__ = ["Alignment", "align", "connect", "eval_mode_values", "select", "terrain"]


@dataclasses.dataclass
class Alignment:
    """Models permuted onto a reference by weight matching (:meth:`Atlas.align`).

    Attributes: ``reference`` (population index), ``indices`` (population indices of
    ``models``), ``models`` (list of nn.Module: the reference itself, the others aligned
    copies computing the same functions), ``perms`` (per model, dict group -> LongTensor
    permutation as in :func:`~lossatlas.symmetry.match_weights`; identity at the
    reference) and ``points`` (Tensor[P, D], the aligned models' flat parameters).
    """

    reference: int
    indices: list[int]
    models: list[nn.Module]
    perms: list[dict[str, Tensor]]
    points: Tensor


def eval_mode_values(atlas: Atlas) -> dict[str, Tensor] | None:
    """Loss and metrics of every model in eval mode with its own stored BatchNorm
    statistics (the checkpoint as saved), Tensor[N] each; None for a model without
    BatchNorm statistics, or when the population does not keep them."""
    pop = atlas.population
    if atlas.bn == "none" or (atlas.bn == "recompute"
                              and not getattr(pop, "statistics", None)):
        return None
    if atlas.bn == "own":
        return atlas.true_values()
    ev = Evaluator(pop.model(0), atlas.evaluator.data, loss_fn=atlas.evaluator.loss_fn,
                   device=atlas.device, precision=atlas.evaluator.precision, bn="own",
                   output=atlas.evaluator.output)
    return ev.evaluate(torch.stack([ev.space.flatten(pop.model(i))
                                    for i in range(len(pop))]))


def select(population, indices: Sequence[int] | None
           ) -> tuple[list[int], list[nn.Module], list[str]]:
    """``(indices, models, names)`` of the population's models ``indices`` (default all);
    a name is ``"i:variant"`` (or ``"i"`` without a variant). ValueError for an index
    outside the population or none at all."""
    n = len(population)
    idx = list(range(n)) if indices is None else [int(i) for i in indices]
    bad = [i for i in idx if not 0 <= i < n]
    if bad or not idx:
        raise ValueError(f"Atlas: indices must name models 0..{n - 1} of the population, "
                         f"got {list(indices) if indices is not None else idx}")
    labels = population.labels
    names = [f"{i}:{labels[i]['variant']}" if "variant" in labels[i] else str(i)
             for i in idx]
    return idx, [population.model(i) for i in idx], names


def align(atlas: Atlas, reference: int, indices: Sequence[int] | None) -> Alignment:
    """The models (default all; population ``indices``) permuted onto the model
    ``reference`` by weight matching (:func:`lossatlas.symmetry.weight_matching`, the
    permutation spec traced once on the atlas's data)."""
    from .symmetry import permutation_spec, weight_matching

    idx, models, _ = select(atlas.population, indices)
    ref = select(atlas.population, [reference])[1][0]
    spec = permutation_spec(ref, data=atlas.data)
    out, perms = [], []
    for i, m in zip(idx, models, strict=True):
        if i == reference:
            out.append(m)
            perms.append({g: torch.arange(n) for g, n in spec.sizes.items()})
            continue
        aligned, p = weight_matching(ref, m, spec, return_perms=True)
        out.append(aligned)
        perms.append(p)
    space = atlas.population.space
    return Alignment(reference, idx, out, perms, torch.stack([space.flatten(m)
                                                               for m in out]))


def connect(atlas: Atlas, align_models: bool, curves: bool | Sequence[tuple[int, int]],
            points: int, indices: Sequence[int] | None, curve_kwargs: dict[str, Any]
            ) -> dict[str, Any]:
    """Loss barriers between the models (:meth:`Atlas.connect`, its ``align`` here
    ``align_models``): :func:`lossatlas.connectivity.population_barrier_matrices` on the
    atlas's data, loss and BatchNorm policy, and with ``curves`` a
    :func:`lossatlas.connectivity.train_curve` per pair (``curve_kwargs`` passed on)."""
    from .connectivity import train_curve
    from .connectivity.population import population_barrier_matrices

    idx, models, names = select(atlas.population, indices)
    bn = getattr(atlas.population, "bn", None)
    out: dict[str, Any] = population_barrier_matrices(
        models, names, atlas.data, align=align_models, device=atlas.device, points=points,
        bn=bn, loss_fn=atlas.loss_fn)
    if curves:
        pairs = ([(a, b) for k, a in enumerate(idx) for b in idx[k + 1:]]
                 if curves is True else [(int(a), int(b)) for a, b in curves])
        ends = dict(zip(idx, align(atlas, idx[0], idx).models if align_models else models,
                        strict=True))
        missing = sorted({i for p in pairs for i in p} - set(ends))
        if missing:
            raise ValueError(f"Atlas.connect: curves name models {missing} that are not "
                             f"among indices={idx}")
        out["curves"] = {(a, b): train_curve(ends[a], ends[b], atlas.data, points=points,
                                             loss_fn=atlas.loss_fn, device=atlas.device,
                                             **curve_kwargs) for a, b in pairs}
    return out


def terrain(atlas: Atlas, indices: Sequence[int] | None, measures: Sequence[str],
            **kwargs: Any) -> xr.Dataset:
    """:func:`lossatlas.curvature.terrain` at the models (default all; population
    ``indices``) on the atlas's data, loss and BatchNorm policy; its ``xarray.Dataset``
    over ``model`` (coordinates: the model names)."""
    from .curvature import terrain as curvature_terrain

    idx, models, names = select(atlas.population, indices)
    return curvature_terrain(models, models[0], atlas.data, measures=measures,
                             loss_fn=atlas.loss_fn, bn=getattr(atlas.population, "bn", None),
                             device=atlas.device, labels=names, **kwargs)
