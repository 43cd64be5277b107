"""Directions in a model's flat parameter space: random (normalised), interpolation, helpers.

A direction is a plain ``Tensor[D]`` (or a stack ``Tensor[k, D]``) laid out by a
:class:`~lossatlas.space.ParamSpace`; anything that returns such tensors (Hessian
eigenvectors, PCA components) can be used wherever a direction is expected.

Normalisation follows Li et al. 2018, "Visualizing the Loss Landscape of Neural
Nets" (reference code ``net_plotter.py``):

- ``"filter"``: every output row of a weight (``weight[i]``: a conv filter, or a
  neuron's incoming weights of a Linear) is scaled to the norm of the same row
  of the model's weight;
- ``"layer"``: every tensor is scaled to the norm of the model's tensor;
- ``"model"``: all entries that move (see ``ignore``) are scaled together to the
  model's norm over the same entries;
- ``"none"``: left as drawn.

Tensors of at most one dimension (biases, norm-layer weights and biases): with
``ignore="biasbn"`` their direction entries are zero; with ``ignore=None`` and
``"filter"`` or ``"layer"`` normalisation the direction *equals the model's
values* there (as ``net_plotter.normalize_directions_for_weights`` does), and
with ``"model"`` / ``"none"`` they are treated like any other entry. Entries of
buffers (BatchNorm running statistics, when the space includes them) are always 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from .._compat import renamed_argument
from ..errors import InputTypeError
from ..space import ParamSpace

__all__ = [
    "NORMALIZATIONS",
    "as_directions",
    "flat_params",
    "hessian_directions",
    "interpolation_direction",
    "normalize_direction",
    "orthogonalize",
    "random_direction",
]

Normalization = Literal["filter", "layer", "model", "none"]
NORMALIZATIONS: tuple[str, ...] = ("filter", "layer", "model", "none")
_EPS = 1e-10  # as in net_plotter.normalize_direction


def _check_options(who: str, normalization: str | None, ignore: str | None) -> tuple[str, str]:
    norm = "none" if normalization is None else normalization
    if norm not in NORMALIZATIONS:
        raise ValueError(
            f"{who}: normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
        )
    ign = "none" if ignore is None else ignore
    if ign not in ("biasbn", "none"):
        raise ValueError(f"{who}: ignore must be 'biasbn' or None, got {ignore!r}")
    return norm, ign


def _space_for(obj, space: ParamSpace | None, who: str) -> ParamSpace:
    if space is not None:
        return space
    if isinstance(obj, nn.Module):
        return ParamSpace(obj)
    given = "a state dict" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
    raise InputTypeError(
        f"{who}: {given} was given without a ParamSpace; pass space=ParamSpace(model)"
    )


@renamed_argument("where", "who")
def flat_params(
    obj: nn.Module | Mapping[str, Tensor] | Tensor, space: ParamSpace | None = None,
    who: str = "flat_params",
) -> Tensor:
    """A model, state dict or flat vector as a flat vector ``Tensor[D]`` of ``space``.

    With ``space=None`` a module is laid out by ``ParamSpace(obj)`` and a tensor is
    returned as it is (after checking it is 1-D).
    """
    if isinstance(obj, Tensor):
        vec = obj.detach()
        if vec.ndim != 1 or (space is not None and vec.shape[0] != space.dim):
            want = f"[{space.dim}]" if space is not None else "[D]"
            raise ValueError(f"{who}: expected a flat vector {want}, got {tuple(vec.shape)}")
        return vec.to(space.dtype) if space is not None else vec
    if isinstance(obj, (nn.Module, Mapping)):
        if space is None:
            if not isinstance(obj, nn.Module):
                raise InputTypeError(f"{who}: a state dict needs space=ParamSpace(model)")
            space = ParamSpace(obj)
        return space.flatten(obj)
    raise InputTypeError(
        f"{who}: expected an nn.Module, a state dict or a Tensor[D], got {type(obj).__name__}"
    )


@renamed_argument("where", "who")
def as_directions(directions, dim: int | None = None, who: str = "as_directions") -> Tensor:
    """Directions as a ``Tensor[k, D]`` (a single ``Tensor[D]`` or array becomes ``[1, D]``)."""
    d = torch.as_tensor(directions)
    if d.ndim == 1:
        d = d[None]
    if d.ndim != 2 or d.shape[0] == 0:
        raise ValueError(f"{who}: directions must be [D] or [k, D], got {tuple(d.shape)}")
    if dim is not None and d.shape[1] != dim:
        raise ValueError(
            f"{who}: directions have length {d.shape[1]}, the parameter space has {dim}"
        )
    if not d.is_floating_point():
        d = d.float()
    return d.detach()


def _normalize_one(d: Tensor, w: Tensor, space: ParamSpace, norm: str, ign: str) -> Tensor:
    d = d.clone()
    active = torch.zeros(space.dim, dtype=torch.bool, device=d.device)
    for s in space.segments:
        ds, ws = d[s.start : s.stop], w[s.start : s.stop]
        if s.is_buffer or (len(s.shape) <= 1 and ign == "biasbn"):
            ds.zero_()
            continue
        if len(s.shape) <= 1 and norm in ("filter", "layer"):  # ignore=None: Li et al. copy w
            ds.copy_(ws)
            continue
        active[s.start : s.stop] = True
        if norm == "filter":
            rows_d = ds.view(s.shape[0], -1)
            rows_w = ws.view(s.shape[0], -1)
            rows_d.mul_(rows_w.norm(dim=1, keepdim=True) / (rows_d.norm(dim=1, keepdim=True) + _EPS))
        elif norm == "layer":
            ds.mul_(ws.norm() / (ds.norm() + _EPS))
    if norm == "model":
        d[active] *= w[active].norm() / (d[active].norm() + _EPS)
    return d


def normalize_direction(
    direction: Tensor,
    reference: nn.Module | Mapping[str, Tensor] | Tensor,
    space: ParamSpace | None = None,
    normalization: Normalization = "filter",
    ignore: Literal["biasbn"] | None = "biasbn",
) -> Tensor:
    """Scale ``direction`` to the model ``reference`` (Li et al. 2018); returns a new tensor.

    Parameters
    ----------
    direction : Tensor[D] or Tensor[k, D] (each row normalised on its own)
    reference : the model (module, state dict or flat ``Tensor[D]``) whose norms are used
    space : layout of both; default ``ParamSpace(reference)`` (parameters only)
    normalization : "filter" | "layer" | "model" | "none" (see the module docstring)
    ignore : "biasbn" zeroes entries of tensors with <= 1 dimension; None keeps them

    Returns
    -------
    Tensor of the same shape as ``direction``.
    """
    norm, ign = _check_options("normalize_direction", normalization, ignore)
    space = _space_for(reference, space, "normalize_direction")
    w = flat_params(reference, space, "normalize_direction (reference)")
    d = as_directions(direction, space.dim, "normalize_direction")
    w = w.to(d.device, d.dtype)
    out = torch.stack([_normalize_one(row, w, space, norm, ign) for row in d])
    return out.reshape(torch.as_tensor(direction).shape)


def random_direction(
    model: nn.Module | Mapping[str, Tensor] | Tensor,
    normalization: Normalization = "filter",
    ignore: Literal["biasbn"] | None = "biasbn",
    generator: torch.Generator | int | None = None,
    space: ParamSpace | None = None,
) -> Tensor:
    """A Gaussian direction ``Tensor[D]`` in the model's parameter space, normalised.

    Entries are drawn i.i.d. from N(0, 1) and then normalised to ``model`` by
    :func:`normalize_direction` (filter normalisation by default: every row of
    every weight has the norm of the model's row; biases and norm-layer entries
    are zero; buffer entries are zero).

    Parameters
    ----------
    model : nn.Module, state dict or flat ``Tensor[D]`` (then ``space`` is required)
    normalization : "filter" | "layer" | "model" | "none"
    ignore : "biasbn" or None
    generator : torch.Generator or an int seed, for reproducible draws
    space : ParamSpace, default ``ParamSpace(model)`` (parameters only)
    """
    _check_options("random_direction", normalization, ignore)
    space = _space_for(model, space, "random_direction")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    d = space.random_like(generator=generator)
    return normalize_direction(d, model, space, normalization, ignore)


def hessian_directions(
    model: nn.Module,
    data,
    k: int = 2,
    *,
    which: Literal["largest", "smallest"] = "largest",
    space: ParamSpace | None = None,
    **kwargs,
) -> tuple[Tensor, Tensor]:
    """Hessian eigenvectors of the mean loss at ``model`` as directions.

    Parameters
    ----------
    model : nn.Module (the point)
    data : (X, y) tensors, Dataset or DataLoader
    k : number of directions
    which : "largest" (top eigenvectors, the sharpest directions) or "smallest"
        (the most negative curvature)
    space : the layout of the returned directions; default ``ParamSpace(model)``
        (parameters only). A space that also lays out buffers (BatchNorm statistics)
        gets zeros there.
    kwargs : passed to :func:`~lossatlas.curvature.hessian_eigen` (``loss_fn``,
        ``bn``, ``params``, ``group``, ``tol``, ``seed``, ...)

    Returns
    -------
    ``(eigenvalues, directions)``: Tensor[k] (loss per squared parameter, in the
    order of ``which``) and unit rows Tensor[k, D] in ``space``.
    """
    from ..curvature.spectrum import hessian_eigen

    if not isinstance(model, nn.Module):
        raise InputTypeError(f"hessian_directions: model must be an nn.Module, got "
                             f"{type(model).__name__}")
    own = ParamSpace(model)
    remap = space is not None and space.names != own.names
    if remap:
        missing = [seg.name for seg in own.segments if seg.name not in space.names]
        if missing:
            raise ValueError(
                f"hessian_directions: parameter {missing[0]!r} is not laid out by the given "
                f"space; build it from the same model"
            )
    res = hessian_eigen(model, data, k, which=which, **kwargs)
    vecs = res.eigenvectors
    if remap:
        out = vecs.new_zeros(vecs.shape[0], space.dim)
        for seg in own.segments:
            dst = space[seg.name]
            out[:, dst.start : dst.stop] = vecs[:, seg.start : seg.stop]
        vecs = out
    return res.eigenvalues, vecs


def interpolation_direction(
    a: nn.Module | Mapping[str, Tensor] | Tensor,
    b: nn.Module | Mapping[str, Tensor] | Tensor,
    space: ParamSpace | None = None,
) -> Tensor:
    """``flat(b) - flat(a)``, a ``Tensor[D]`` (the straight path from ``a`` to ``b``)."""
    if space is None and isinstance(a, nn.Module):
        space = ParamSpace(a)
    fa = flat_params(a, space, "interpolation_direction (a)")
    fb = flat_params(b, space, "interpolation_direction (b)")
    if fa.shape != fb.shape:
        raise ValueError(
            f"interpolation_direction: a has {fa.shape[0]} entries but b has {fb.shape[0]}"
        )
    return fb - fa.to(fb.dtype)


def orthogonalize(direction: Tensor, against: Tensor, normalize: bool = False) -> Tensor:
    """``direction`` minus its projection on the span of ``against`` (Gram-Schmidt).

    Parameters
    ----------
    direction : Tensor[D] or Tensor[k, D]; rows are also made orthogonal to each other,
        in order (modified Gram-Schmidt)
    against : Tensor[D] or Tensor[m, D]; need not be orthonormal (zero rows are skipped)
    normalize : scale each result row to unit norm

    Computed in float64; returned in ``direction``'s dtype and shape.
    """
    d = as_directions(direction, who="orthogonalize (direction)")
    basis_in = as_directions(against, d.shape[1], "orthogonalize (against)").double()
    basis: list[Tensor] = []
    for v in basis_in:
        for q in basis:
            v = v - (v @ q) * q
        n = v.norm()
        if n > 1e-12 * max(1.0, float(basis_in.abs().max())):
            basis.append(v / n)
    out = []
    for v in d.double():
        n0 = v.norm()
        for q in basis:
            v = v - (v @ q) * q
        n = v.norm()
        if n <= 1e-10 * n0 or n0 == 0:
            raise ValueError(
                "orthogonalize: a direction lies in the span of the others (nothing is left "
                "after removing the projection)"
            )
        basis.append(v / n)
        out.append(v / n if normalize else v)
    res = torch.stack(out).to(d.dtype)
    return res.reshape(torch.as_tensor(direction).shape)
