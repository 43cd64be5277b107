"""The demo as one library function over a list of steps (lossatlas.demo.run_demo)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lossatlas.demo import DEMO_STEPS, DemoRun, run_demo


def test_the_demo_steps_in_order():
    assert [name for name, _ in DEMO_STEPS] == ["train", "slices", "atlas", "connectivity",
                                                "table2", "dynamics", "terrain", "bn_cnn"]


def test_run_demo_runs_its_steps_in_order_times_them_and_writes_the_report(tmp_path):
    seen: list[tuple[str, object]] = []

    def first(run: DemoRun) -> None:
        seen.append(("first", run.epochs))
        (run.out_dir / "fields").mkdir(parents=True)  # a run directory the report reads
        run.summary["a"] = 1

    def second(run: DemoRun) -> None:
        seen.append(("second", run.summary["a"]))  # what the step before made
        run.summary["b"] = 2

    summary = run_demo(tmp_path / "demo", epochs=3, progress=False,
                       steps=[("first", first), ("second", second)])
    assert seen == [("first", 3), ("second", 1)]
    assert list(summary) == ["a", "b", "first_seconds", "second_seconds", "total_seconds",
                             "report"]
    assert summary["first_seconds"] >= 0 and summary["second_seconds"] >= 0
    assert summary["total_seconds"] >= summary["first_seconds"] + summary["second_seconds"] - 0.2
    assert Path(summary["report"]) == tmp_path / "demo" / "report.html"
    assert Path(summary["report"]).is_file()


# ------------------------------------------- the connectivity and terrain steps, measured
@pytest.fixture(scope="module")
def small_atlas(tmp_path_factory):
    """Three tiny MLP variants (2 epochs) on blobs, mapped on a coarse PCA atlas."""
    from lossatlas.atlas import Atlas
    from lossatlas.data import create
    from lossatlas.population import Population
    from lossatlas.train import train_population

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo_small")
    splits = create("blobs", num_samples=240, seed=0)
    variants = [{"name": n, "lr": lr, "batch_size": 32, "init": "own"}
                for n, lr in (("A", 0.05), ("B", 0.2), ("C", 0.1))]
    train_population("mlp", splits, out_dir=out / "train", variants=variants, epochs=2,
                     model_kwargs={"hidden": (4,)}, device="cpu", num_threads=1)
    pop = Population.open(out / "train")
    xy = (splits.x_train[:160], splits.y_train[:160])
    atlas = Atlas(pop, xy, out, device="cpu")
    atlas.embed("pca", dim=2)
    atlas.field(resolution=8, budget=100, progress=False)
    atlas.topology()
    return atlas, xy, (splits.x_test, splits.y_test), out


def _loss(model, xy, theta=None) -> float:
    """Mean cross-entropy of ``model`` (with the flat parameters ``theta``) on ``xy``."""
    from lossatlas.space import ParamSpace

    if theta is not None:
        ParamSpace(model).load_into(model, theta)
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(xy[0]), xy[1]))


def _by_hand(models, xy, points=25) -> np.ndarray:
    """Entezari barriers of the straight paths, the loss evaluated point by point."""
    from lossatlas.space import ParamSpace

    space = ParamSpace(models[0])
    flat = [space.flatten(m) for m in models]
    n = len(models)
    out = np.zeros((n, n))
    t = np.linspace(0, 1, points)
    probe = copy.deepcopy(models[0])
    for i in range(n):
        for j in range(i + 1, n):
            loss = np.array([_loss(probe, xy, torch.lerp(flat[i], flat[j], float(s)))
                             for s in t])
            out[i, j] = out[j, i] = np.max(loss - ((1 - t) * loss[0] + t * loss[-1]))
    return out


def test_demo_connectivity_measures_what_it_says(small_atlas):
    from lossatlas.demo import demo_connectivity
    from lossatlas.symmetry import weight_matching

    atlas, xy, heldout, out = small_atlas
    pop = atlas.population
    idx = pop.final_indices()
    models = [pop.model(i) for i in idx]
    summary = demo_connectivity(atlas, xy, out, "cpu", heldout=heldout)
    conn = json.loads((out / "connectivity.json").read_text())
    assert conn["names"] == ["A", "B", "C"] and conn["units"] == "nats"
    before = _by_hand(models, xy)
    np.testing.assert_allclose(conn["before"], before, rtol=1e-4, atol=1e-6)
    aligned = [models[0]] + [weight_matching(models[0], m) for m in models[1:]]
    np.testing.assert_allclose(conn["after"], _by_hand(aligned, xy), rtol=1e-4, atol=1e-6)
    off = ~np.eye(3, dtype=bool)
    assert summary["mean_barrier_before_matching"] == pytest.approx(before[off].mean(),
                                                                      rel=1e-4)
    curve = json.loads((out / "curves.json").read_text())
    assert curve["pair"] == ["A", "B"] and len(curve["t"]) == 61
    # the curve's ends are the models; its line is the straight path, point by point
    ends = [_loss(m, xy) for m in models[:2]]
    assert curve["loss"][0] == pytest.approx(ends[0], rel=1e-4)
    assert curve["loss"][-1] == pytest.approx(ends[1], rel=1e-4)
    from lossatlas.space import ParamSpace

    space = ParamSpace(models[0])
    wa, wb = space.flatten(models[0]), space.flatten(models[1])
    line = [_loss(copy.deepcopy(models[0]), xy, torch.lerp(wa, wb, float(s)))
            for s in curve["t"]]
    np.testing.assert_allclose(curve["line_loss"], line, rtol=1e-4, atol=1e-6)
    assert summary["line_barrier"] == pytest.approx(curve["line_barrier"])
    assert summary["bezier_barrier"] == pytest.approx(curve["barrier"])
    for name in ("curve-A-B", "rebasin"):
        assert (out / "overlays" / f"{name}.json").is_file()
    assert summary["rebased_in_partner_basin"].endswith("of 2")


def test_demo_terrain_top_eigenvalue_is_the_dense_hessians(small_atlas):
    from torch.func import functional_call

    from lossatlas.demo import demo_terrain
    from lossatlas.space import ParamSpace

    atlas, xy, _, out = small_atlas
    pop = atlas.population
    summary = demo_terrain(pop, xy, out, "cpu")
    table = json.loads(Path(summary["terrain"]).read_text())
    assert table["models"] == ["A", "B", "C"] and table["indices"] == pop.final_indices()
    for row, i in enumerate(table["indices"]):
        model = pop.model(i).eval()
        names = [n for n, _ in model.named_parameters()]
        shapes = [p.shape for _, p in model.named_parameters()]
        flat = ParamSpace(model).flatten(model)

        def loss(theta, model=model, names=names, shapes=shapes):
            parts = torch.split(theta, [s.numel() for s in shapes])
            params = {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}
            return F.cross_entropy(functional_call(model, params, (xy[0],)), xy[1])

        h = torch.autograd.functional.hessian(loss, flat)
        eig = torch.linalg.eigvalsh(h.double())
        top = table["top_eigenvalue"][row]
        top = top[0] if isinstance(top, list) else top
        assert top == pytest.approx(float(eig[-1]), rel=1e-3)
        assert table["trace"][row] == pytest.approx(float(eig.sum()), rel=0.1)  # 30 probes
        assert np.isfinite(table["llc_mean"][row])
