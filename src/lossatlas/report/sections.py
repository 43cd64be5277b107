"""The report's sections: a small registry of builders, one function per section.

A builder takes a :class:`~lossatlas.report.rundir.RunView` and returns a
:class:`Section` (HTML, plotly figures, a machine-readable summary) or ``None``
when the run lacks its inputs; the page then lists it under "Absent sections"
with the command that produces it: ``hint`` is that command, with placeholders
(``{run}``, ``{population}``, ``{data}``, ``{dataset}``, ``{model}``, ``{train}``,
``{a}``, ``{b}``) filled from the run by :func:`lossatlas.report.commands.fill_hint`.
Adding a section is one function and one template (``report/templates/``, Jinja2 with
autoescape on, so the values may hold any text from the run)::

    @section("terrain", "Terrain",
             hint="lossatlas hessian --population {population} {data} --out {run}")
    def terrain(view: RunView) -> Section | None:
        ds = view.field("terrain")
        if ds is None:
            return None
        return Section(template="sections/terrain.html.j2", data={...},
                       figures={...}, summary={...})

The builder gathers the values the section shows (``data``: texts, numbers,
:class:`~lossatlas.report.html.Table` s, figure ids); the template lays them out with
the macros of ``_macros.html.j2`` (tables, definition lists, plot placeholders, inlined
PNGs). Text that plotly draws (hover text, trace names) is HTML to plotly and goes
through :func:`~lossatlas.report.html.esc`.

Builders never evaluate a loss: they read stored values. The merge tree and the
persistence pairs are recomputed from the stored field values and edges (cheap,
exact, the same functions the Atlas used), since ``topology.json`` keeps only the
basins.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossatlas.scale import drawable, log10_loss

from . import figures as F
from .html import Code, Png, Table, esc, fmt, number
from .rundir import RunView

__all__ = ["Section", "SectionSpec", "SECTIONS", "section", "build_sections"]


@dataclass
class Section:
    """What one builder returns.

    html : body of the section; plot placeholders are ``<div id=FIG_ID>``. Rendered from
        ``template`` and ``data`` when a template is given (the way every built-in
        section is written); a hand-written ``html`` must escape run text itself.
    figures : {FIG_ID: plotly figure dict}; ids must be unique in the page
    summary : JSON-able facts for ``summary.json``
    template : a template under ``report/templates/`` (Jinja2, autoescape on)
    data : the values the section shows: the template's context
    """

    html: str = ""
    figures: dict[str, dict] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.template is not None:
            from .render import render

            self.html = render(self.template, **self.data)


@dataclass(frozen=True)
class SectionSpec:
    """A registered section: anchor ``key``, ``title`` (DESIGN.md vocabulary), the
    ``hint`` shown when absent and its ``build`` function."""

    key: str
    title: str
    hint: str
    build: Callable[[RunView], Section | None]


SECTIONS: dict[str, SectionSpec] = {}
"""Registered sections, in page order."""


def section(key: str, title: str, hint: str) -> Callable:
    """Register ``fn(view) -> Section | None`` as the section ``key`` (page order = order
    of registration). Re-registering a key replaces it in place."""

    def deco(fn: Callable[[RunView], Section | None]) -> Callable[[RunView], Section | None]:
        SECTIONS[key] = SectionSpec(key, title, hint, fn)
        return fn

    return deco


def build_sections(view: RunView, progress: bool | None = False,
                   ) -> list[tuple[SectionSpec, Section | None]]:
    """Every registered section built on ``view`` (None for the absent ones); a bar over
    the sections when ``progress`` (``None``: auto, see :mod:`lossatlas.progress`).

    A builder that fails on what the run stores (a :class:`~lossatlas.errors.LossatlasError`,
    ``ValueError`` or ``OSError``) raises :class:`~lossatlas.errors.ReportError` naming the
    section and the run; any other exception is a bug in the builder and propagates
    with a note naming the section.
    """
    from lossatlas.errors import LossatlasError, ReportError
    from lossatlas.progress import progress_bar

    out = []
    for spec in progress_bar(list(SECTIONS.values()), desc="report", unit="section",
                             progress=progress):
        try:
            out.append((spec, spec.build(view)))
        except (LossatlasError, ValueError, OSError) as err:
            raise ReportError(
                f"report: section {spec.title!r} failed on run {view.path}: "
                f"{type(err).__name__}: {err}"
            ) from err
        except Exception as err:
            err.add_note(f"report: while building section {spec.title!r} on run {view.path}")
            raise
    return out


def _seconds(s: Any) -> str:
    """A duration as text: seconds below two minutes, else minutes."""
    if not isinstance(s, (int, float)):
        return "n/a"
    return number(float(s), "s", 3) if s < 120 else number(float(s) / 60, "min", 3)


def _variant(lab: dict[str, Any]) -> str:
    return str(lab.get("variant", "all models"))


def _runs_of(labels: list[dict[str, Any]]) -> list[list[int]]:
    """Model indices of each training run (variant, seed), ordered by epoch/step."""
    runs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        if "epoch" in lab or "step" in lab:
            runs[(str(lab.get("variant")), str(lab.get("seed")))].append(i)

    def key(i: int) -> tuple[float, float]:
        lab = labels[i]
        e, s = lab.get("epoch", -1), lab.get("step", -1)
        return (float(e) if isinstance(e, (int, float)) else -1.0,
                float(s) if isinstance(s, (int, float)) else -1.0)

    return [sorted(idx, key=key) for idx in runs.values()]


def _collapse_rounds(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row for the refinement rounds of the atlas field (``field:atlas-TAG-rNNN``)."""
    out: list[dict[str, Any]] = []
    rounds: dict[tuple[str, str], dict[str, Any]] = {}
    for s in stages:
        head, _, tail = s["stage"].partition(":atlas-")
        if tail:
            key = (s["where"], head)
            if key not in rounds:
                rounds[key] = {"where": s["where"], "stage": f"{head}: atlas rounds",
                               "seconds": 0.0, "info": {"rounds": 0, "points": 0}}
                out.append(rounds[key])
            r = rounds[key]
            r["seconds"] += float(s["seconds"] or 0.0)
            r["info"]["rounds"] += 1
            r["info"]["points"] += int(s["info"].get("points", 0) or 0)
        else:
            out.append(s)
    return out


_LOSS_TEXT = {"cross_entropy": "cross-entropy, mean over samples (nats)",
              "mse": "mean squared error, mean over samples"}


