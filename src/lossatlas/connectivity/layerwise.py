"""Layer-wise barriers (Adilova et al. 2023): interpolate one group of layers at a time.

For a group ``g`` (tensors whose names start with given prefixes) and the
difference ``d_g = mask_g * (w_b - w_a)``, two paths are measured:

``anchor="a"``: ``w_a + t d_g`` (every other layer held at model_a), and
``anchor="b"``: ``w_b - (1 - t) d_g`` (every other layer held at model_b).

The barrier of each path (relative to its own endpoints) says how much of the
full-path barrier the group is responsible for. All ``2 G`` paths are produced
by one lazy point source over ``(group, anchor, t)`` and evaluated together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from ..fields import compute_field
from ..points import MappedSource
from .barriers import (
    Definition,
    _add_error,
    _check_definition,
    _check_metric,
    _check_steps,
    _key,
    barrier_from_values,
    make_evaluator,
)

__all__ = ["default_groups", "layerwise_barriers"]

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


def layerwise_barriers(
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    groups: Literal["layers", "modules"] | Mapping[str, str | Sequence[str]] = "layers",
    definition: Definition = "entezari",
    steps: int = 11,
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
    definition, steps, metric, bn, bn_data, loss_fn, device :
        As in :func:`~lossatlas.connectivity.barrier_curve`. With ``bn="own"`` a
        group's BatchNorm running statistics move with its weights.
    return_paths : bool
        Also return the Dataset over ``(group, anchor, t)``.

    Returns
    -------
    xarray.DataArray ``[group, anchor]`` (anchor in ``["a", "b"]``) of barriers
    in the units of ``metric``; ``attrs``: ``definition``, ``metric``, ``steps``,
    ``bn``, ``prefixes`` (JSON-able group -> prefixes).
    """
    _check_definition("layerwise_barriers", definition)
    _check_metric("layerwise_barriers", metric)
    _check_steps("layerwise_barriers", steps, definition)
    if isinstance(groups, str):
        groups = default_groups(model_a, groups)  # type: ignore[arg-type]
    prefixes = {str(g): [p] if isinstance(p, str) else list(p) for g, p in groups.items()}
    if not prefixes:
        raise ValueError("layerwise_barriers: no layer groups (the model has no parameters?)")
    evaluator = make_evaluator(model_a, data, bn, bn_data, loss_fn, device, **evaluator_kwargs)
    space = evaluator.space
    masks = []
    for g, ps in prefixes.items():
        try:
            masks.append(space.mask(ps))
        except ValueError as err:
            raise ValueError(f"layerwise_barriers: group {g!r}: {err}") from None
    mask = torch.stack(masks)  # [G, D]
    w_a = space.flatten(model_a, source="model_a")
    w_b = space.flatten(model_b, source="model_b")
    cache: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    def path_points(coords: Tensor) -> Tensor:  # [P, 3] (group, anchor, t) -> [P, D]
        dev = coords.device
        if dev not in cache:
            cache.clear()
            cache[dev] = (w_a.to(dev), w_b.to(dev), mask.to(dev))
        a, b, m = cache[dev]
        g = coords[:, 0].round().long()
        anchor_b = coords[:, 1:2].round().to(a.dtype)  # 0 -> a, 1 -> b
        t = coords[:, 2:3].to(a.dtype)
        d = m[g].to(a.dtype) * (b - a)[None]
        origin = torch.lerp(a[None], (b[None] - d), anchor_b)
        return origin + t * d

    t = np.linspace(0.0, 1.0, int(steps))
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
        definition=definition, metric=metric, steps=int(steps), bn=evaluator.bn,
        units="nats (mean loss per sample)" if metric == "loss" else "fraction",
        prefixes=str(prefixes),
    )
    if return_paths:
        paths.attrs.update(definition=definition, bn=evaluator.bn)
        return out, paths
    return out
