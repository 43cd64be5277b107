"""How far to trust an atlas: the checks of its map, and its stored map read back.

Functions of a fitted :class:`~lossatlas.atlas.Atlas` that return JSON-able dicts (the
atlas writes them into its run): :func:`faithfulness` (decoded and field loss against
the models' own, in decades), :func:`raw_check` (the map without its residual
correction), :func:`overlay` (other points projected onto the map),
:func:`reconstruction_table` (the seed's Table 1, on
:func:`lossatlas.manifold.reconstruction_table`) and :func:`basin_summary`.
:func:`save_map` / :func:`load_map` store and read the map (``load_map`` also reads
the layout before the map was one estimator).
Every log10 of a loss goes through :func:`lossatlas.scale.log10_loss`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .refine import RefinedField
from .scale import log10_loss

if TYPE_CHECKING:
    from .atlas import Atlas
    from .manifold import ReducedEmbedding, SpanReduction

log = logging.getLogger("lossatlas.atlas")

__all__ = ["basin_summary", "faithfulness", "load_map", "overlay", "raw_check",
           "reconstruction_table", "save_map"]


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[np.isfinite(a)]


def _range(a: np.ndarray) -> list[float]:
    """``[min, max]`` over the finite values (NaN when none)."""
    f = _finite(a)
    return [float(f.min()), float(f.max())] if f.size else [float("nan")] * 2


def _nanmedian(a: np.ndarray) -> float:
    f = _finite(a)
    return float(np.median(f)) if f.size else float("nan")


def _nanmean(a: np.ndarray) -> float:
    f = _finite(a)
    return float(np.mean(f)) if f.size else float("nan")


def _variants(atlas: Atlas) -> list[str]:
    return [str(lab.get("variant", "?")) for lab in atlas.population.labels]


def _span_points(atlas: Atlas, red: SpanReduction, R: Tensor
                 ) -> tuple[dict[str, Tensor], float]:
    """Loss and metrics of span coordinates ``R`` [N, k] of ``red`` (one row per model)
    decoded, and the mean squared error of the decoded points against the models'
    vectors; decoded and evaluated a chunk at a time."""
    parts, sse = [], 0.0
    for start, rows in atlas._row_chunks():
        pts = red.decode(R[start:start + len(rows)].to(atlas.device), device=atlas.device)
        parts.append(atlas.evaluator.evaluate(pts))
        sse += float((rows - pts.cpu().float()).square_().sum())
        del pts, rows  # before the next chunk is read
    out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return out, sse / (atlas.X.shape[0] * atlas.X.shape[1])


def _decoded_loss(atlas: Atlas, z: Tensor) -> np.ndarray:
    """Loss (float64 [P]) of the parameters decoded from latent codes ``z`` [P, d] by the
    map (with its residual correction), a chunk at a time."""
    step = max(1, atlas._chunk_points())
    parts = [atlas.evaluator.evaluate(atlas.decode(z[i:i + step].to(atlas.device)))["loss"]
             for i in range(0, len(z), step)]
    return torch.cat(parts).double().numpy()


def save_map(emb: ReducedEmbedding, folder: Path, name: str) -> None:
    """Store the map in ``folder``: ``NAME`` (``Embedding.save``) and the report's copy of
    the codes, ``codes.safetensors`` (``codes`` [N, d], ``include.NAME`` [P, d])."""
    from safetensors.torch import save_file

    from .store import atomic_path

    emb.save(folder / name)
    with atomic_path(folder / "codes.safetensors") as tmp:
        save_file({"codes": emb.codes_.contiguous(),
                   **{f"include.{k}": v.contiguous() for k, v in emb.include_codes_.items()}},
                  str(tmp))


def load_map(folder: Path, name: str, exact: bool, run: Path) -> ReducedEmbedding:
    """The map stored in ``folder`` (``NAME`` written by ``Embedding.save``, and the
    report's ``codes.safetensors``, both read); a run written before the map was one
    estimator (``reduction``, ``inner`` and ``codes.safetensors`` holding the codes and
    the correction as ``cor.*``) is read into the same estimator. A truncated or
    corrupt file raises ValueError naming the run and the fix."""
    from safetensors.torch import load_file

    from .correction import ResidualCorrection
    from .manifold import ReducedEmbedding, load_embedding

    try:
        state = load_file(str(folder / "codes.safetensors"))
        if (folder / name).is_file():
            return load_embedding(folder / name)
        cor = {k[4:]: v for k, v in state.items() if k.startswith("cor.")}
        return ReducedEmbedding.from_fitted(
            load_embedding(folder / "reduction"), load_embedding(folder / "inner"),
            state["codes"], ResidualCorrection.from_state(cor) if exact else None,
            {k[len("include."):]: v for k, v in state.items() if k.startswith("include.")})
    except Exception as err:  # noqa: BLE001 - a truncated or corrupt stored file
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"run {run}: the stored embedding in {folder} cannot be read "
            f"(truncated or corrupt? {type(err).__name__}: {reason}); rerun with "
            "--overwrite (Atlas(overwrite=True)) or another --out") from err


def basin_summary(atlas: Atlas) -> dict:
    """Basins of the merge tree: per basin its minimum (loss, log10 loss, code), models
    and variants; counts, the threshold and every model's basin."""
    labels = atlas.population.labels
    minima = np.asarray(atlas.tree_.minima).reshape(-1)
    values = atlas.field_.values
    basins = []
    for b, m in enumerate(minima):
        members = np.flatnonzero(atlas.basins_ == b)
        variants = Counter(str(labels[i].get("variant", "?")) for i in members)
        basins.append({
            "basin": b, "min_loss": float(values["loss"][m]),
            "min_log10_loss": float(values["log10_loss"][m]),
            "coords": atlas.field_.coords[m].tolist(), "models": members.tolist(),
            "variants": dict(variants),
        })
    return {"num_basins": len(minima), "num_variants": len(set(_variants(atlas))),
            "num_model_basins": int(sum(1 for b in basins if b["models"])),
            "threshold": float(atlas.tree_.threshold) if hasattr(atlas.tree_, "threshold")
            else None,
            "basins": basins, "model_basin": atlas.basins_.tolist()}


def faithfulness(atlas: Atlas) -> dict:
    """How far to trust the map, in decades of loss (log10), per model and median.

    - ``decoded_raw``: loss of decode(encode(model)) by the embedding alone vs true
    - ``field_at_model``: the field's sample at the model's code vs true
    - ``field_loo``: the field interpolated at the code from the other samples
      (the code's own sample left out) vs true: what the refined field shows
    - ``max_step_near_models``: largest log10-loss step across an edge at a model
    """
    field = atlas.field_
    true = atlas.true_values()
    t_log = log10_loss(true["loss"].double().numpy())
    emb = atlas.embedding_
    raw, recon = _span_points(atlas, emb.reduction_, emb.decode_span(atlas.codes_,
                                                                     corrected=False))
    raw_log = log10_loss(raw["loss"].double().numpy())
    idx = atlas.model_samples()
    values = field.values["log10_loss"]
    at_model = values[idx]
    keep = field.level != -1
    loo = RefinedField(field.coords[keep], {"v": values[keep]}, "v",
                       np.zeros((0, 2), dtype=int), field.level[keep], 0,
                       field.lo, field.hi, field.resolution)
    loo_vals = loo.interpolate(field.coords[idx])
    edges = field.edges
    steps = np.zeros(len(idx))
    for k, i in enumerate(idx):
        nb = np.concatenate([edges[edges[:, 0] == i, 1], edges[edges[:, 1] == i, 0]])
        d = np.abs(values[nb] - values[i])
        steps[k] = float(np.max(d[np.isfinite(d)])) if np.isfinite(d).any() else np.inf
    out = {
        "reconstruction_mse_raw": recon,
        "median_decades": {
            "decoded_raw": _nanmedian(np.abs(raw_log - t_log)),
            "field_at_model": _nanmedian(np.abs(at_model - t_log)),
            "field_loo": _nanmedian(np.abs(loo_vals - t_log)),
            "max_step_near_models": _nanmedian(steps),
        },
        "per_model": {
            "true_loss": true["loss"].tolist(), "decoded_raw_loss": raw["loss"].tolist(),
            "field_log10_at_model": at_model.tolist(), "field_log10_loo": loo_vals.tolist(),
            "max_step": steps.tolist(),
        },
        "decoded_loss_relative_error_median": _nanmedian(
            np.abs(raw["loss"].double().numpy() / true["loss"].double().numpy() - 1)),
        "bn": atlas.bn, "bn_text": atlas.evaluator.bn_text,
    }
    own = atlas.eval_mode_values()
    if own is not None:
        # each model's loss under the policy beside the checkpoint's own eval-mode loss
        out["per_model"]["eval_mode_loss"] = own["loss"].tolist()
    return out


def raw_check(atlas: Atlas, resolution: int | None, progress: bool | None) -> dict:
    """The map without the residual correction, beside the corrected atlas.

    A uniform grid over the same box (``resolution`` per axis, default the field's base
    grid) plus the models' codes, decoded by the embedding alone; its merge tree at the
    corrected atlas's threshold and the basins of the models. If the corrected atlas
    shows more basins with models than this one, the correction may have made them.
    Returns both counts, the variants per basin, the basins mixing variants, and the
    median error at the models (decades); the stage is recorded in ``run.json``.
    """
    from .store import atomic_write_json
    from .topology import graph_merge_tree

    t0 = time.perf_counter()
    res = int(resolution or atlas.field_.resolution)
    raw, _ = atlas._refined_field(atlas.field_.lo, atlas.field_.hi, res, np.inf, 0, 0, True,
                                  progress, corrected=False, settings=["raw"])
    values = raw.values["log10_loss"]
    tree = graph_merge_tree(values, raw.edges, threshold=float(atlas.tree_.threshold))
    basins = np.asarray(tree.labels).reshape(-1)[raw.extra_index]
    labels = _variants(atlas)
    t_log = log10_loss(atlas.true_values()["loss"].double().numpy())

    def per_basin(b: np.ndarray) -> list[dict]:
        return [dict(Counter(labels[i] for i in np.flatnonzero(b == k)))
                for k in sorted(set(b.tolist()))]

    raw_groups, cor_groups = per_basin(basins), per_basin(atlas.basins_)
    out = {
        "resolution": res, "threshold": float(atlas.tree_.threshold),
        "num_variants": len(set(labels)),
        "raw": {"num_model_basins": len(raw_groups), "variants_per_basin": raw_groups,
                "mixed_basins": sum(len(g) > 1 for g in raw_groups),
                "median_decades_at_models": _nanmedian(
                    np.abs(values[raw.extra_index] - t_log))},
        "corrected": {"num_model_basins": len(cor_groups), "variants_per_basin": cor_groups,
                      "mixed_basins": sum(len(g) > 1 for g in cor_groups)},
    }
    atomic_write_json(atlas.path / "raw_check.json", out)
    atlas.run.record_stage("raw_check", time.perf_counter() - t0, samples=raw.n)
    return out


def reconstruction_table(atlas: Atlas, methods: tuple[str, ...], dim: int,
                         variants: dict[str, dict] | None,
                         clustering: tuple[str, ...]) -> list[dict]:
    """The seed's Table 1 on the atlas's population: every method side by side.

    Each method is fitted on the span coordinates (those of the map's reduction when
    the atlas is embedded; ``dim`` latents, no residual
    correction) and measured by :func:`lossatlas.manifold.reconstruction_table`
    (``mse``: mean squared error over parameters of decode(encode(model)),
    ``relative_mse``, ``per_model_mse``, the variant separation ``silhouette`` /
    ``nn_purity``); the row adds the loss of every decoded model against the model's
    own (``decoded_loss``, ``true_loss``, ``median_rel_loss_error``), ``options`` and
    ``seconds``. ``variants`` adds autoencoder options by name, e.g.
    ``{"ae-tanh": {"bounded": True}}``. The ``clustering`` methods (MDS, Isomap: no
    inverse) give only the separation, their loss columns None with the reason in
    ``not_computable``. A method that cannot be fitted gives ``{"method", "skipped"}``.
    """
    from .atlas_embed import embedding_kwargs as _embedding_kwargs
    from .manifold import ReducedEmbedding, SpanReduction, make_embedding
    from .manifold import reconstruction_table as table
    from .manifold.clustering import clustering_row

    # the map's reduction when there is one, else one fitted here (and kept)
    fitted = atlas.__dict__.get("embedding_")
    red = fitted.reduction_ if fitted is not None else atlas.__dict__.get("_table_reduction")
    if red is None:
        red = atlas._table_reduction = SpanReduction(
            block_size=atlas.budget.block_size()).fit(atlas.X)
    C = red.encode(atlas.X)
    true = atlas.true_values()["loss"].double()
    variant = _variants(atlas)
    specs = {m: (m, {}) for m in methods}
    specs.update({k: ("ae", v) for k, v in (variants or {}).items()})
    rows = []
    for name, (method, extra) in specs.items():
        t0 = time.perf_counter()
        try:
            inner = make_embedding(method, **_embedding_kwargs(method, dim, atlas.seed, extra))
            inner.fit(C)
        except (ImportError, ValueError, TypeError) as err:
            log.warning("reconstruction_table: %s skipped (%s)", name, err)
            rows.append({"method": name, "skipped": str(err)})
            continue
        emb = ReducedEmbedding.from_fitted(red, inner, inner.encode(C))
        row = table({name: emb}, atlas.X, labels=variant)[0]
        values, _ = _span_points(atlas, red, emb.decode_span(emb.codes_, corrected=False))
        loss = values["loss"].double()
        rel = (loss / true - 1).abs()
        rows.append({
            **row, "options": extra, "decoded_loss": loss.tolist(), "true_loss": true.tolist(),
            "median_rel_loss_error": float(rel[torch.isfinite(rel)].median())
            if torch.isfinite(rel).any() else float("inf"),
            "seconds": round(time.perf_counter() - t0, 2),
        })
    for name in clustering:  # no inverse: the variant separation only
        t0 = time.perf_counter()
        try:
            row = clustering_row(name, C, variant, dim=dim, seed=atlas.seed)
        except ValueError as err:  # e.g. dim >= the number of models
            log.warning("reconstruction_table: %s skipped (%s)", name, err)
            rows.append({"method": name, "skipped": str(err)})
            continue
        rows.append({**row, "true_loss": true.tolist(),
                     "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def overlay(atlas: Atlas, points: Tensor, name: str, labels: list[str] | None,
            partners: list[int] | None) -> dict[str, Any]:
    """Project parameter points (a curve, re-basined models, a trajectory) onto the map,
    as the seed's Table 2.

    Encodes ``points`` [P, D] to codes, decodes the codes back to parameters and
    evaluates them: ``projected_loss`` is the loss at the decoded projected points and
    ``median_abs_error`` the median of ``|projected - true|`` (nats) over the points
    (``mean_abs_error`` too, and ``mae``, its older key). ``field_loss`` is the field
    read at the codes (what the map shows there). When the same points were fitted into
    the map under this name (``embed(include={name: points})``), the error of the
    included fit is reported too (``included_loss``, ``included_median_abs_error``:
    decoded at their fitted codes). With a merge tree, the basin at each code, and with
    ``partners`` (population indices, one per point, e.g. the model each re-basined
    model was aligned onto) the partners' basins.
    """
    from scipy.spatial import cKDTree

    points = torch.as_tensor(points, dtype=torch.float32)
    if points.ndim != 2 or points.shape[1] != atlas.X.shape[1]:
        raise ValueError(
            f"Atlas.overlay: points must be [P, {atlas.X.shape[1]}], got {tuple(points.shape)}"
        )
    true = atlas.evaluator.evaluate(points)["loss"].double().numpy()
    z = atlas.encode(points)
    codes = z.numpy().astype(np.float64)
    projected = _decoded_loss(atlas, z)
    out: dict[str, Any] = {
        "name": name, "codes": codes.tolist(), "true_loss": true.tolist(),
        "projected_loss": projected.tolist(),
        "field_loss": (10.0 ** atlas.field_.interpolate(codes)).tolist(),
        "true_range": _range(true), "projected_range": _range(projected),
        "median_abs_error": _nanmedian(np.abs(projected - true)),
        "mean_abs_error": _nanmean(np.abs(projected - true)),
        "labels": labels or [str(i) for i in range(len(points))],
        "units": "nats",
    }
    out["mae"] = out["mean_abs_error"]  # the report's older key
    fitted = atlas.include_codes_.get(name)
    if fitted is not None and len(fitted) == len(points):
        inc = _decoded_loss(atlas, fitted)
        out.update(included_codes=fitted.double().numpy().tolist(),
                   included_loss=inc.tolist(), included_range=_range(inc),
                   included_median_abs_error=_nanmedian(np.abs(inc - true)))
    if hasattr(atlas, "tree_"):
        nearest = cKDTree(atlas.field_.coords).query(codes)[1]
        out["basin"] = np.asarray(atlas.tree_.labels).reshape(-1)[nearest].tolist()
        if partners is not None:
            out["partner_basin"] = [int(atlas.basins_[i]) for i in partners]
            out["same_basin_as_partner"] = [
                a == b for a, b in zip(out["basin"], out["partner_basin"], strict=True)]
    return out