def _policy_text(bn: Any, bn_text: Any = None) -> str | None:
    """One line (raw text, not escaped) stating a BatchNorm policy; None when unknown."""
    from lossatlas.batchnorm import POLICY_TEXT

    if not isinstance(bn, str) or not bn:
        return None
    if isinstance(bn_text, str) and bn_text:
        return bn_text
    return f"{bn}: {POLICY_TEXT[bn]}" if bn in POLICY_TEXT else bn


def _run_policy(view: RunView) -> tuple[str | None, str | None]:
    """The run's BatchNorm policy ``(bn, text)``: from ``population.json``, else
    ``atlas_summary.json``, else ``faithfulness.json``."""
    for src in (view.population, view.atlas_summary, view.faithfulness or {}):
        if isinstance(src, dict) and isinstance(src.get("bn"), str):
            return src["bn"], _policy_text(src["bn"], src.get("bn_text"))
    return None, None


def _training_data(described: dict[str, str], manifest: dict[str, Any]) -> str:
    """The training data in words: the atlas summary's description, else the train
    manifest's ``data_source`` (recorded also for data given as an object), else its
    registered name, else a statement that the run did not record it."""
    source = manifest.get("data_source")
    source = source if isinstance(source, dict) else {}
    name = manifest.get("data")
    return (described.get("training data") or source.get("training data")
            or (str(name) if name else None)
            or "not recorded (given in Python as an object; train with a DatasetSplits "
               "or a registered name to have it named here)")


# ===================================================================== overview
@section("overview", "Overview", hint="")
def overview(view: RunView) -> Section | None:
    """What was run: population, data, embedding, versions, time per stage."""
    meta = view.meta
    manifest = view.train_manifest or {}
    labels = view.labels
    described = view.atlas_summary.get("data")
    described = {str(k): str(v) for k, v in described.items()} if isinstance(
        described, dict) else {}
    info: dict[str, Any] = {"run directory": view.path.name}
    if meta.get("created"):
        info["created"] = str(meta["created"])
    n = view.num_models
    if n is not None:
        variants = sorted({_variant(lab) for lab in labels})
        info["population"] = number(n, "models") + (
            f" in {len(variants)} variant(s): " + ", ".join(variants) if labels else "")
        info["labels from"] = str(view.labels_and_source[1])
    if manifest:
        model = manifest.get("model")
        kw = manifest.get("model_kwargs") or {}
        info["model"] = str(f"{model} {json.dumps(kw, sort_keys=True)}" if kw else model)
        info["training data"] = str(_training_data(described, manifest))
        for key in ("test data", "loss measured on"):
            if described.get(key):
                info[key] = described[key]
        info["checkpoints"] = (f"every {manifest.get('checkpoint_every', '?')} epoch(s), "
                               f"device {manifest.get('device', '?')}")
    for key in ("training data", "test data", "loss measured on"):
        if described.get(key) and key not in info:
            info[key] = described[key]
    loss = view.population.get("loss") or view.atlas_summary.get("loss")
    if isinstance(loss, str):
        info["loss function"] = _LOSS_TEXT.get(loss, loss)
    bn, bn_text = _run_policy(view)
    if bn_text is not None:
        info["BatchNorm policy"] = bn_text
    config = meta.get("config") or {}
    if config:
        info["configuration"] = Code(json.dumps(config, sort_keys=True))
    emb = view.embedding or meta.get("embedding")
    if emb:
        info["embedding"] = (
            f"{emb.get('method')} to {emb.get('dim')}-D latent, exact residual correction "
            f"{'on' if emb.get('exact') else 'off'}, seed {emb.get('seed')}")
    if view.atlas is not None:
        a = view.atlas.attrs
        info["field"] = (number(int(view.atlas.sizes["sample"]), "samples")
                         + f", base grid {a.get('resolution', '?')} per axis, "
                           f"{a.get('rounds', '?')} refinement round(s)")
    if view.sub_runs:
        info["sub-runs"] = [part for k, name in enumerate(view.sub_runs)
                            for part in ([", "] if k else []) + [
                                Code(f"{name}/"), " (own report: ", Code(f"{name}/report.html"),
                                ")"]]
    tables = []
    variants_table = manifest.get("variants") or []
    if variants_table:
        keys = sorted({k for v in variants_table for k in v if k != "name"})
        rows = [[str(v.get("name", "?")), *[str(v.get(k, "")) for k in keys]]
                for v in variants_table]
        tables.append(Table(["variant", *keys], rows, "Variants (hyper-parameters)"))
    stages = _collapse_rounds(view.stages)
    if stages:
        rows = [[str(s["where"]), str(s["stage"]), _seconds(s["seconds"]),
                 ", ".join(f"{k}={json.dumps(v)}" for k, v in s["info"].items()
                           if not isinstance(v, (list, dict)))]
                for s in stages]
        tables.append(Table(["folder", "stage", "time", "details"], rows, "Time per stage"))
    if view.versions:
        tables.append(Table(["package", "version"],
                            [[str(k), str(v)] for k, v in sorted(view.versions.items())],
                            "Versions"))
    total = sum(s["seconds"] for s in stages if isinstance(s["seconds"], (int, float)))
    summary = {"models": n, "variants": sorted({_variant(lab) for lab in labels}),
               "stages": {f"{s['where']}/{s['stage']}".removeprefix("./"): s["seconds"]
                          for s in stages},
               "total_stage_seconds": round(total, 3), "versions": view.versions,
               "bn": bn, "bn_text": bn_text, "loss": loss if isinstance(loss, str) else None,
               "data": described, "sub_runs": view.sub_runs}
    return Section(template="sections/overview.html.j2", summary=summary,
                   data={"info": info, "tables": tables})


