"""The demo as a library function: :func:`run_demo` runs :data:`DEMO_STEPS` in order.

Each step is a function of one :class:`DemoRun` (the settings and what the earlier steps
made: the data, the population, the atlas) that adds its results to ``run.summary``; its
time is reported as ``<name>_seconds``. To add a step to the demo, write such a function
and insert ``(name, function)`` into :data:`DEMO_STEPS` (or pass ``steps=`` to
:func:`run_demo`). ``lossatlas demo`` calls :func:`run_demo` and prints its summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pipeline import build_atlas, measured_on, write_slice
from .plotting import save_figure

__all__ = ["DEMO_BN_VARIANTS", "DEMO_STEPS", "DemoRun", "demo_bn_cnn", "demo_connectivity",
           "demo_terrain", "run_demo"]


@dataclass
class DemoRun:
    """The demo's settings and what its steps have made so far.

    ``out_dir`` the run directory; ``epochs`` per variant with a checkpoint ``every``
    epochs; the landscape measured on the first ``samples`` training samples; the atlas
    field on a ``resolution`` base grid refined to ``budget`` samples. The steps fill in
    ``splits`` (`DatasetSplits`), ``xy`` (the measured samples), ``pop`` (`Population`),
    ``atlas`` (`Atlas`) and ``summary`` (the figures reported).
    """

    out_dir: Path
    epochs: int = 8
    every: int = 2
    samples: int = 2000
    resolution: int = 40
    budget: int = 4000
    device: str | None = None
    progress: bool = True
    splits: Any = None
    xy: Any = None
    pop: Any = None
    atlas: Any = None
    summary: dict[str, Any] = field(default_factory=dict)


def _train(run: DemoRun) -> None:
    """7 MLP variants (independent initialisations, as in the Globscope setup) on
    MNIST-1D into ``OUT/train``; the landscape's samples."""
    from .data import create as create_data
    from .population import Population
    from .train import default_demo_variants, train_population

    run.splits = create_data("mnist1d")
    variants = [{**v, "init": "own"} for v in default_demo_variants()]
    train_population("mlp", run.splits, out_dir=run.out_dir / "train", variants=variants,
                     epochs=run.epochs, checkpoint_every=run.every,
                     model_kwargs={"hidden": (128, 128)}, device=run.device,
                     progress=run.progress)
    run.pop = Population.open(run.out_dir / "train")
    run.xy = (run.splits.x_train[:run.samples], run.splits.y_train[:run.samples])


def _slices(run: DemoRun) -> None:
    """Three slices into ``OUT/slices``: the straight line between two variants' final
    models, a random plane around one, the PCA plane of one trajectory."""
    from .evaluate import Evaluator
    from .surfaces import interpolation, pca_plane, random_slice

    pop, final = run.pop, run.pop.final_indices()
    ev = Evaluator(pop.model(final[0]), run.xy, device=run.device, space=pop.space)
    a, b = pop.model(final[0]), pop.model(final[1])
    where = run.out_dir / "slices"
    write_slice("interp", interpolation(a, b, points=25, extrapolate=0.25), ev, where,
                "interp", progress=False)
    write_slice("random", random_slice(a, dim=2, resolution=25, span=1.0), ev, where,
                "random2d", progress=False)
    first = next(iter(pop.trajectories().values()))
    sl = pca_plane(pop.as_points()[first], resolution=25, space=pop.space)
    write_slice("pca", sl, ev, where, "pca", progress=False)


def _atlas(run: DemoRun) -> None:
    """The atlas (2-D autoencoder) and the reconstruction table of the embeddings."""
    atlas, summary = build_atlas(
        run.pop, run.xy, run.out_dir, "ae", 2, run.resolution, run.budget, 0.1, "0.1",
        run.device, "fp32", progress=run.progress,
        data=measured_on(run.splits, "train", len(run.xy[1]), run.samples))
    run.atlas = atlas
    run.summary.update(summary)
    atlas.reconstruction_table(
        methods=("pca", "kpca", "umap", "ae"),
        variants={"ae-tanh": {"bounded": True, "epochs": 2000},
                  "ae-stress": {"stress": 0.1, "epochs": 2000}})


