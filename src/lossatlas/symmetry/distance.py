"""Distances and barriers between two models modulo symmetry, before and after alignment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from .._compat import renamed_argument
from ..connectivity.barriers import barrier_curve
from ..space import ParamSpace
from ._inputs import resolve_example_input
from .matching import activation_matching, weight_matching
from .rescale import rescale_canonical
from .spec import PermutationSpec, permutation_spec

__all__ = ["align", "compare_alignment", "parameter_distance"]


def parameter_distance(model_a: nn.Module, model_b: nn.Module) -> dict[str, float]:
    """Euclidean distance, relative distance and cosine similarity of the parameters.

    Returns ``{"distance": ||w_b - w_a||, "relative_distance": ||w_b - w_a|| /
    ||w_a||, "cosine": <w_a, w_b> / (||w_a|| ||w_b||)}`` (parameters only, no buffers).
    """
    space = ParamSpace(model_a)
    a = space.flatten(model_a, "model_a").double()
    b = space.flatten(model_b, "model_b").double()
    d = float(torch.linalg.vector_norm(b - a))
    na, nb = float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))
    return {
        "distance": d,
        "relative_distance": d / na if na else float("nan"),
        "cosine": float(a @ b) / (na * nb) if na and nb else float("nan"),
    }


def align(
    model_a: nn.Module,
    model_b: nn.Module,
    method: Literal["weight", "activation"] = "weight",
    data=None,
    rescale: bool = False,
    spec: PermutationSpec | None = None,
    example_input: Tensor | None = None,
    signs: bool = False,
) -> tuple[nn.Module, nn.Module]:
    """``(model_a', model_b')`` with the symmetries removed: both in the
    ReLU-rescaling canonical form when ``rescale``, and ``model_b'`` permuted onto
    ``model_a'`` by weight or activation matching (with ``signs``, signed
    permutations: the units of the ``spec.odd`` groups may also be sign-flipped).
    Both compute their original functions.

    ``spec`` defaults to ``model_a``'s permutation spec traced on
    ``example_input``, else on the first samples of ``data``, else on an input
    inferred from the model (:func:`~lossatlas.symmetry.infer_example_input`).

    Returns
    -------
    ``(model_a', model_b')``: new models (``model_a`` itself when not ``rescale``).
    """
    if method not in ("weight", "activation"):
        raise ValueError(f"align: method must be 'weight' or 'activation', got {method!r}")
    if spec is None:
        spec = permutation_spec(model_a, resolve_example_input(model_a, example_input, data,
                                                               who="align"))
    if rescale:
        model_a = rescale_canonical(model_a, spec)
        model_b = rescale_canonical(model_b, spec)
    if method == "weight":
        aligned = weight_matching(model_a, model_b, spec, signs=signs)
    else:
        if data is None:
            raise ValueError("align: method='activation' needs data")
        aligned = activation_matching(model_a, model_b, data, spec, signs=signs)
    return model_a, aligned  # type: ignore[return-value]


@renamed_argument("steps", "points")
def compare_alignment(
    model_a: nn.Module,
    model_b: nn.Module,
    data=None,
    method: Literal["weight", "activation"] = "weight",
    rescale: bool = False,
    definition: Literal["entezari", "midpoint", "mean"] = "entezari",
    points: int = 25,
    bn: Literal["own", "recompute"] = "own",
    bn_data=None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
    example_input: Tensor | None = None,
    spec: PermutationSpec | None = None,
    signs: bool = False,
) -> xr.Dataset:
    """Distances (and barriers on ``data``) before and after alignment, side by side.

    The alignment is :func:`align` (``spec``, ``example_input``, ``data`` and
    ``signs`` as there: the spec is traced on ``example_input``, else on ``data``'s first
    samples, else on an inferred input).

    Returns
    -------
    xarray.Dataset over ``alignment = ["none", "aligned"]`` with ``distance``,
    ``relative_distance``, ``cosine`` (parameters) and, when ``data`` is given,
    ``loss_barrier`` (nats) and ``error_barrier`` (fraction); ``attrs``:
    ``method``, ``rescale``, ``definition``, ``bn``.
    """
    a2, b2 = align(model_a, model_b, method, data, rescale, spec, example_input, signs)
    rows = {"none": (model_a, model_b), "aligned": (a2, b2)}
    values: dict[str, list[float]] = {}
    for ma, mb in rows.values():
        for k, v in parameter_distance(ma, mb).items():
            values.setdefault(k, []).append(v)
        if data is not None:
            ds = barrier_curve(ma, mb, data, definition, points, bn, bn_data, loss_fn, device)
            values.setdefault("loss_barrier", []).append(ds.attrs["barrier"])
            values.setdefault("error_barrier", []).append(ds.attrs.get("error_barrier", np.nan))
    out = xr.Dataset(
        {k: ("alignment", np.asarray(v)) for k, v in values.items()},
        coords={"alignment": list(rows)},
    )
    out.attrs.update(method=method, rescale=int(rescale), definition=definition, bn=bn,
                     signs=int(signs))
    return out