# ======================================================================= basins
def _model_table(view: RunView) -> dict[str, Any] | None:
    """Per model: label text, loss (true when stored), accuracy, basin, code."""
    ds = view.atlas
    if ds is None or "model_sample" not in ds:
        return None
    idx = ds["model_sample"].values.astype(int)
    loss = ds["loss"].values[idx].astype(float)
    faith = view.faithfulness or {}
    true = (faith.get("per_model") or {}).get("true_loss")
    if true is not None and len(true) == len(idx):
        loss = np.array([np.nan if v is None else v for v in true], dtype=float)
    acc = ds["accuracy"].values[idx].astype(float) if "accuracy" in ds else None
    topo = view.topology or {}
    basin = topo.get("model_basin")
    basin = np.asarray(basin if basin is not None and len(basin) == len(idx)
                       else [-1] * len(idx), dtype=int)
    texts = view.label_texts
    hover = []
    for i in range(len(idx)):
        lines = [f"<b>{esc(texts[i])}</b>", f"loss {fmt(loss[i], 'nats')}"]
        if acc is not None:
            lines.append(f"accuracy {fmt(100 * acc[i], '%', 3)}")
        if basin[i] >= 0:
            lines.append(f"basin {basin[i]}")
        hover.append("<br>".join(lines))
    return {"sample": idx, "loss": loss, "accuracy": acc, "basin": basin, "text": texts,
            "hover": hover}


def _model_groups(view: RunView, codes: np.ndarray, models: dict[str, Any]) -> list[dict]:
    by: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(view.labels):
        by[_variant(lab)].append(i)
    if not by:
        by["models"] = list(range(len(codes)))
    return [{"name": esc(f"variant {v}" if v != "all models" else v),
             "x": codes[ix, 0], "y": codes[ix, 1], "index": ix,
             "text": [models["hover"][i] for i in ix], "basin": models["basin"][ix]}
            for v, ix in by.items()]


_SYMMETRY_PREFIXES = ("rebasin", "aligned", "symmetry", "orbit")


def _overlay_groups(view: RunView, symmetry: bool) -> list[dict]:
    out = []
    for name, o in view.overlays.items():
        if name.startswith(_SYMMETRY_PREFIXES) != symmetry:
            continue
        codes = np.asarray(o.get("codes") or [], dtype=float)
        if codes.ndim != 2 or codes.shape[1] < 2:
            continue
        labs = o.get("labels") or [str(i) for i in range(len(codes))]
        true, proj = o.get("true_loss") or [], o.get("projected_loss") or []
        texts = []
        for i in range(len(codes)):
            t = true[i] if i < len(true) else None
            p = proj[i] if i < len(proj) else None
            texts.append(f"<b>{esc(name)}: {esc(labs[i] if i < len(labs) else i)}</b><br>"
                         f"true loss {fmt(t, 'nats')}<br>on the map {fmt(p, 'nats')}")
        out.append({"name": esc(name), "x": codes[:, 0], "y": codes[:, 1], "text": texts})
    return out


def _tree(view: RunView):
    """Merge tree and persistence pairs from the stored field (no evaluation)."""
    from lossatlas.topology import graph_merge_tree, graph_persistence

    ds, topo = view.atlas, view.topology
    values = ds["log10_loss"].values.astype(np.float64)
    edges = ds["edges"].values.astype(np.int64)
    pairs = graph_persistence(values, edges)
    tree = None
    if topo is not None and topo.get("threshold") is not None:
        tree = graph_merge_tree(values, edges, threshold=float(topo["threshold"]))
    return tree, pairs


def _minima(tree, coords: np.ndarray, logl: np.ndarray) -> list[dict[str, Any]]:
    """Each basin's minimum on the map: {"x", "y", "label", "text" (hover HTML)}."""
    return [{"x": float(coords[flat, 0]), "y": float(coords[flat, 1]), "label": f"basin {b}",
             "text": f"minimum of basin {b}<br>loss {fmt(10 ** float(logl[flat]), 'nats')}"}
            for b, flat in enumerate(np.asarray(tree.minima_flat))]


def _map_figures(view: RunView, coords: np.ndarray, logl: np.ndarray,
                 models: dict[str, Any] | None, tree) -> dict[str, dict]:
    """The 2-D map (contours, basin boundaries, models, minima) and its 3-D surface."""
    ds = view.atlas
    lo = ds.attrs.get("box_lo") or coords.min(0).tolist()
    hi = ds.attrs.get("box_hi") or coords.max(0).tolist()
    grid = F.grid_field(coords, logl, 160, lo, hi)
    basin_grid = None
    if tree is not None:
        lab = np.asarray(tree.labels).reshape(-1).astype(float)
        basin_grid = F.grid_field(coords, lab, 160, lo, hi, method="nearest")[2]
        basin_grid[~np.isfinite(grid[2])] = np.nan
    codes = coords[models["sample"]] if models else np.zeros((0, 2))
    groups = _model_groups(view, codes, models) if models else []
    minima = _minima(tree, coords, logl) if tree is not None else []
    landscape = F.landscape_figure(grid, coords, logl, groups, basin_grid, minima,
                                   _runs_of(view.labels), _overlay_groups(view, False),
                                   title=f"Latent landscape: {len(codes)} models, "
                                         f"{len(logl)} samples")
    pts = [{"name": g["name"], "x": g["x"], "y": g["y"], "text": g["text"],
            "z": drawable(log10_loss(models["loss"][g["index"]]))} for g in groups]
    return {"fig-landscape": landscape, "fig-surface": F.surface_figure(grid, pts)}


def _tree_figure(tree, topo: dict | None, models: dict[str, Any] | None) -> dict:
    """The merge tree with hover text per leaf (loss, models and variants in the basin)."""
    k = tree.n_leaves
    per_leaf = [0] * k
    for b in (models["basin"] if models is not None else []):
        if 0 <= b < k:
            per_leaf[b] += 1
    stored = (topo or {}).get("basins") or []
    leaf_text = []
    for b in range(k):
        variants = stored[b].get("variants", {}) if b < len(stored) else {}
        vtext = ", ".join(f"{v}: {c}" for v, c in variants.items())
        leaf_text.append(f"<b>basin {b}</b><br>minimum loss "
                         f"{fmt(10 ** float(tree.minimum_values[b]), 'nats')}<br>"
                         f"{per_leaf[b]} model(s)" + (f"<br>{esc(vtext)}" if vtext else ""))
    return F.merge_tree_figure(tree.parent, tree.node_values, k, leaf_text, per_leaf)