def _connectivity(run: DemoRun) -> None:
    """Barriers, a Bezier curve, re-basined models and branches (`demo_connectivity`)."""
    run.summary.update(demo_connectivity(run.atlas, run.xy, run.out_dir, run.device,
                                         heldout=(run.splits.x_test, run.splits.y_test)))


def _table2(run: DemoRun) -> None:
    """The seed's Table 2 (``OUT/table2.json``): trained Bezier curves from the last
    variant's final model to every other variant's, projected onto the run's AE map and
    onto kernel PCA and UMAP maps, and fitted into each map (``include=``); the median
    absolute errors (nats) of the loss at the decoded points."""
    from .connectivity.curve_table import curve_table, write_curve_table

    table = curve_table(run.pop, run.xy, run.out_dir / "table2",
                        methods=("ae", "kpca", "umap"), atlases={"ae": run.atlas},
                        points=9, curve_steps=100, resolution=8, device=run.device,
                        progress=run.progress)
    write_curve_table(table, run.out_dir)
    for m, errs in table.median_errors().items():  # medians over the pairs, nats
        for kind, v in errs.items():
            run.summary[f"table2_{m}_{kind}_median_abs_error"] = round(v, 4)


def _dynamics(run: DemoRun) -> None:
    """Phase transitions along the variants' training (``OUT/train/dynamics.json``)."""
    from .dynamics import dynamics_report

    dyn = dynamics_report(run.out_dir / "train", data=run.splits, defect=False,
                          figures=False)
    run.summary["transitions"] = sum(len(v) for e in dyn["runs"].values()
                                     for v in (e.get("transitions") or {}).values())


def _terrain(run: DemoRun) -> None:
    """The final models' terrain (`demo_terrain`) and the atlas coloured by it."""
    run.summary.update(demo_terrain(run.pop, run.xy, run.out_dir, run.device))
    table = json.loads((run.out_dir / "terrain.json").read_text())
    if "top_eigenvalue" in table:
        save_figure(run.atlas.plot_landscape(
            marker_values=dict(zip(table["indices"], table["top_eigenvalue"], strict=True)),
            marker_label="top Hessian eigenvalue"), run.out_dir / "landscape_terrain.png")


def _bn_cnn(run: DemoRun) -> None:
    """The BatchNorm CNN sub-run ``OUT/bn_cnn`` (`demo_bn_cnn`)."""
    run.summary["bn_cnn"] = demo_bn_cnn(run.out_dir / "bn_cnn", run.device,
                                        progress=run.progress)


