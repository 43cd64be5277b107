"""A small real run for the report tests: train, slices, atlas (session-scoped, < 60 s)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lossatlas.plotting import save_figure

VARIANTS = [
    {"name": "A", "optimizer": "sgd", "lr": 0.05, "batch_size": 64},
    {"name": "B", "optimizer": "adam", "lr": 3e-3, "batch_size": 64},
    {"name": "C", "optimizer": "sgd", "lr": 0.1, "batch_size": 128, "weight_decay": 5e-4},
]


def build_small_run(root: Path) -> Path:
    """3 variants x 3 checkpoints of a 16-unit MLP on 600 MNIST-1D samples; 1-D and 2-D
    slices in ``root/slices``; an atlas (AE, resolution 16, budget 500) in ``root``; the
    final models' barrier matrices before and after weight matching in
    ``root/barriers.npz``."""
    from lossatlas.atlas import Atlas
    from lossatlas.atlas_plot import plot_atlas_persistence, plot_atlas_tree
    from lossatlas.connectivity.population import population_barrier_matrices
    from lossatlas.data import create
    from lossatlas.evaluate import Evaluator
    from lossatlas.population import Population
    from lossatlas.store import Run
    from lossatlas.surfaces import interpolation, random_slice
    from lossatlas.surfaces.slices import slice_field
    from lossatlas.train import train_population

    torch.manual_seed(0)
    splits = create("mnist1d", num_samples=750)
    train_population("mlp", splits, out_dir=root / "train", variants=VARIANTS, epochs=2,
                     checkpoint_every=1, model_kwargs={"hidden": (16,)})
    pop = Population.from_run(root / "train")
    xy = (splits.x_train[:600], splits.y_train[:600])
    final = pop.final_indices()
    ev = Evaluator(pop.model(final[0]), xy, space=pop.space)
    slices = Run(root / "slices")
    a, b = pop.model(final[0]), pop.model(final[1])
    slice_field(ev, interpolation(a, b, points=11, extrapolate=0.2), slices, "interp")
    slice_field(ev, random_slice(a, dim=2, resolution=9, span=1.0), slices, "random2d")
    atlas = Atlas(pop, xy, root)
    atlas.embed("ae", dim=2, epochs=100)
    atlas.field(resolution=16, budget=500, tol=0.1)
    atlas.topology()
    atlas.faithfulness()
    save_figure(atlas.plot_landscape(), root / "landscape.png")
    save_figure(plot_atlas_tree(atlas), root / "merge_tree.png")
    save_figure(plot_atlas_persistence(atlas), root / "persistence.png")
    if hasattr(atlas, "overlay"):  # a straight path between two final models, on the map
        t = torch.linspace(0, 1, 7)[:, None]
        pts = (1 - t) * atlas.X[final[0]] + t * atlas.X[final[1]]
        atlas.overlay(pts, "interp_path", labels=[f"t={v:.2f}" for v in t[:, 0].tolist()])
    # real barrier matrices of the final models, before and after weight matching onto the
    # first (kept beside the run, not in it: `with_all_results` stores them as results)
    names = [str(pop.labels[i]["variant"]) for i in final]
    mats = population_barrier_matrices([pop.model(i) for i in final], names, xy, align=True,
                                       points=9, device="cpu")
    np.savez(root / "barriers.npz", names=np.asarray(names), before=mats["before"].values,
             after=mats["after"].values)
    return root


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """A real run directory (train/, slices/, atlas); built once per session."""
    t0 = time.perf_counter()
    root = build_small_run(tmp_path_factory.mktemp("report_run"))
    print(f"small report run built in {time.perf_counter() - t0:.1f} s")
    return root


@pytest.fixture(scope="session")
def bn_run(tmp_path_factory) -> Path:
    """The demo's BatchNorm sub-run, small: 3 variants x 3 checkpoints of ``cnn2d_bn`` on
    digits (statistics recomputed at every point), its atlas and report."""
    from lossatlas.cli import demo_bn_cnn

    t0 = time.perf_counter()
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("report_bn_run")
    summary = demo_bn_cnn(root, epochs=2, samples=200, resolution=8, budget=100,
                          ae_epochs=100)
    print(f"small BatchNorm run built in {time.perf_counter() - t0:.1f} s: {summary}")
    return root