def _basin_table(topo: dict, tree) -> Table:
    """The table of ``topology.json``'s basins with their depth (persistence)."""
    rows = []
    for b in topo.get("basins") or []:
        pers = None
        if tree is not None and int(b.get("basin", -1)) < tree.n_leaves:
            pers = float(tree.persistence[int(b["basin"])])
        variants = ", ".join(f"{v}: {c}" for v, c in (b.get("variants") or {}).items())
        rows.append([number(b.get("basin")), number(b.get("min_loss"), "nats"),
                     number(pers, "decades", 3), number(len(b.get("models") or []), "models"),
                     variants])
    return Table(["basin", "minimum loss", "depth (persistence)", "models",
                  "variants (models)"], rows,
                 caption=f"{topo.get('num_basins')} basin(s) for {topo.get('num_variants')} "
                         f"variant(s); persistence threshold "
                         f"{number(topo.get('threshold'), 'decades', 3)}")


def _basin_summary(topo: dict) -> dict[str, Any]:
    return {"num_basins": topo.get("num_basins"), "num_variants": topo.get("num_variants"),
            "threshold_decades": topo.get("threshold"),
            "basins": [{"basin": b.get("basin"), "min_loss": b.get("min_loss"),
                        "models": len(b.get("models") or []), "variants": b.get("variants")}
                       for b in topo.get("basins") or []]}


def _static_pngs(view: RunView) -> list[Png]:
    """The atlas's PNG figures (shown folded)."""
    out = []
    for png, alt in (("landscape.png", "Landscape (static figure)"),
                     ("merge_tree.png", "Merge tree (static figure)"),
                     ("persistence.png", "Persistence diagram (static figure)")):
        p = view.png(png)
        if p is not None:
            out.append(Png.of(p, alt))
    return out


def _tree_notes(tree, topo: dict | None) -> list[str]:
    """What the tree and ``topology.json`` disagree on, or that topology is missing."""
    if tree is not None and topo is not None and topo.get("num_basins") not in (
            None, tree.n_leaves):
        return [f"topology.json lists {topo['num_basins']} basins, the merge tree of the "
                f"stored field {tree.n_leaves}: the field changed after topology ran."]
    if tree is None and topo is None:
        return ["No topology.json: basins, merge tree and boundaries are not shown "
                "(run Atlas.topology)."]
    return []


@section("basins", "Basins", hint="lossatlas atlas --population {population} {data} --out {run}")
def basins(view: RunView) -> Section | None:
    """Latent landscape, merge tree, persistence diagram, 3-D surface, basin table."""
    ds = view.atlas
    if ds is None or "log10_loss" not in ds or len(view.latent_dims) < 2:
        return None
    dims = view.latent_dims
    coords = np.stack([ds[c].values for c in dims], axis=1).astype(np.float64)
    logl = ds["log10_loss"].values.astype(np.float64)
    models, topo = _model_table(view), view.topology
    tree, pairs = _tree(view) if "edges" in ds else (None, np.zeros((0, 2)))
    figs: dict[str, dict] = {}
    notes = _tree_notes(tree, topo)
    if len(dims) == 2:
        figs.update(_map_figures(view, coords, logl, models, tree))
    else:
        notes.insert(0, f"The map is {len(dims)}-D: the contour and surface views need 2-D.")
    if tree is not None:
        figs["fig-merge-tree"] = _tree_figure(tree, topo, models)
    if len(pairs):
        figs["fig-persistence"] = F.persistence_figure(pairs, (topo or {}).get("threshold"))
    summary: dict[str, Any] = {"samples": int(len(logl)), "latent_dim": len(dims),
                               "persistence_pairs": int(len(pairs))}
    if topo is not None:
        summary.update(_basin_summary(topo))
    data = {"landscape": "fig-landscape" in figs,
            "row": [f for f in ("fig-merge-tree", "fig-persistence") if f in figs],
            "basin_table": _basin_table(topo, tree) if topo is not None else None,
            "pngs": _static_pngs(view), "notes": notes}
    return Section(template="sections/basins.html.j2", data=data, figures=figs,
                   summary=summary)


# ================================================================ connectivity
def _matrix(ds) -> tuple[np.ndarray, list[str], list[str], str, str] | None:
    for name, da in ds.data_vars.items():
        if da.ndim == 2:
            d0, d1 = da.dims
            ylab = [str(v) for v in (ds[d0].values if d0 in ds.coords else range(da.shape[0]))]
            xlab = [str(v) for v in (ds[d1].values if d1 in ds.coords else range(da.shape[1]))]
            return da.values.astype(float), xlab, ylab, str(name), str(da.attrs.get("units", ""))
    return None


def _barrier_pairs(mats: dict) -> dict[str, Any] | None:
    """One row per pair of models, one column per square barrier matrix (before / after
    alignment side by side, nats), as the template's ``pairs`` ({open, count, table});
    None unless the matrices share their models."""
    found = {name: m for name, ds in mats.items() if (m := _matrix(ds)) is not None
             and m[0].shape[0] == m[0].shape[1] and m[1] == m[2]}
    if not found or len({tuple(m[1]) for m in found.values()}) != 1:
        return None
    names = next(iter(found.values()))[1]
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    rows = [[f"{names[i]} – {names[j]}", *[number(float(m[0][i, j])) for m in found.values()]]
            for i, j in pairs]
    header = ["pair", *[f"{n.replace('_', ' ')} ({m[4] or 'loss'})" for n, m in found.items()]]
    return {"open": len(pairs) <= 28, "count": len(pairs), "table": Table(header, rows)}


def _lines_of(name: str, ds, dash: str) -> list[dict[str, Any]]:
    """One line per path of a field over ``t`` (more than one when it has a second dim)."""
    if "t" not in ds.dims or "loss" not in ds:
        return []
    da = ds["loss"]
    other = [d for d in da.dims if d != "t"]
    if not other:
        return [{"key": name, "name": esc(name), "x": ds["t"].values, "y": da.values,
                 "dash": dash}]
    labels = ds[other[0]].values if other[0] in ds.coords else range(da.sizes[other[0]])
    return [{"key": f"{name} {lab}", "name": esc(f"{name} {lab}"), "x": ds["t"].values,
             "y": da.isel({other[0]: k}).values, "dash": dash} for k, lab in enumerate(labels)]