#: The demo's steps, in order: ``(name, step)``; each step is a function of the
#: :class:`DemoRun`, timed as ``<name>_seconds``.
DEMO_STEPS: list[tuple[str, Callable[[DemoRun], None]]] = [
    ("train", _train), ("slices", _slices), ("atlas", _atlas),
    ("connectivity", _connectivity), ("table2", _table2), ("dynamics", _dynamics), ("terrain", _terrain),
    ("bn_cnn", _bn_cnn),
]


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int = 8, every: int = 2,
             samples: int = 2000, resolution: int = 40, budget: int = 4000,
             device: str | None = None, progress: bool = True,
             steps: Sequence[tuple[str, Callable[[DemoRun], None]]] | None = None
             ) -> dict[str, Any]:
    """Run the demo's ``steps`` (default :data:`DEMO_STEPS`) into ``out_dir`` and write
    its report.

    Returns the summary: the atlas's figures (basins, variants, faithfulness), the
    connectivity, transitions and terrain, the BatchNorm sub-run's (``bn_cnn``), the
    seconds of each step (``<name>_seconds``) and in all (``total_seconds``),
    ``basins_vs_variants`` and the report's path (``report``).
    """
    from .report import write_report

    run = DemoRun(Path(out_dir), epochs=epochs, every=every, samples=samples,
                  resolution=resolution, budget=budget, device=device, progress=progress)
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    for name, step in DEMO_STEPS if steps is None else steps:
        t = time.perf_counter()
        step(run)
        seconds[name] = time.perf_counter() - t
    summary = run.summary
    summary.update({f"{k}_seconds": round(v, 1) for k, v in seconds.items()})
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    if "basins_with_models" in summary:
        summary["basins_vs_variants"] = (
            f"{summary['basins_with_models']} basins hold models, for "
            f"{summary['variants']} variants ({summary['basins']} basins in all)")
    summary["report"] = str(write_report(run.out_dir))
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def demo_connectivity(atlas_obj, xy, out_dir: Path, device=None, heldout=None) -> dict:
    """The demo's connectivity over the atlas's verbs: the barrier matrix of the
    variants' final models before and after weight matching (:meth:`Atlas.connect`,
    stored in ``OUT/connectivity.json``, the fields and ``OUT/barriers.png``), one
    Bezier curve trained between the first two (``OUT/curves.json``) and the models
    re-basined onto the first (:meth:`Atlas.align`), both projected onto the atlas, and
    the branches of the population (on ``heldout``, else ``xy``). Barriers and the curve
    are measured on the atlas's data and device (``xy`` and ``device`` are the demo's
    own, the ones the atlas was built with). Returns the demo's summary figures
    (barriers in nats)."""
    import numpy as np
    import torch

    from .connectivity import curve_points
    from .connectivity.population import plot_barriers, write_barriers
    from .dynamics import branches_report
    from .store import Run, atomic_write_json

    pop = atlas_obj.population
    idx = pop.final_indices()
    names = [str(pop.labels[i].get("variant", i)) for i in idx]
    mats = {k: v.assign_coords(model_i=names, model_j=names)  # variant names, as stored
            for k, v in atlas_obj.connect(align=True, indices=idx).items()}
    res = write_barriers(out_dir, mats, names, align=True)
    save_figure(plot_barriers(mats, names)[0].figure, Path(out_dir) / "barriers.png",
                close=True)
    off = ~np.eye(len(idx), dtype=bool)
    before = float(np.asarray(res["before"])[off].mean())
    after = float(np.asarray(res["after"])[off].mean())
    pair = (idx[0], idx[1])
    curve = atlas_obj.connect(align=False, curves=[pair], points=61, indices=pair,
                              kind="bezier", steps=400)["curves"][pair]
    t = torch.linspace(0, 1, 61)
    w_a, w_b = pop.as_points()[idx[0]], pop.as_points()[idx[1]]
    pts = curve_points(curve.bends, w_a, w_b, t, "bezier")
    ov_curve = atlas_obj.overlay(pts, f"curve-{names[0]}-{names[1]}",
                                 labels=[f"t={v:.3f}" for v in t.tolist()])
    rebased = atlas_obj.align(idx[0], idx).points[1:]
    ov_rebasin = atlas_obj.overlay(rebased, "rebasin",
                                   labels=[f"{n} onto {names[0]}" for n in names[1:]],
                                   partners=[idx[0]] * len(rebased))
    Run(out_dir).save_dataset(f"curve-{names[0]}-{names[1]}", curve.curve)
    atomic_write_json(out_dir / "curves.json", {
        "pair": names[:2], "kind": "bezier", "barrier": curve.barrier,
        "line_barrier": curve.line_barrier, "arc_length": curve.arc_length,
        "t": curve.curve["t"].values.tolist(), "loss": curve.curve["loss"].values.tolist(),
        "line_loss": curve.line["loss"].values.tolist(),
    })
    branches = branches_report(pop, data=heldout if heldout is not None else xy,
                               barrier_matrix=np.asarray(res["before"]),
                               out_dir=out_dir)
    nb = branches.get("num_branches", {})
    return {"branches": sum(nb.values()) if isinstance(nb, dict) else nb,
            "mean_barrier_before_matching": before, "mean_barrier_after_matching": after,
            "bezier_barrier": float(curve.barrier), "line_barrier": float(curve.line_barrier),
            "curve_projection_mae": ov_curve["mae"], "rebasin_projection_mae": ov_rebasin["mae"],
            "rebased_in_partner_basin": f"{sum(ov_rebasin.get('same_basin_as_partner', []))}"
                                        f" of {len(rebased)}"}


