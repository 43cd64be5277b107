"""The seed's Table 2: mode-connectivity curves projected onto the map.

A reference model (the final checkpoint of one variant, G in the seed) is joined to
the final model of every other variant by a trained quadratic Bezier curve
(:func:`~lossatlas.connectivity.train_curve`); the curve's interior points are
projected onto a map fitted for each method (autoencoder, kernel PCA, UMAP, ...) of
the same population, decoded back to parameters and evaluated. For each pair and map:
the true loss range along the curve, the range of the loss at the decoded projected
points and their median absolute error (nats), for the map fitted on the models only
("projected", the seed's protocol) and, with ``include=True``, for a map fitted on the
models and the curves (``Atlas.embed(include=...)``, "included").

::

    table = curve_table(population, (X, y), "runs/mine/table2", atlases={"ae": atlas})
    write_curve_table(table, "runs/mine")      # RUN/table2.json, read by the report
    table.to_dict()                            # rows for summary.json
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor
from tqdm.auto import tqdm

from ..store import atomic_write_json
from .curves import curve_points, train_curve

__all__ = ["CurveTable", "curve_table", "final_models", "write_curve_table"]

log = logging.getLogger(__name__)

TABLE_FILE = "table2.json"


def final_models(population) -> tuple[list[int], list[str]]:
    """Population indices of the final checkpoint of every run and a name for each (its
    ``variant`` label, or ``variant/seedS`` when a variant has several seeds)."""
    idx = population.final_indices()
    labels = [population.labels[i] for i in idx]
    variants = [str(lab.get("variant", i)) for lab, i in zip(labels, idx, strict=True)]
    if len(set(variants)) == len(variants):
        return idx, variants
    return idx, [f"{v}/seed{lab.get('seed', i)}"
                 for v, lab, i in zip(variants, labels, idx, strict=True)]


def _reference(reference: str | int | None, idx: list[int], names: list[str]) -> int:
    """Position (in ``idx``) of the reference final model."""
    if reference is None:
        return len(idx) - 1
    if isinstance(reference, str):
        if reference not in names:
            raise ValueError(f"curve_table: reference {reference!r} is not a variant of the "
                             f"population; variants: {names}")
        return names.index(reference)
    if int(reference) not in idx:
        raise ValueError(f"curve_table: reference {reference} is not the index of a final "
                         f"model; final models: {dict(zip(names, idx, strict=True))}")
    return idx.index(int(reference))


def _embed_config(atlas) -> dict[str, Any]:
    """The embedding settings of a fitted atlas (method, dim, exact, standardize, kwargs)."""
    cfg = atlas.run.read().get("embedding")
    if not cfg:
        raise ValueError(f"curve_table: the atlas in {atlas.path} has no stored embedding; "
                         "call atlas.embed() first")
    return cfg


@dataclass
class CurveTable:
    """Curves between a reference model and every other variant's final model, projected
    onto one map per method.

    Attributes
    ----------
    table : xarray.Dataset
        Dimensions ``embedding`` (the method), ``pair`` (``"G-A"``...), ``t`` (curve points), ``bound``
        (``lo``, ``hi``), ``latent``. Variables (loss in nats): ``true_loss [pair, t]``,
        ``true_range [pair, bound]``, ``projected_loss [embedding, pair, t]``,
        ``projected_range [embedding, pair, bound]``, ``projected_mae [embedding, pair]``,
        ``projected_codes [embedding, pair, t, latent]``; the same with ``included_``
        (NaN when not computed), ``included_raw_loss`` and ``included_raw_mae`` (the
        included codes decoded without the residual correction, which pins only the
        models and can add their residuals at included points between crowded models),
        ``span_loss [pair, t]`` and ``span_mae [pair]`` (the
        loss at the curve points' orthogonal projection onto the models' affine span, the
        floor of any map fitted on the models alone: curve points off the span lose
        their off-span part), ``curve_barrier [pair]`` and ``line_barrier [pair]``
        (nats, Entezari definition). ``attrs``: units, reference, steps, seconds.
    points : {pair: Tensor[T, D]}
        The projected curve points (population layout).
    bends : {pair: Tensor[1, D]}
        Each curve's trained control point (``curve_points(bend, w_ref, w_other, t)``).
    atlases, included_atlases : {method: Atlas}
        The maps the curves were projected onto (fitted on the models only) and, with
        ``include``, the maps fitted on the models and the curves.
    skipped : {method: reason}
        Methods that could not be fitted (e.g. UMAP not installed).
    """

    table: xr.Dataset
    points: dict[str, Tensor]
    bends: dict[str, Tensor]
    atlases: dict[str, Any] = field(default_factory=dict)
    included_atlases: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (method, pair): ranges and median absolute errors (nats)."""
        ds = self.table
        out = []
        for m in ds["embedding"].values.tolist():
            for p in ds["pair"].values.tolist():
                sel = ds.sel(embedding=m, pair=p)
                row = {"method": m, "pair": p,
                       "true_range": ds["true_range"].sel(pair=p).values.tolist(),
                       "projected_range": sel["projected_range"].values.tolist(),
                       "projected_mae": float(sel["projected_mae"]),
                       "span_mae": float(ds["span_mae"].sel(pair=p)),
                       "curve_barrier": float(ds["curve_barrier"].sel(pair=p))}
                if np.isfinite(float(sel["included_mae"])):
                    row.update(included_range=sel["included_range"].values.tolist(),
                               included_mae=float(sel["included_mae"]),
                               included_raw_mae=float(sel["included_raw_mae"]))
                out.append(row)
        return out

    def median_errors(self) -> dict[str, dict[str, float]]:
        """Per method, the median over pairs of the curves' median absolute errors
        (``projected`` and ``included``, nats; NaN when not computed)."""
        ds = self.table
        return {m: {k: float(np.nanmedian(ds[f"{k}_mae"].sel(embedding=m).values))
                    if np.isfinite(ds[f"{k}_mae"].sel(embedding=m).values).any() else float("nan")
                    for k in ("projected", "included")}
                for m in ds["embedding"].values.tolist()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: settings, rows (see :meth:`rows`), median errors per
        method, skipped methods; loss in nats."""
        return {"reference": self.table.attrs["reference"], "units": "nats",
                "pairs": self.table["pair"].values.tolist(),
                "methods": self.table["embedding"].values.tolist(),
                "points_per_curve": int(self.table.sizes["t"]),
                "curve_steps": self.table.attrs["curve_steps"],
                "median_abs_error": self.median_errors(), "rows": self.rows(),
                "skipped": dict(self.skipped), "seconds": self.table.attrs["seconds"]}


def _per_pair(codes: list | None, loss: list[float], true: list[float], names: list[str],
              T: int, loss_key: str, mae_key: str, codes_key: str | None = None,
              range_key: str | None = None) -> dict[str, dict[str, Any]]:
    """Per pair (``T`` consecutive points each, in the order of ``names``): its slice of
    ``loss`` (and ``codes``), the true loss, the range and the median absolute error."""
    loss_a, true_a = np.asarray(loss, dtype=np.float64), np.asarray(true, dtype=np.float64)
    out = {}
    for j, name in enumerate(names):
        s = slice(j * T, (j + 1) * T)
        f = loss_a[s][np.isfinite(loss_a[s])]
        row = {"true_loss": true_a[s].tolist(), loss_key: loss_a[s].tolist(),
               mae_key: float(np.median(np.abs(loss_a[s] - true_a[s])))}
        if codes_key is not None:
            row[codes_key] = np.asarray(codes)[s].tolist()
        if range_key is not None:
            row[range_key] = [float(f.min()), float(f.max())] if f.size else [np.nan] * 2
        out[name] = row
    return out


def _uncorrected(atlas, name: str, true: list[float]) -> dict[str, Any]:
    """Loss (nats) at the included codes of ``name`` decoded without the residual
    correction (which pins only the models), and its median absolute error."""
    z = atlas.include_codes_[name]
    loss = atlas.evaluator.evaluate(atlas.decode(z.to(atlas.device), corrected=False))
    loss = loss["loss"].double().cpu().numpy()
    return {"included_raw_loss": loss.tolist(),
            "included_raw_median_abs_error": float(np.median(np.abs(loss - np.asarray(true))))}


def _fit_map(population, data, run_dir: Path, config: Mapping[str, Any], resolution: int,
             include: dict[str, Tensor] | None, atlas_kwargs: Mapping[str, Any]):
    """An atlas of ``population`` in ``run_dir`` embedded as ``config`` says (fitted on
    ``include`` too), with a coarse unrefined field and its merge tree."""
    from ..atlas import Atlas

    atlas = Atlas(population, data, run_dir, overwrite=True, **atlas_kwargs)
    atlas.embed(config["method"], config["dim"], exact=config.get("exact", True),
                standardize=config.get("standardize", False), include=include,
                **dict(config.get("kwargs") or {}))
    atlas.field(resolution=resolution, refine=False)
    atlas.topology()
    return atlas


def curve_table(
    population,
    data,
    out_dir: str | Path,
    methods: Sequence[str] = ("ae", "kpca", "umap"),
    reference: str | int | None = None,
    atlases: Mapping[str, Any] | None = None,
    dim: int = 2,
    include: bool = True,
    embed_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    points: int = 15,
    curve_steps: int = 200,
    curve_lr: float = 1e-2,
    resolution: int = 12,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    **atlas_kwargs: Any,
) -> CurveTable:
    """The seed's Table 2 on ``population``: a reference model against every other variant.

    Parameters
    ----------
    population : Population
        Models of one architecture; the final checkpoint of each run is a curve end.
        Its BatchNorm policy must not be ``"own"`` (curve points have no statistics).
    data : (X, y) tensors, Dataset or DataLoader
        The curves are trained and every loss is measured on it (as in :class:`Atlas`).
    out_dir : path
        The maps fitted here live in ``OUT/METHOD`` and ``OUT/METHOD-included``.
    methods : embedding methods (``"ae"``, ``"pca"``, ``"kpca"``, ``"umap"``)
    reference : variant name or population index of a final model; default the last
        variant (G of A-G in the seed).
    atlases : {method: Atlas}, optional
        Prebuilt maps of ``population`` with a field (e.g. the run's own AE atlas): the
        curves are projected onto them, and their embedding settings are reused for the
        included fit.
    dim : latent dimensions of the maps fitted here.
    include : also fit a map on the models and the curves and report its error.
    embed_kwargs : {method: options of ``Atlas.embed``} for the maps fitted here.
    points : interior curve points per pair (``t = k / (points + 1)``; the ends are the
        models themselves, which the map pins exactly, so they are left out).
    curve_steps, curve_lr : Adam steps and learning rate of each curve's training.
    resolution : base grid of the coarse field of each map fitted here (the overlay
        reads the basin and the field there; the errors come from decoded points).
    seed : seed of the curves' mini-batches and of the maps' fits.
    device : where curves are trained and losses measured.
    progress : tqdm bars over pairs and methods.
    atlas_kwargs : further :class:`Atlas` arguments (``precision``, ``batch_size``, ...).

    Returns
    -------
    CurveTable (errors and ranges in nats).
    """
    t_start = time.perf_counter()
    if getattr(population, "bn", None) == "own":
        raise ValueError("curve_table: the population keeps BatchNorm statistics in its "
                         "vectors (bn='own'); curve points have none. Load it with "
                         "bn='recompute'")
    if int(points) < 1:
        raise ValueError(f"curve_table: points must be >= 1, got {points}")
    atlases = dict(atlases or {})
    unknown = set(atlases) - set(methods)
    if unknown:
        raise ValueError(f"curve_table: atlases given for {sorted(unknown)}, which are not in "
                         f"methods {list(methods)}")
    for m, a in atlases.items():
        if not hasattr(a, "field_"):
            raise ValueError(f"curve_table: atlases[{m!r}] has no field; call field() first")
        if len(a.population) != len(population):
            raise ValueError(f"curve_table: atlases[{m!r}] maps {len(a.population)} models, "
                             f"the population has {len(population)}")
    idx, names = final_models(population)
    if len(idx) < 2:
        raise ValueError(f"curve_table: the population has {len(idx)} final model(s); a "
                         "curve needs two runs")
    r = _reference(reference, idx, names)
    others = [k for k in range(len(idx)) if k != r]
    pair_names = [f"{names[r]}-{names[k]}" for k in others]
    out_dir = Path(out_dir)
    space = population.space
    X = population.as_points()
    t = torch.linspace(0.0, 1.0, int(points) + 2, dtype=X.dtype)[1:-1]

    pts: dict[str, Tensor] = {}
    bends: dict[str, Tensor] = {}
    barriers, line_barriers = [], []
    model_r = population.model(idx[r])
    for k, name in zip(tqdm(others, desc="curves", unit="pair", disable=not progress),
                       pair_names, strict=True):
        res = train_curve(model_r, population.model(idx[k]), data, kind="bezier",
                          steps=curve_steps, lr=curve_lr, seed=seed, device=device,
                          points=int(points) + 2)
        if res.space.dim != space.dim:
            raise ValueError(f"curve_table: curve points have {res.space.dim} parameters, the "
                             f"population's vectors {space.dim} (buffers in the vectors?)")
        pts[name] = curve_points(res.bends, X[idx[r]], X[idx[k]], t, "bezier")
        bends[name] = res.bends
        barriers.append(res.barrier)
        line_barriers.append(res.line_barrier)

    P, T = len(pair_names), len(t)
    all_pts = torch.cat([pts[p] for p in pair_names])  # [P * T, D], pair by pair
    fitted, included, skipped = {}, {}, {}
    results: dict[str, dict[str, dict]] = {}
    for method in tqdm(list(methods), desc="maps", unit="method", disable=not progress):
        try:
            if method in atlases:
                config = _embed_config(atlases[method])
                fitted[method] = atlases[method]
            else:
                config = {"method": method, "dim": dim,
                          "kwargs": dict((embed_kwargs or {}).get(method, {}))}
                fitted[method] = _fit_map(population, data, out_dir / method, config,
                                          resolution, None, {"seed": seed, "device": device,
                                                             **atlas_kwargs})
            if include:
                included[method] = _fit_map(population, data, out_dir / f"{method}-included",
                                            config, resolution, {"curves": all_pts},
                                            {"seed": seed, "device": device, **atlas_kwargs})
        except ImportError as err:  # an optional method's package is missing
            log.warning("curve_table: %s skipped (%s)", method, err)
            skipped[method] = f"{type(err).__name__}: {err}"
            fitted.pop(method, None)
            continue
        labels = [f"{p} t={v:.3f}" for p in pair_names for v in t.tolist()]
        if method in atlases:  # the run's own map: one overlay per curve, drawn there
            results[method] = {p: fitted[method].overlay(
                pts[p], f"curve-{p}", labels=[f"t={v:.3f}" for v in t.tolist()])
                for p in pair_names}
        else:  # one call per map (UMAP's transform has a large cost per call)
            ov = fitted[method].overlay(all_pts, "curves", labels=labels)
            results[method] = _per_pair(ov["codes"], ov["projected_loss"], ov["true_loss"],
                                        pair_names, T, "projected_loss", "median_abs_error",
                                        "codes", "projected_range")
        if method in included:
            ov_inc = included[method].overlay(all_pts, "curves", labels=labels)
            inc = _per_pair(ov_inc["included_codes"], ov_inc["included_loss"],
                            ov_inc["true_loss"], pair_names, T, "included_loss",
                            "included_median_abs_error", "included_codes", "included_range")
            raw = _uncorrected(included[method], "curves", ov_inc["true_loss"])
            raw = _per_pair(None, raw["included_raw_loss"], ov_inc["true_loss"], pair_names,
                            T, "included_raw_loss", "included_raw_median_abs_error")
            for p in pair_names:
                results[method][p].update(inc[p])
                results[method][p].update(raw[p])

    kept = [m for m in methods if m in results]
    d = max([len(np.asarray(o["codes"])[0]) for m in kept for o in results[m].values()]
            + [dim])

    def grid(key: str, shape: tuple[int, ...]) -> np.ndarray:
        a = np.full((len(kept), P, *shape), np.nan)
        for i, m in enumerate(kept):
            for j, p in enumerate(pair_names):
                v = results[m][p].get(key)
                if v is not None:
                    v = np.asarray(v, dtype=np.float64)
                    a[(i, j, *(slice(0, s) for s in v.shape))] = v
        return a

    true = np.asarray([results[kept[0]][p]["true_loss"] for p in pair_names]) if kept else \
        np.full((P, T), np.nan)
    span = np.full((P, T), np.nan)
    if kept:  # every map shares the span reduction of the models
        ref_atlas = fitted[kept[0]]
        red = ref_atlas.reduction_
        for j, p in enumerate(pair_names):
            on_span = red.decode(red.encode(pts[p]), device=ref_atlas.device)
            span[j] = ref_atlas.evaluator.evaluate(on_span)["loss"].double().numpy()
    table = xr.Dataset(
        {
            "true_loss": (("pair", "t"), true),
            "true_range": (("pair", "bound"), np.stack([np.nanmin(true, 1),
                                                        np.nanmax(true, 1)], 1)),
            "span_loss": (("pair", "t"), span),
            "span_mae": ("pair", np.median(np.abs(span - true), axis=1)),
            "curve_barrier": ("pair", np.asarray(barriers, dtype=np.float64)),
            "line_barrier": ("pair", np.asarray(line_barriers, dtype=np.float64)),
            **{f"{k}_loss": (("embedding", "pair", "t"), grid(f"{src}loss", (T,)))
               for k, src in (("projected", "projected_"), ("included", "included_"))},
            **{f"{k}_range": (("embedding", "pair", "bound"), grid(f"{src}range", (2,)))
               for k, src in (("projected", "projected_"), ("included", "included_"))},
            "projected_mae": (("embedding", "pair"), grid("median_abs_error", ())),
            "included_mae": (("embedding", "pair"), grid("included_median_abs_error", ())),
            "included_raw_loss": (("embedding", "pair", "t"), grid("included_raw_loss", (T,))),
            "included_raw_mae": (("embedding", "pair"),
                                 grid("included_raw_median_abs_error", ())),
            "projected_codes": (("embedding", "pair", "t", "latent"), grid("codes", (T, d))),
            "included_codes": (("embedding", "pair", "t", "latent"),
                               grid("included_codes", (T, d))),
        },
        coords={"embedding": kept, "pair": pair_names, "t": t.numpy().astype(np.float64),
                "bound": ["lo", "hi"]},
        attrs={"units": "nats", "reference": names[r], "reference_index": int(idx[r]),
               "curve": "bezier", "curve_steps": int(curve_steps),
               "error": "median over curve points of |loss at decoded projected point - "
                        "true loss|", "seconds": round(time.perf_counter() - t_start, 2)},
    )
    return CurveTable(table, pts, bends, fitted, included, skipped)


def _map_of(atlas) -> dict[str, Any]:
    """What the report draws of a 2-D map: field samples and log10 loss, model codes."""
    f = atlas.field_
    return {"samples": f.coords[:, :2].tolist(),
            "log10_loss": f.values["log10_loss"].tolist(),
            "box_lo": f.lo[:2].tolist(), "box_hi": f.hi[:2].tolist(),
            "models": atlas.codes_[:, :2].tolist(),
            "labels": [str(lab.get("variant", i))
                       for i, lab in enumerate(atlas.population.labels)]}


def write_curve_table(table: CurveTable, run_dir: str | Path) -> Path:
    """Write ``RUN/table2.json``: :meth:`CurveTable.to_dict` plus, per method, the curves'
    codes and losses along ``t`` and the map they lie on (what the report section
    draws). Returns the file's path."""
    ds = table.table
    out = table.to_dict()
    out["t"] = ds["t"].values.tolist()
    for k in ("true_loss", "span_loss"):
        out[k] = {p: ds[k].sel(pair=p).values.tolist() for p in ds["pair"].values.tolist()}
    out["curves"] = {}
    for m in ds["embedding"].values.tolist():
        entry: dict[str, Any] = {"pairs": {}}
        for p in ds["pair"].values.tolist():
            sel = ds.sel(embedding=m, pair=p)
            entry["pairs"][p] = {k: sel[k].values.tolist() for k in (
                "projected_loss", "projected_codes", "included_loss", "included_codes",
                "included_raw_loss")}
        if m in table.atlases and table.atlases[m].codes_.shape[1] >= 2:
            entry["map"] = _map_of(table.atlases[m])
        if m in table.included_atlases and table.included_atlases[m].codes_.shape[1] >= 2:
            entry["included_map"] = _map_of(table.included_atlases[m])
        out["curves"][m] = entry
    path = Path(run_dir) / TABLE_FILE
    atomic_write_json(path, out)
    return path