def _path_lines(curves: dict, straight: dict, table: dict,
                summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Lines of "Loss along paths and curves": trained curves (solid) and the straight
    lines between their endpoints (dashed) from ``fields/curve*``, ``fields/line*`` and
    ``curves.json`` (``loss`` and ``line_loss`` over ``t``); ``summary`` gets each
    line's highest loss (nats)."""
    lines = [ln for name, ds in curves.items() for ln in _lines_of(name, ds, "solid")]
    lines += [ln for name, ds in straight.items()
              for ln in _lines_of(f"straight line ({name})", ds, "dash")]
    t = table.get("t")
    pair = "–".join(str(p) for p in table.get("pair") or [])
    stored = f"curve-{pair.replace('–', '-')}"
    if isinstance(t, list) and isinstance(table.get("loss"), list) and stored not in curves:
        key = f"{table.get('kind', 'curve')} curve {pair}"
        lines.append({"key": key, "name": esc(key), "x": t, "y": table["loss"], "dash": "solid"})
    if isinstance(t, list) and isinstance(table.get("line_loss"), list):
        lines.append({"key": f"straight line {pair}", "name": esc(f"straight line {pair}"),
                      "x": t, "y": table["line_loss"], "dash": "dash"})
    for ln in lines:
        v = np.asarray(ln["y"], dtype=float)
        v = v[np.isfinite(v)]
        summary[ln["key"]] = {"max_loss": float(v.max()) if len(v) else None}
    return lines


@section("connectivity", "Connectivity",
         hint="lossatlas connect --population {population} {data} --align --out {run}")
def connectivity(view: RunView) -> Section | None:
    """Barrier matrices (``fields/barriers*.zarr``, before/after alignment), loss along
    connecting curves (``fields/curve*.zarr`` over ``t``), layer-wise barriers."""
    mats = view.fields_named("barriers")
    curves = view.fields_named("curve")
    layers = view.fields_named("layerwise")
    straight = view.fields_named("line")
    if not (mats or curves or layers or straight or view.curves_table):
        return None
    figs: dict[str, dict] = {}
    conn = view.connectivity_table
    bn = conn.get("bn") or next((ds.attrs.get("bn") for ds in (*mats.values(),
                                                                *curves.values())
                                 if isinstance(ds.attrs.get("bn"), str)), None)
    data: dict[str, Any] = {"policy": _policy_text(bn), "matrices": [],
                            "pairs": _barrier_pairs(mats), "curves": False, "layers": []}
    summary: dict[str, Any] = {"barrier_matrices": {}, "curves": {}, "bn": bn}
    for name, ds in mats.items():
        m = _matrix(ds)
        if m is None:
            continue
        z, xl, yl, var, units = m
        fid = f"fig-conn-{len(figs)}"
        title = name.replace("_", " ")
        figs[fid] = F.heatmap_figure(z, [esc(v) for v in xl], [esc(v) for v in yl],
                                     esc(title), esc(f"{var} ({units})" if units else var))
        data["matrices"].append(fid)
        off = z[~np.eye(*z.shape, dtype=bool)] if z.shape[0] == z.shape[1] else z.ravel()
        off = off[np.isfinite(off)]
        summary["barrier_matrices"][name] = {
            "shape": list(z.shape), "median": float(np.median(off)) if len(off) else None,
            "max": float(off.max()) if len(off) else None, "units": units}
    lines = _path_lines(curves, straight, view.curves_table, summary["curves"])
    if lines:
        figs["fig-conn-curves"] = F.curve_figure(lines, "t (position along the path)",
                                                 "Loss along paths and curves")
        data["curves"] = True
    for name, ds in layers.items():
        m = _matrix(ds)
        if m is None:
            continue
        z, xl, yl, var, units = m
        fid = f"fig-conn-{len(figs)}"
        figs[fid] = F.heatmap_figure(z, [esc(v) for v in xl], [esc(v) for v in yl],
                                     esc(f"Layer-wise barriers: {name}"),
                                     esc(f"{var} ({units})" if units else var))
        data["layers"].append(fid)
    if not figs:
        return None
    return Section(template="sections/connectivity.html.j2", data=data, figures=figs,
                   summary=summary)


# =================================================================== symmetry
@section("symmetry", "Symmetry orbits",
         hint="lossatlas align {a} {b} {model} {data} --out {run}")
def symmetry(view: RunView) -> Section | None:
    """Re-basined models on the map (overlays named ``rebasin*``/``aligned*``) and the
    alignment summary of ``symmetry.json`` (distances before/after, per pair)."""
    groups = _overlay_groups(view, True)
    sym = view.symmetry
    if not groups and not sym:
        return None
    figs: dict[str, dict] = {}
    ds = view.atlas
    models = _model_table(view)
    if groups and ds is not None and models is not None and len(view.latent_dims) == 2:
        coords = np.stack([ds[c].values for c in view.latent_dims], 1).astype(float)
        logl = ds["log10_loss"].values.astype(float)
        lo = ds.attrs.get("box_lo") or coords.min(0).tolist()
        hi = ds.attrs.get("box_hi") or coords.max(0).tolist()
        grid = F.grid_field(coords, logl, 120, lo, hi)
        codes = coords[models["sample"]]
        fig = F.landscape_figure(grid, coords, logl, _model_groups(view, codes, models),
                                 overlays=groups, title="Re-basined models on the map")
        for tr in fig["data"]:
            if (tr.get("meta") or {}).get("role") == "models":
                tr["meta"] = {"role": "models-symmetry"}
        figs["fig-symmetry-map"] = fig
    summary: dict[str, Any] = {"overlays": [g["name"] for g in groups]}
    data: dict[str, Any] = {"map": "fig-symmetry-map" in figs, "pairs": None, "scalars": {}}
    if isinstance(sym, dict):
        pairs = sym.get("pairs") or []
        if pairs:
            keys = sorted({k for p in pairs for k in p})
            data["pairs"] = Table(keys, [[number(p.get(k)) if isinstance(p.get(k), (int, float))
                                          else str(p.get(k, "")) for k in keys] for p in pairs],
                                  caption="Alignment per pair")
        scalars = {k: v for k, v in sym.items() if isinstance(v, (int, float, str))}
        data["scalars"] = {k: number(v) for k, v in scalars.items()}
        summary.update(scalars)
    return Section(template="sections/symmetry.html.j2", data=data, figures=figs,
                   summary=summary)


# ==================================================================== terrain
_TERRAIN_UNITS = {"top_eigenvalue": "loss / param²", "trace": "loss / param²",
                  "epsilon_sharpness": "nats", "adaptive_sharpness": "nats", "llc": "",
                  "llc_mean": "", "loss": "nats"}


def _terrain_numbers(labels: list[str], ds, measures: dict[str, np.ndarray]) -> Table:
    """The per-model table of every measure, with its spread where stored (``trace_std``:
    standard error of the estimate; ``llc_std``: across chains)."""
    names = list(measures)
    spread = {n: ds[f"{n.removesuffix('_mean')}_std"].values.astype(float) for n in names
              if f"{n.removesuffix('_mean')}_std" in ds}

    def cell(n: str, i: int) -> str:
        v = number(float(measures[n][i]))
        return f"{v} ± {number(float(spread[n][i]), '', 2)}" if n in spread else v

    header = ["model", *[f"{n} ({_TERRAIN_UNITS[n]})" if _TERRAIN_UNITS.get(n) else n
                         for n in names]]
    rows = [[lab, *[cell(n, i) for n in names]] for i, lab in enumerate(labels)]
    return Table(header, rows,
                 caption="Measures per model (± standard error of the trace estimate; ± "
                         "standard deviation of the LLC across chains)")


@section("terrain", "Terrain",
         hint="lossatlas hessian --population {population} {data} --out {run}")
def terrain(view: RunView) -> Section | None:
    """Local qualifiers per model from ``fields/terrain.zarr`` (dim ``model``): top
    Hessian eigenvalues, trace, sharpness, local learning coefficient."""
    ds = view.field("terrain")
    if ds is None or "model" not in ds.dims:
        return None
    labels = [str(v) for v in (ds["model"].values if "model" in ds.coords
                               else range(ds.sizes["model"]))]
    # a fixed column order (the store lists variables in no fixed order): known measures
    # as in _TERRAIN_UNITS, then the others by name
    known = list(_TERRAIN_UNITS)
    names = sorted((str(k) for k, da in ds.data_vars.items()
                    if da.dims == ("model",) and not str(k).endswith(("_std", "_diverged"))),
                   key=lambda k: (known.index(k) if k in known else len(known), k))
    measures = {k: ds[k].values.astype(float) for k in names}
    if not measures:
        return None
    figs = {"fig-terrain": F.per_model_figure([esc(v) for v in labels], measures,
                                              _TERRAIN_UNITS, "Local qualifiers per model")}
    bn = view.terrain_table.get("bn") or ds.attrs.get("bn")
    eigenvalues = None
    if "eigenvalues" in ds and ds["eigenvalues"].ndim == 2:
        ev = ds["eigenvalues"].values.astype(float)
        eigenvalues = Table(["model", *[f"λ{r + 1}" for r in range(ev.shape[1])]],
                            [[lab, *[number(v) for v in row]]
                             for lab, row in zip(labels, ev, strict=True)],
                            caption="Top Hessian eigenvalues (loss per squared parameter)")
    p = view.png("landscape_terrain.png")  # terrain on the map: rings sized by the top eigenvalue
    rings = (Png.of(p, "Latent landscape with rings sized by the top Hessian eigenvalue")
             if p is not None else None)
    summary: dict[str, Any] = {
        k: {"median": float(np.nanmedian(v)) if np.isfinite(v).any() else None}
        for k, v in measures.items()}
    summary["bn"] = bn if isinstance(bn, str) else None
    data = {"policy": _policy_text(bn), "numbers": _terrain_numbers(labels, ds, measures),
            "eigenvalues": eigenvalues, "rings": rings}
    return Section(template="sections/terrain.html.j2", data=data, figures=figs,
                   summary=summary)


# ========================================================= phase transitions
@section("phase-transitions", "Phase transitions",
         hint="lossatlas dynamics {train}")
def phase_transitions(view: RunView) -> Section | None:
    """Metrics along training per run (``train/metrics.json``), with the transitions,
    defect and stages of ``dynamics.json`` marked when present."""
    metrics = view.metrics
    dyn = view.dynamics if isinstance(view.dynamics, dict) else None
    if not metrics and not dyn:
        return None
    runs_in = (metrics or {}).get("runs", metrics or {})
    variants = sorted({str(r.get("variant", k)) for k, r in runs_in.items()
                       if isinstance(r, dict)})
    runs, summary = [], {"runs": {}}
    for key, r in runs_in.items():
        rows = r.get("epochs") if isinstance(r, dict) else None
        if not rows:
            continue
        series = {}
        for m in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            vals = [row.get(m) for row in rows]
            if any(v is not None for v in vals):
                series[m] = [np.nan if v is None else float(v) for v in vals]
        x = [row.get("epoch", i) for i, row in enumerate(rows)]
        group = variants.index(str(r.get("variant", key)))
        runs.append({"name": esc(key), "group": group, "x": x, "series": series})
        last = rows[-1]
        summary["runs"][key] = {m: last.get(m) for m in series}
    marks = []
    transitions = dict((dyn or {}).get("transitions") or {})
    # the format of lossatlas.dynamics.dynamics_report: per run, per metric, change points
    # with the row index of the metric series; placed at that row's epoch
    for key, entry in ((dyn or {}).get("runs") or {}).items():
        run_key = str(key).replace("/", "_")
        xs = next((r["x"] for r in runs if r["name"] == esc(run_key)), None)
        pts = []
        for metric, found in (entry.get("transitions") or {}).items():
            for p in found if isinstance(found, list) else []:
                i = p.get("index") if isinstance(p, dict) else None
                if xs is not None and isinstance(i, int) and 0 <= i < len(xs):
                    pts.append({"epoch": xs[i], "metric": metric})
        transitions[run_key] = pts
    for key, points in transitions.items():
        for p in points if isinstance(points, list) else []:
            x = p.get("epoch") if isinstance(p, dict) else p
            text = p.get("metric", "transition") if isinstance(p, dict) else "transition"
            group = next((r["group"] for r in runs if r["name"] == esc(key)), 0)
            if isinstance(x, (int, float)):
                marks.append({"x": x, "text": esc(f"{key}: {text}"), "group": group})
    figs = {}
    plots = []
    if runs:
        figs["fig-training"] = F.training_figure(runs, marks)
    if dyn:
        for name in ("defect", "stages"):
            val = dyn.get(name)
            if isinstance(val, dict):
                lines = [{"name": esc(k), "x": v.get("x") or v.get("epoch") or [],
                          "y": v.get("y") or v.get("value") or []}
                         for k, v in val.items() if isinstance(v, dict)]
                if lines:
                    fid = f"fig-dynamics-{name}"
                    figs[fid] = F.curve_figure(lines, "epoch", f"{name.capitalize()} along "
                                               "training", ylabel=name, log=False)
                    plots.append(fid)
        summary["transitions"] = {k: len(v) for k, v in transitions.items()
                                  if isinstance(v, list)}
    if not figs:
        return None
    return Section(template="sections/phase_transitions.html.j2", figures=figs,
                   summary=summary, data={"training": "fig-training" in figs,
                                          "dynamics": bool(dyn), "plots": plots})


# ======================================================= algorithmic branches
@section("branches", "Algorithmic branches", hint="lossatlas branches {train} {dataset}")
def branches(view: RunView) -> Section | None:
    """Models of one basin whose functions differ (``branches.json`` as written by
    :func:`lossatlas.dynamics.branches_report`: per model its basin and branch, the
    functional distance matrix, branches per basin and their separation)."""
    br = view.branches
    if not isinstance(br, dict) or "branch" not in br or "basin" not in br:
        return None
    models = br.get("models") or []
    names = []
    for i, lab in enumerate(models):
        if isinstance(lab, dict):
            parts = [str(lab.get("variant", i))] + [f"{k} {lab[k]}" for k in ("seed", "epoch")
                                                     if k in lab]
            names.append(" / ".join(parts))
        else:
            names.append(str(lab))
    metric = str(br.get("metric", "disagreement"))
    figs: dict[str, dict] = {}
    dist = br.get("distances")
    if dist:
        shown = [esc(n) for n in names]  # plotly draws the labels as HTML
        figs["fig-branches"] = F.heatmap_figure(np.asarray(dist, float), shown, shown,
                                                esc(f"functional distance ({metric})"),
                                                esc(metric), colorscale="Cividis")
    sep = br.get("separation") or {}
    rows = []
    for b, n in sorted((br.get("num_branches") or {}).items(), key=lambda kv: str(kv[0])):
        members = [names[i] for i, bb in enumerate(br["basin"]) if str(bb) == str(b)
                   and i < len(names)]
        ratio = (sep.get(str(b)) or {}).get("ratio")
        rows.append([str(b), ", ".join(members), number(n),
                     number(ratio) if isinstance(ratio, float) and np.isfinite(ratio)
                     else "n/a"])
    data = {"metric": metric, "heatmap": "fig-branches" in figs,
            "table": Table(["basin", "models", "branches", "separation (between / within)"],
                           rows)}
    return Section(template="sections/branches.html.j2", data=data, figures=figs,
                   summary={"basins": len(br.get("num_branches") or {}),
                            "branches": int(sum((br.get("num_branches") or {}).values()))})


# =============================================================== faithfulness
def _loss_per_model(texts: list[str], true: np.ndarray, eval_mode: Any, bn: Any,
                    bn_text: Any) -> tuple[dict[str, Any] | None, float | None]:
    """The table of each model's loss under the BatchNorm policy beside its eval-mode loss
    (when stored), as the template's ``per_model`` ({open, count, policy, line, table}),
    and the largest gap between them in decades; ``(None, None)`` without models."""
    if not len(true):
        return None, None
    own = None
    if isinstance(eval_mode, list) and len(eval_mode) == len(true):
        own = np.asarray([np.nan if v is None else v for v in eval_mode], float)
    policy = bn if isinstance(bn, str) else "as stored"
    header = ["model", f"loss under the policy ({policy})"]
    if own is None:
        line = ("The loss of each model (the true loss above), as the map shows it."
                + ("" if bn in (None, "none") else
                   " No eval-mode loss is stored: the population kept no BatchNorm "
                   "statistics of its own."))
        rows = [[texts[i], number(true[i], "nats")] for i in range(len(true))]
        gap = None
    else:
        line = ("Under the BatchNorm policy every model is evaluated as the map evaluates "
                "the points between models; its eval-mode loss is the checkpoint as saved, "
                "in eval mode with its own running statistics. A gap between the two means "
                "the stored statistics do not match the data (they are two different "
                "functions of the same weights).")
        header += ["eval-mode loss (own statistics)", "eval-mode vs policy"]
        with np.errstate(invalid="ignore"):
            dec = log10_loss(own) - log10_loss(true)
        rows = [[texts[i], number(true[i], "nats"), number(own[i], "nats"),
                 number(float(dec[i]), "decades", 3)] for i in range(len(true))]
        fin = np.abs(dec[np.isfinite(dec)])
        gap = float(fin.max()) if len(fin) else None
    return ({"open": own is not None, "count": len(true), "policy": _policy_text(bn, bn_text),
             "line": line, "table": Table(header, rows)}, gap)


@section("faithfulness", "Faithfulness",
         hint="lossatlas atlas --population {population} {data} --out {run}")
def faithfulness(view: RunView) -> Section | None:
    """How far to trust the map: reconstruction, decoded-vs-true loss per model, field
    error at the models, projection error of overlays (curves, trajectories)."""
    faith = view.faithfulness
    if (not isinstance(faith, dict) and not view.overlays
            and not (view.path / "reconstruction.json").is_file()):
        return None
    figs: dict[str, dict] = {}
    data: dict[str, Any] = {"reconstruction": None, "scatter": False, "per_model": None,
                            "embeddings": None, "overlays": None}
    summary: dict[str, Any] = {}
    if isinstance(faith, dict):
        med = faith.get("median_decades") or {}
        names = {"decoded_raw": "decoded raw", "field_at_model": "field at model",
                 "field_loo": "field left-one-out",
                 "max_step_near_models": "largest step across an edge at a model"}
        rows = [[names.get(k, k.replace("_", " ")), number(v, "decades", 3)]
                for k, v in med.items()]
        rows.append(["reconstruction MSE (raw decoder)",
                     number(faith.get("reconstruction_mse_raw"), "per parameter²", 3)])
        rel = faith.get("decoded_loss_relative_error_median")
        rows.append(["decoded loss relative error (median)",
                     number(100 * rel, "%", 3) if isinstance(rel, float) else "n/a"])
        data["reconstruction"] = Table(["measure (median over models)", "value"], rows,
                                       "Reconstruction")
        per = faith.get("per_model") or {}
        true = np.asarray([np.nan if v is None else v for v in per.get("true_loss", [])], float)
        labels = list(view.label_texts)
        if len(labels) != len(true):
            labels = [f"model {i}" for i in range(len(true))]
        texts = [esc(t) for t in labels]  # plotly draws the hover text as HTML
        series = []
        if len(true):
            if per.get("decoded_raw_loss"):
                series.append({"name": "decoded raw",
                               "x": true, "y": np.asarray(per["decoded_raw_loss"], float),
                               "text": texts})
            for key, name in (("field_log10_loo", "field left-one-out"),
                              ("field_log10_at_model", "field at model")):
                if per.get(key):
                    v = np.asarray([np.nan if x is None else x for x in per[key]], float)
                    series.append({"name": name, "x": true, "y": 10 ** v, "text": texts})
        if series:
            figs["fig-faith"] = F.scatter_compare_figure(series, "true loss (nats)",
                                                         "loss on the map (nats)",
                                                         "Decoded vs true loss per model")
            data["scatter"] = True
        bn = faith.get("bn") if isinstance(faith.get("bn"), str) else _run_policy(view)[0]
        data["per_model"], gap = _loss_per_model(labels, true, per.get("eval_mode_loss"), bn,
                                                 faith.get("bn_text"))
        summary = {"median_decades": med,
                   "reconstruction_mse_raw": faith.get("reconstruction_mse_raw"),
                   "decoded_loss_relative_error_median":
                       faith.get("decoded_loss_relative_error_median"),
                   "bn": bn, "eval_mode_loss": per.get("eval_mode_loss") is not None,
                   "eval_mode_gap_decades_max": gap}
    recon = view.path / "reconstruction.json"
    if recon.is_file():
        recon_rows = json.loads(recon.read_text())
        data["embeddings"] = _embedding_table(recon_rows)
        summary["reconstruction_table"] = [
            {k: r.get(k) for k in ("method", "mse", "median_rel_loss_error", "skipped",
                                   "not_computable", "silhouette", "nn_purity",
                                   "nn_purity_chance")}
            for r in recon_rows.get("rows", [])]
    if view.overlays:
        rows = []
        for name, o in view.overlays.items():
            tr, pr = o.get("true_range") or [None, None], o.get("projected_range") or [None,
                                                                                      None]
            rows.append([name, number(len(o.get("codes") or []), "points"),
                         number(o.get("mae"), "nats"),
                         f"{number(tr[0])} – {number(tr[1], 'nats')}",
                         f"{number(pr[0])} – {number(pr[1], 'nats')}"])
        data["overlays"] = Table(["overlay", "points", "mean abs. error", "true loss range",
                                  "loss range on the map"], rows,
                                 "Projection error of curves, trajectories and re-basined "
                                 "models")
        summary["overlays_mae"] = {n: o.get("mae") for n, o in view.overlays.items()}
    return Section(template="sections/faithfulness.html.j2", data=data, figures=figs,
                   summary=summary)


def _embedding_table(data: dict[str, Any]) -> Table:
    """The embeddings side by side (``reconstruction.json``): reconstruction, decoded-model
    loss error, separation of the variants, fit time per method."""
    rows = []
    for r in data.get("rows", []):
        if "skipped" in r:
            rows.append([str(r["method"]), "skipped", str(r["skipped"]), "", ""])
            continue
        rel = r.get("median_rel_loss_error")
        sep = (f"{number(r.get('silhouette'), '', 2)} / {number(r.get('nn_purity'), '', 2)} "
               f"(chance {number(r.get('nn_purity_chance'), '', 2)})")
        if r.get("not_computable"):
            rows.append([str(r["method"]), "not computable", str(r["not_computable"]), sep,
                         number(r.get("seconds"), "s")])
            continue
        rows.append([str(r["method"]), number(r.get("mse"), "per parameter²", 3),
                     number(100 * rel, "%", 3) if isinstance(rel, float) else "n/a", sep,
                     number(r.get("seconds"), "s")])
    return Table(["method (on span coordinates)", "reconstruction MSE",
                  "decoded-model loss error (median)",
                  "variant separation: silhouette / nearest-neighbour purity", "fit time"], rows,
                 caption=f"Embeddings side by side ({data.get('dim', 2)} latent dimensions, "
                         "no residual correction; MDS and Isomap have no inverse, so only "
                         "their separation of the variants)")


# ===================================================================== slices
@section("slices", "Slices",
         hint="lossatlas surface random {a} {model} {data} --out {run}")
def slices(view: RunView) -> Section | None:
    """The stored 1-D / 2-D slices (fields with ``attrs["slice"]``) and their PNGs."""
    found = view.slices
    if not found:
        return None
    figs: dict[str, dict] = {}
    summary: dict[str, Any] = {}
    plots: list[str] = []
    pngs: list[Png] = []
    for k, (name, ds) in enumerate(found.items()):
        info = view.slice_info(name)
        da = ds["loss"]
        dims = list(da.dims)
        kind = info.get("kind", "slice")
        title = f"{name.split('/')[-1]} ({kind})"
        units = info.get("units") or {}
        fid = f"fig-slice-{k}"
        vals = da.values.astype(float)
        fin = vals[np.isfinite(vals)]
        summary[name] = {"kind": kind, "shape": list(da.shape),
                         "min_loss": float(fin.min()) if len(fin) else None,
                         "max_loss": float(fin.max()) if len(fin) else None}
        anchors = info.get("anchors") or {}
        if len(dims) == 1:
            d = dims[0]
            marks = []
            for a, pos in anchors.items():
                if pos:
                    j = int(np.argmin(np.abs(ds[d].values - pos[0])))
                    marks.append({"x": float(ds[d].values[j]), "y": float(vals[j]),
                                  "text": esc(a)})
            figs[fid] = F.curve_figure(
                [{"name": "loss", "x": ds[d].values, "y": vals, "marks": marks}],
                esc(f"{d} ({units.get(d)})" if units.get(d) else d), esc(title))
        elif len(dims) == 2:
            d0, d1 = dims
            z = drawable(log10_loss(vals)).T  # [d1, d0]
            pts = [{"x": p[0], "y": p[1], "text": esc(a)} for a, p in anchors.items()
                   if len(p) >= 2]
            figs[fid] = F.contour_figure(ds[d0].values, ds[d1].values, z, esc(d0), esc(d1),
                                         esc(title), pts)
        else:
            continue
        plots.append(fid)
        for p in view.slice_pngs(name):
            pngs.append(Png.of(p, p.name))
            summary[name].setdefault("figures", []).append(str(p.relative_to(view.path)))
    return Section(template="sections/slices.html.j2", data={"plots": plots, "pngs": pngs},
                   figures=figs, summary=summary)