def demo_terrain(pop, xy, out_dir: Path, device=None) -> dict:
    """The demo's terrain: top eigenvalue, trace, sharpness and LLC of each variant's
    final model, stored in ``OUT/terrain.json`` (and ``OUT/fields/terrain.zarr``).
    Returns ``{"terrain": path of terrain.json}``."""
    from .curvature.population import population_terrain

    population_terrain(pop, xy, out_dir, ("eigenvalues", "trace", "sharpness", "llc"), k=1,
                       num_probes=30, llc_kwargs={"num_chains": 4, "num_draws": 100},
                       device=device)
    return {"terrain": str(out_dir / "terrain.json")}


DEMO_BN_VARIANTS = [
    {"name": "A", "optimizer": "sgd", "lr": 0.05, "batch_size": 64, "init": "own"},
    {"name": "B", "optimizer": "adam", "lr": 3e-3, "batch_size": 64, "init": "own"},
    {"name": "C", "optimizer": "sgd", "lr": 0.2, "batch_size": 128, "init": "own"},
]


def demo_bn_cnn(out_dir: Path, device=None, progress: bool = False, epochs: int = 4,
                samples: int = 500, resolution: int = 12, budget: int = 300,
                ae_epochs: int = 1500) -> dict:
    """The demo's BatchNorm population: 3 variants x 3 checkpoints (epochs 0, 2, 4) of a
    small BatchNorm CNN (``cnn2d_bn``) on scikit-learn digits, its own atlas in
    ``out_dir`` (statistics recomputed at every point, the default policy) and report.
    Returns its summary: basins against variants, decoded error, the policy, and how far
    each checkpoint's own eval-mode loss is from its loss under the policy."""
    import numpy as np

    from .data import create as create_data
    from .population import Population
    from .report import write_report
    from .scale import log10_loss
    from .train import train_population

    splits = create_data("digits")
    train_population("cnn2d_bn", splits, out_dir=out_dir / "train", variants=DEMO_BN_VARIANTS,
                     epochs=epochs, checkpoint_every=max(1, epochs // 2), device=device,
                     progress=progress)
    pop = Population.open(out_dir / "train")
    xy = (splits.x_train[:samples], splits.y_train[:samples])
    _, summary = build_atlas(pop, xy, out_dir, "ae", 2, resolution, budget, 0.1, "0.1",
                             device, "fp32", progress=progress,
                             embed_kwargs={"epochs": ae_epochs, "lr": 1e-2},
                             data=measured_on(splits, "train", len(xy[1]), samples))
    per = json.loads((out_dir / "faithfulness.json").read_text())["per_model"]
    keep = {k: summary[k] for k in ("run", "models", "variants", "basins",
                                    "basins_with_models", "bn", "bn_text",
                                    "decoded_loss_rel_error_median",
                                    "field_error_decades_median") if k in summary}
    keep["basins_vs_variants"] = (f"{summary['basins_with_models']} basins hold models, "
                                  f"for {summary['variants']} variants")
    if per.get("eval_mode_loss"):
        gap = np.abs(log10_loss(np.asarray(per["eval_mode_loss"], float))
                     - log10_loss(np.asarray(per["true_loss"], float)))  # decades
        keep["eval_mode_vs_policy_max_decades"] = float(np.nanmax(gap))
    keep["report"] = str(write_report(out_dir))
    return keep
