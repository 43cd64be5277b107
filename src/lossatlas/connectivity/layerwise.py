"""Layer-wise barriers (Adilova et al. 2023): interpolate one group of layers at a time.

For a group ``g`` (tensors whose names start with given prefixes) and the
difference ``d_g = mask_g * (w_b - w_a)``, two paths are measured:

``anchor="a"``: ``w_a + t d_g`` (every other layer held at model_a), and
``anchor="b"``: ``w_b - (1 - t) d_g`` (every other layer held at model_b).

The barrier of each path (relative to its own endpoints) says how much of the
full-path barrier the group is responsible for. All ``2 G`` paths are produced
by one lazy point source over ``(group, anchor, t)`` and evaluated together.

Per-layer noise tolerance (:func:`layer_noise_tolerance`) is the other
layer-wise view of the survey: the loss rise when a filter-normalised random
direction (Li et al. 2018) is added to one group at a time, ``w + s mask_g d``,
at a few noise scales ``s`` (1 = the size of each filter). Layers that tolerate
large noise are the ones a barrier rarely comes from; :func:`layerwise_profile`
puts both side by side for a pair of models.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from .._compat import renamed_argument
from ..errors import InputTypeError
from ..fields import compute_field
from ..points import MappedSource
from ..surfaces.directions import random_direction
from .barriers import (
    Definition,
    _add_error,
    _check_definition,
    _check_metric,
    _check_points,
    _key,
    barrier_from_values,
    make_evaluator,
)

__all__ = [
    "LAYER_NOISE_NAME",
    "default_groups",
    "layer_noise_tolerance",
    "layerwise_barriers",
    "layerwise_profile",
    "write_layer_noise",
]

LAYER_NOISE_NAME = "layer_noise"
"""The stored name of a noise-tolerance result: ``RUN/fields/layer_noise.zarr``."""

_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)


def default_groups(model: nn.Module, by: Literal["layers", "modules"] = "layers") -> dict[str, str]:
    """Group name -> parameter-name prefix.

    ``by="layers"``: every module with its own parameters (Linear, Conv,
    BatchNorm, LayerNorm, ...), e.g. ``{"layers.0": "layers.0."}``. ``by="modules"``:
    the model's top-level children that have parameters (``{"layer1": "layer1."}``),
    plus top-level parameters of the model itself.
    """
    if by not in ("layers", "modules"):
        raise ValueError(f"default_groups: by must be 'layers' or 'modules', got {by!r}")
    groups: dict[str, str] = {}
    if by == "layers":
        for name, m in model.named_modules():
            if any(True for _ in m.parameters(recurse=False)):
                groups[name or "(root)"] = f"{name}." if name else ""
        if "(root)" in groups:  # top-level parameters: match them by exact name
            del groups["(root)"]
            for pname, _ in model.named_parameters(recurse=False):
                groups[pname] = pname
        return groups
    for name, m in model.named_children():
        if any(True for _ in m.parameters()):
            groups[name] = f"{name}."
    for pname, _ in model.named_parameters(recurse=False):
        groups[pname] = pname
    return groups


def _group_prefixes(model: nn.Module, groups, who: str) -> dict[str, list[str]]:
    """Group name -> list of prefixes, from "layers", "modules" or a mapping."""
    if isinstance(groups, str):
        groups = default_groups(model, groups)  # type: ignore[arg-type]
    prefixes = {str(g): [p] if isinstance(p, str) else list(p) for g, p in groups.items()}
    if not prefixes:
        raise ValueError(f"{who}: no layer groups (the model has no parameters?)")
    return prefixes


def _on_device(*tensors: Tensor):
    """A function of a device returning ``tensors`` there, copied once per device (the
    last one kept), so the point builders below move nothing per chunk."""
    cache: dict[torch.device, tuple[Tensor, ...]] = {}

    def get(dev: torch.device) -> tuple[Tensor, ...]:
        if dev not in cache:
            cache.clear()
            cache[dev] = tuple(t.to(dev) for t in tensors)
        return cache[dev]

    return get


def _group_masks(space, prefixes: Mapping[str, list[str]], who: str) -> Tensor:
    """Bool Tensor[G, D]: the entries of each group."""
    masks = []
    for g, ps in prefixes.items():
        try:
            masks.append(space.mask(ps))
        except ValueError as err:
            raise ValueError(f"{who}: group {g!r}: {err}") from None
    return torch.stack(masks)


@renamed_argument("steps", "points")
def layerwise_barriers(
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    groups: Literal["layers", "modules"] | Mapping[str, str | Sequence[str]] = "layers",
    definition: Definition = "entezari",
    points: int = 11,
    metric: Literal["loss", "error"] = "loss",
    bn: Literal["own", "recompute"] | None = None,
    bn_data=None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
    return_paths: bool = False,
    **evaluator_kwargs,
) -> xr.DataArray | tuple[xr.DataArray, xr.Dataset]:
    """Barrier of interpolating each layer group alone, the rest at either endpoint.

    Parameters
    ----------
    model_a, model_b : nn.Module of one architecture
    data : (X, y) tensors, Dataset or DataLoader
    groups : "layers", "modules" or mapping group name -> prefix(es)
        Which tensors move together (see :func:`default_groups`); a tensor
        belongs to a group when its name starts with one of the prefixes.
    definition, points, metric, bn, bn_data, loss_fn, device :
        As in :func:`~lossatlas.connectivity.barrier_curve`. With ``bn="own"`` a
        group's BatchNorm running statistics move with its weights.
    return_paths : bool
        Also return the Dataset over ``(group, anchor, t)``.

    Returns
    -------
    xarray.DataArray ``[group, anchor]`` (anchor in ``["a", "b"]``) of barriers
    in the units of ``metric``; ``attrs``: ``definition``, ``metric``, ``points``,
    ``bn``, ``prefixes`` (JSON-able group -> prefixes).
    """
    _check_definition("layerwise_barriers", definition)
    _check_metric("layerwise_barriers", metric)
    _check_points("layerwise_barriers", points, definition)
    prefixes = _group_prefixes(model_a, groups, "layerwise_barriers")
    evaluator = make_evaluator(model_a, data, bn, bn_data, loss_fn, device, **evaluator_kwargs)
    space = evaluator.space
    mask = _group_masks(space, prefixes, "layerwise_barriers")  # [G, D]
    w_a = space.flatten(model_a, source="model_a")
    w_b = space.flatten(model_b, source="model_b")
    on = _on_device(w_a, w_b, mask)

    def path_points(coords: Tensor) -> Tensor:  # [P, 3] (group, anchor, t) -> [P, D]
        a, b, m = on(coords.device)
        g = coords[:, 0].round().long()
        anchor_b = coords[:, 1:2].round().to(a.dtype)  # 0 -> a, 1 -> b
        t = coords[:, 2:3].to(a.dtype)
        d = m[g].to(a.dtype) * (b - a)[None]
        origin = torch.lerp(a[None], (b[None] - d), anchor_b)
        return origin + t * d

    t = np.linspace(0.0, 1.0, int(points))
    source = MappedSource(
        path_points,
        [np.arange(len(prefixes), dtype=np.float64), np.array([0.0, 1.0]), t],
        ("group", "anchor", "t"),
        key=f"layerwise:{_key(w_a, w_b, mask)}",
    )
    paths = _add_error(compute_field(evaluator, source))
    paths = paths.assign_coords(group=list(prefixes), anchor=["a", "b"], t=t)
    values = paths["loss" if metric == "loss" else "error"]
    out = xr.DataArray(
        barrier_from_values(values.values, t, definition),
        dims=("group", "anchor"),
        coords={"group": list(prefixes), "anchor": ["a", "b"]},
        name=f"layerwise_{metric}_barrier",
    )
    out.attrs.update(
        definition=definition, metric=metric, points=int(points), bn=evaluator.bn,
        units="nats (mean loss per sample)" if metric == "loss" else "fraction",
        prefixes=str(prefixes),
    )
    if return_paths:
        paths.attrs.update(definition=definition, bn=evaluator.bn)
        return out, paths
    return out


def _check_scales(scales, who: str) -> np.ndarray:
    arr = np.asarray(scales, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{who}: scales must be positive finite numbers, got {scales!r}")
    return np.unique(arr)


def _tolerance(scales: np.ndarray, rise: np.ndarray, threshold: float) -> float:
    """The noise scale at which the mean rise first reaches ``threshold`` (linear
    interpolation from rise 0 at scale 0); inf when it never does."""
    s = np.concatenate([[0.0], scales])
    r = np.concatenate([[0.0], rise])
    above = np.flatnonzero(r >= threshold)
    if len(above) == 0:
        return float("inf")
    i = int(above[0])
    return float(s[i - 1] + (threshold - r[i - 1]) * (s[i] - s[i - 1]) / (r[i] - r[i - 1]))


def layer_noise_tolerance(
    model: nn.Module | Tensor,
    data,
    groups: Literal["layers", "modules"] | Mapping[str, str | Sequence[str]] = "layers",
    scales: Sequence[float] = (0.05, 0.1, 0.2, 0.5, 1.0),
    num_draws: int = 4,
    threshold: float = 0.1,
    normalization: str = "filter",
    ignore: Literal["biasbn"] | None = "biasbn",
    seed: int = 0,
    bn: Literal["own", "recompute"] | None = None,
    bn_data=None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
    template: nn.Module | None = None,
    **evaluator_kwargs,
) -> xr.Dataset:
    """Loss rise under filter-normalised noise injected into one layer group at a time.

    For each draw ``r`` a random direction ``d_r`` is drawn over the whole model
    (:func:`~lossatlas.surfaces.random_direction`: filter normalisation by default,
    so each filter's noise has that filter's norm; biases and norm layers get none
    with ``ignore="biasbn"``); the point ``w + s * mask_g * d_r`` perturbs group ``g``
    alone by noise of relative size ``s``. Every ``(group, draw, scale)`` point is
    evaluated in one field.

    Parameters
    ----------
    model : nn.Module, or a flat Tensor[D] with ``template`` giving the architecture
    data : (X, y) tensors, Dataset or DataLoader
    groups : "layers", "modules" or mapping group name -> prefix(es), as in
        :func:`layerwise_barriers`
    scales : noise scales ``s`` (> 0; multiples of the normalised direction; sorted,
        duplicates dropped)
    num_draws : random directions averaged
    threshold : loss rise (nats, or the loss' units) that defines the tolerance
    normalization, ignore : as in :func:`~lossatlas.surfaces.random_direction`
    seed : seeds ``torch.Generator``; draw ``r`` is the ``r``-th direction from it
    bn, bn_data, loss_fn, device, evaluator_kwargs : as in :func:`layerwise_barriers`

    Returns
    -------
    xarray.Dataset with ``loss_rise`` (group, scale): mean over draws of
    ``L(w + s mask_g d_r) - L(w)``; ``loss_rise_std`` (group, scale) over draws;
    ``loss`` (group, draw, scale); ``tolerance`` (group): the scale at which the
    mean rise reaches ``threshold`` (linear interpolation, ``inf`` beyond the
    largest scale, NaN for a group the noise does not touch); ``moved`` (group,
    bool). ``attrs``: ``base_loss``, ``threshold``, ``normalization``, ``ignore``,
    ``seed``, ``bn``, ``units``.
    """
    who = "layer_noise_tolerance"
    scale_axis = _check_scales(scales, who)
    if int(num_draws) < 1:
        raise ValueError(f"{who}: num_draws must be >= 1, got {num_draws}")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"{who}: threshold must be a positive loss rise, got {threshold}")
    net = template if template is not None else model
    if not isinstance(net, nn.Module):
        raise InputTypeError(f"{who}: a flat tensor model needs template= (the architecture)")
    prefixes = _group_prefixes(net, groups, who)
    evaluator = make_evaluator(net, data, bn, bn_data, loss_fn, device, **evaluator_kwargs)
    space = evaluator.space
    mask = _group_masks(space, prefixes, who)
    w = (space.flatten(model, source="model") if isinstance(model, nn.Module)
         else model.detach().to(space.dtype))
    if w.shape != (space.dim,):
        raise ValueError(f"{who}: model must be a flat vector of shape [{space.dim}], got "
                         f"{tuple(w.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    dirs = torch.stack([random_direction(w, normalization, ignore, generator=gen, space=space)
                        for _ in range(int(num_draws))])  # [R, D]
    moved = (mask & (dirs != 0).any(0)[None]).any(1).numpy()  # [G]: noise reaches the group
    on = _on_device(w, dirs, mask)

    def noisy_points(coords: Tensor) -> Tensor:  # [P, 3] (group, draw, scale) -> [P, D]
        base, d, m = on(coords.device)
        g = coords[:, 0].round().long()
        r = coords[:, 1].round().long()
        s = coords[:, 2:3].to(base.dtype)
        return base[None] + s * m[g].to(base.dtype) * d[r]

    source = MappedSource(
        noisy_points,
        [np.arange(len(prefixes), dtype=np.float64), np.arange(int(num_draws), dtype=np.float64),
         np.concatenate([[0.0], scale_axis])],
        ("group", "draw", "scale"),
        key=f"noise:{_key(w, dirs, mask)}",
    )
    field = compute_field(evaluator, source)
    loss = field["loss"].values.astype(np.float64)  # [G, R, 1 + S]
    base = float(loss[:, :, 0].mean())
    rise = loss[:, :, 1:] - loss[:, :, :1]
    mean_rise = rise.mean(1)
    tol = np.array([_tolerance(scale_axis, mean_rise[i], threshold) if moved[i] else np.nan
                    for i in range(len(prefixes))])
    names = list(prefixes)
    return xr.Dataset(
        {
            "loss_rise": (("group", "scale"), mean_rise),
            "loss_rise_std": (("group", "scale"), rise.std(1, ddof=1) if num_draws > 1
                              else np.zeros_like(mean_rise)),
            "loss": (("group", "draw", "scale"), loss[:, :, 1:]),
            "tolerance": ("group", tol),
            "moved": ("group", moved),
        },
        coords={"group": names, "draw": np.arange(int(num_draws)), "scale": scale_axis},
        attrs={"base_loss": base, "threshold": float(threshold),
               "normalization": normalization, "ignore": str(ignore), "seed": int(seed),
               "bn": evaluator.bn, "prefixes": str(prefixes),
               "units": "loss rise in the loss' units (nats for cross-entropy); scale in "
                        f"multiples of the {normalization}-normalised direction"},
    )


@renamed_argument("steps", "points")
def layerwise_profile(
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    groups: Literal["layers", "modules"] | Mapping[str, str | Sequence[str]] = "layers",
    scales: Sequence[float] = (0.05, 0.1, 0.2, 0.5, 1.0),
    num_draws: int = 4,
    threshold: float = 0.1,
    definition: Definition = "entezari",
    points: int = 11,
    seed: int = 0,
    bn: Literal["own", "recompute"] | None = None,
    bn_data=None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
) -> xr.Dataset:
    """Layer-wise barriers between two models next to each model's per-layer noise tolerance.

    Returns
    -------
    xarray.Dataset over ``group``: ``barrier`` (group, anchor) from
    :func:`layerwise_barriers` (loss, ``definition``), ``loss_rise`` (model, group,
    scale) and ``tolerance`` (model, group) from :func:`layer_noise_tolerance` at
    ``model_a`` and ``model_b`` (``model`` in ``["a", "b"]``, the same draws).
    """
    prefixes = _group_prefixes(model_a, groups, "layerwise_profile")
    barriers = layerwise_barriers(model_a, model_b, data, prefixes, definition, points, "loss",
                                  bn, bn_data, loss_fn, device)
    noise = [layer_noise_tolerance(m, data, prefixes, scales, num_draws, threshold, seed=seed,
                                   bn=bn, bn_data=bn_data, loss_fn=loss_fn, device=device)
             for m in (model_a, model_b)]
    out = xr.Dataset({
        "barrier": barriers,
        "loss_rise": xr.concat([n["loss_rise"] for n in noise], dim="model"),
        "tolerance": xr.concat([n["tolerance"] for n in noise], dim="model"),
    }).assign_coords(model=["a", "b"])
    out.attrs.update(definition=definition, threshold=float(threshold), bn=barriers.attrs["bn"],
                     base_loss_a=noise[0].attrs["base_loss"],
                     base_loss_b=noise[1].attrs["base_loss"],
                     units="barrier and loss rise in the loss' units (nats for cross-entropy)")
    return out


def write_layer_noise(run_dir: str | os.PathLike, ds: xr.Dataset,
                      name: str = LAYER_NOISE_NAME) -> Path:
    """Store a :func:`layer_noise_tolerance` or :func:`layerwise_profile` result in the
    run directory as ``RUN/fields/NAME.zarr`` (default ``layer_noise``, what the
    report's "Layer noise tolerance" section reads); returns its path.

    Raises ``ValueError`` when ``ds`` has no ``tolerance`` and ``loss_rise`` (it is not
    such a result).
    """
    from ..store import Run

    missing = [v for v in ("tolerance", "loss_rise") if v not in ds]
    if missing:
        raise ValueError(f"write_layer_noise: the dataset has no {missing} variable(s); pass "
                         "the result of layer_noise_tolerance or layerwise_profile")
    return Run(run_dir).save_dataset(name, ds)
