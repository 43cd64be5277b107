"""The global atlas end to end on a small real population (MNIST-1D MLPs)."""

import json

import numpy as np
import pytest
import torch

from lossatlas.atlas import Atlas
from lossatlas.data import create
from lossatlas.evaluate import Evaluator
from lossatlas.population import Population
from lossatlas.refine import RefinedField
from lossatlas.train import train_population

VARIANTS = [
    {"name": "A", "optimizer": "sgd", "lr": 0.05, "batch_size": 64, "weight_decay": 0.0},
    {"name": "B", "optimizer": "adam", "lr": 2e-3, "batch_size": 64, "weight_decay": 0.0},
    {"name": "C", "optimizer": "sgd", "lr": 0.1, "batch_size": 128, "weight_decay": 5e-4},
]


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    root = tmp_path_factory.mktemp("pop")
    splits = create("mnist1d", num_samples=1500)
    train_population("mlp", splits, out_dir=root, variants=VARIANTS, epochs=6,
                     checkpoint_every=2, model_kwargs={"hidden": (32, 32)})
    pop = Population.from_run(root)
    keep = [i for i, lab in enumerate(pop.labels) if lab["epoch"] > 0]
    return pop.subset(keep), (splits.x_train[:800], splits.y_train[:800])


@pytest.fixture(scope="module")
def atlas(population, tmp_path_factory):
    pop, xy = population
    a = Atlas(pop, xy, tmp_path_factory.mktemp("atlas"))
    a.embed("ae", dim=2, epochs=800)
    a.field(resolution=20, budget=1000, tol=0.1)
    a.topology()
    return a


def test_decoded_models_keep_their_loss(atlas, population):
    faith = atlas.faithfulness()
    # the map without the residual correction (which pins every model to its own loss, so
    # any check at the models with it is true by construction), recomputed independently:
    # decode the codes uncorrected, evaluate with a fresh evaluator
    pop, xy = population
    ev = Evaluator(pop.model(0), xy, space=pop.space)
    true = ev.evaluate(pop.as_points())["loss"].double().numpy()
    raw = ev.evaluate(atlas.decode(atlas.codes_, corrected=False))["loss"].double().numpy()
    per = faith["per_model"]
    np.testing.assert_allclose(per["true_loss"], true, rtol=1e-5)
    np.testing.assert_allclose(per["decoded_raw_loss"], raw, rtol=1e-4)
    rel = float(np.median(np.abs(raw / true - 1)))
    assert faith["decoded_loss_relative_error_median"] == pytest.approx(rel, rel=1e-3, abs=1e-7)
    assert faith["median_decades"]["decoded_raw"] == pytest.approx(
        float(np.median(np.abs(np.log10(raw) - np.log10(true)))), rel=1e-3, abs=1e-7)
    # the autoencoder alone decodes models to within 1% of their loss
    assert rel < 0.01
    # the refined field, interpolated at each code from the other samples (not pinned)
    assert faith["median_decades"]["field_loo"] < 0.05
    assert (atlas.path / "faithfulness.json").exists()


def test_uniform_grid_alone_misses_the_models(atlas):
    """Why refinement exists: a plain grid interpolated at the codes is far off."""
    lo, hi = atlas.box(0.2)
    res = 20
    axes = [np.linspace(lo[i], hi[i], res) for i in range(2)]
    zz = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    out = atlas.evaluator.evaluate(atlas.decode(torch.as_tensor(zz, dtype=torch.float32)))
    grid = RefinedField(zz, {"v": np.log10(out["loss"].double().numpy())}, "v",
                        np.zeros((0, 2), int), np.zeros(len(zz), int), 0, lo, hi, res)
    true = np.log10(atlas.true_values()["loss"].double().numpy())
    grid_err = np.median(np.abs(grid.interpolate(atlas.codes_.numpy()) - true))
    refined_err = atlas.faithfulness()["median_decades"]["field_loo"]
    assert grid_err > 2 * refined_err


def test_every_model_has_a_basin_and_summary_is_stored(atlas):
    assert len(atlas.basins_) == len(atlas.population)
    minima = np.asarray(atlas.tree_.minima).reshape(-1)
    summary = json.loads((atlas.path / "topology.json").read_text())
    assert summary["num_basins"] == len(minima) and atlas.basins_.max() < len(minima)
    assert sum(len(b["models"]) for b in summary["basins"]) == len(atlas.population)
    # each basin's minimum is the lowest sample labelled with it: at most the loss of any
    # of its models (samples of the field too), and the field's value at that sample
    labels = np.asarray(atlas.tree_.labels).reshape(-1)
    loss = atlas.field_.values["loss"]
    true = atlas.true_values()["loss"].double().numpy()
    for b in summary["basins"]:
        m = minima[b["basin"]]
        assert labels[m] == b["basin"]
        assert b["min_loss"] == pytest.approx(float(loss[m]), rel=1e-9)
        assert b["min_loss"] == pytest.approx(float(loss[labels == b["basin"]].min()), rel=1e-9)
        if b["models"]:
            assert b["min_loss"] <= true[b["models"]].min() * (1 + 1e-5)
    # the residual correction made no basin: the uncorrected map, at the same threshold,
    # puts the models in as many basins
    raw = atlas.raw_check()
    assert raw["corrected"]["num_model_basins"] == summary["num_model_basins"]
    assert raw["raw"]["num_model_basins"] == raw["corrected"]["num_model_basins"]
    stored = atlas.run.open_field("atlas")
    assert stored.sizes["sample"] == atlas.field_.n
    assert "edges" in stored and "distance" in stored


def test_field_reused_and_embedding_reloaded(atlas, population):
    pop, xy = population
    again = Atlas(pop, xy, atlas.path)
    again.embed("ae", dim=2, epochs=800)
    torch.testing.assert_close(again.codes_, atlas.codes_)
    before = again.evaluator.points_evaluated
    again.field(resolution=20, budget=1000, tol=0.1)
    assert again.evaluator.points_evaluated == before  # every round came from the store
    np.testing.assert_array_equal(again.field_.values["loss"], atlas.field_.values["loss"])


def test_encode_decode_exact_at_models(atlas):
    X = atlas.X
    torch.testing.assert_close(atlas.decode(atlas.codes_), X, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(atlas.encode(X), atlas.codes_, rtol=1e-4, atol=1e-4)


def test_landscape_figure(atlas, tmp_path):
    """The figures draw the atlas's numbers: models at their codes, contours over the
    field's log10-loss range, rings sized by the values, tree leaves named by the
    variants in each basin, the persistence pairs."""
    import matplotlib.pyplot as plt

    from lossatlas.atlas_plot import plot_atlas_persistence, plot_atlas_tree
    from lossatlas.plotting import save_figure

    ax = atlas.plot_landscape()
    save_figure(ax, tmp_path / "l.png")
    z = atlas.codes_.numpy()
    drawn = np.concatenate([c.get_offsets() for c in ax.collections
                            if getattr(c, "get_label", lambda: "")().startswith("variant")])
    np.testing.assert_allclose(np.sort(drawn, axis=0), np.sort(z, axis=0), rtol=1e-6)
    filled = [c for c in ax.collections if hasattr(c, "levels")][0]
    log10 = atlas.field_.values["log10_loss"]
    assert filled.levels[0] == pytest.approx(np.nanmin(log10))
    assert filled.levels[-1] == pytest.approx(np.nanmax(log10[np.isfinite(log10)]))
    plt.close(ax.figure)
    ax = atlas.plot_landscape(marker_values={0: 1.0, 2: 3.0},
                              marker_label="top eigenvalue")
    save_figure(ax, tmp_path / "terrain.png")
    rings = [c for c in ax.collections if c.get_label().startswith("top eigenvalue")][0]
    np.testing.assert_allclose(rings.get_offsets(), z[[0, 2]], rtol=1e-6)
    np.testing.assert_allclose(rings.get_sizes(), [80, 680])  # smallest and largest value
    plt.close(ax.figure)
    ax = plot_atlas_tree(atlas)
    save_figure(ax, tmp_path / "t.png")
    topo = json.loads((atlas.path / "topology.json").read_text())
    names = [",".join(sorted(b["variants"])) or "-" for b in topo["basins"]]
    assert sorted(t.get_text() for t in ax.get_xticklabels()) == sorted(names)
    plt.close(ax.figure)
    ax = plot_atlas_persistence(atlas)
    save_figure(ax, tmp_path / "p.png")
    finite = atlas.pairs_[np.isfinite(atlas.pairs_[:, 1])]
    dots = [c for c in ax.collections if c.get_label() == "minimum"][0].get_offsets()
    np.testing.assert_allclose(np.sort(dots, axis=0), np.sort(finite, axis=0), rtol=1e-6)
    plt.close(ax.figure)
    for f in ("l.png", "terrain.png", "t.png", "p.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_order_errors(population, tmp_path):
    pop, xy = population
    a = Atlas(pop, xy, tmp_path)
    with pytest.raises(RuntimeError, match="embed"):
        a.field()


def test_overlay_of_models_and_a_path(atlas, population):
    X = atlas.X
    # the models project onto their own stored codes (encode is consistent with embed)
    res = atlas.overlay(X[:3], "models")
    np.testing.assert_allclose(res["codes"], atlas.codes_[:3].numpy(), rtol=1e-4, atol=1e-5)
    assert res["basin"] == atlas.basins_[:3].tolist()
    assert (atlas.path / "overlays" / "models.json").exists()
    # a straight path between two models, against an independent computation: encode,
    # decode (with the correction, as the map does), evaluate with a fresh evaluator
    t = torch.linspace(0, 1, 7)[:, None]
    path = (1 - t) * X[0] + t * X[-1]
    res = atlas.overlay(path, "line")
    pop, xy = population
    ev = Evaluator(pop.model(0), xy, space=pop.space)
    true = ev.evaluate(path)["loss"].double().numpy()
    projected = ev.evaluate(atlas.decode(atlas.encode(path)))["loss"].double().numpy()
    np.testing.assert_allclose(res["true_loss"], true, rtol=1e-5)
    np.testing.assert_allclose(res["projected_loss"], projected, rtol=1e-4)
    assert res["median_abs_error"] == pytest.approx(
        float(np.median(np.abs(projected - true))), rel=1e-4, abs=1e-7)
    assert res["true_range"] == pytest.approx([true.min(), true.max()], rel=1e-5)
    with pytest.raises(ValueError, match="points must be"):
        atlas.overlay(X[:, :5], "bad")


def test_reconstruction_table_against_sklearn_pca(atlas):
    from sklearn.decomposition import PCA

    rows = atlas.reconstruction_table(methods=("pca", "kpca", "ae"),
                                      variants={"ae-tanh": {"bounded": True, "epochs": 800}})
    by = {r["method"]: r for r in rows}
    assert set(by) == {"pca", "kpca", "ae", "ae-tanh", "mds", "isomap"}
    X = atlas.X.double().numpy()
    pca = PCA(n_components=2).fit(X)
    ref = pca.inverse_transform(pca.transform(X))
    assert np.isclose(by["pca"]["mse"], float(((ref - X) ** 2).mean()), rtol=1e-3)
    ref_loss = atlas.evaluator.evaluate(torch.as_tensor(ref, dtype=torch.float32))["loss"]
    np.testing.assert_allclose(by["pca"]["decoded_loss"], ref_loss.numpy(), rtol=1e-3)
    # the autoencoder reproduces the models far better than a linear 2-D map
    assert by["ae"]["mse"] < 0.1 * by["pca"]["mse"]
    assert by["ae"]["median_rel_loss_error"] < by["pca"]["median_rel_loss_error"]
    assert (atlas.path / "reconstruction.json").exists()
    # MDS and Isomap (the seed's clustering comparison): scikit-learn's codes of the span
    # coordinates, no loss columns, and their variant separation by hand
    from sklearn.manifold import Isomap

    C = atlas.reduction_.encode(atlas.X).double().numpy()
    ref = Isomap(n_neighbors=5, n_components=2).fit_transform(C)
    iso = by["isomap"]
    np.testing.assert_allclose(np.asarray(iso["codes"]), ref, rtol=1e-5, atol=1e-6)
    variants = np.asarray([lab["variant"] for lab in atlas.population.labels])
    dist = np.linalg.norm(ref[:, None] - ref[None], axis=-1) + np.diag([np.inf] * len(ref))
    assert iso["nn_purity"] == pytest.approx(np.mean(variants[dist.argmin(1)] == variants))
    for name in ("mds", "isomap"):
        assert by[name]["mse"] is None and "no inverse" in by[name]["not_computable"]
        assert -1 <= by[name]["silhouette"] <= 1
    # and Table 1 reaches the report and its summary.json, MDS/Isomap rows included
    from lossatlas.report import write_report

    page = write_report(atlas.path).read_text()
    table = json.loads((atlas.path / "summary.json").read_text())["faithfulness"][
        "reconstruction_table"]
    assert {r["method"]: r["nn_purity"] for r in table} == {
        m: r["nn_purity"] for m, r in by.items()}
    assert "not computable" in page and "nearest-neighbour purity" in page


def test_mapped_population_under_a_memory_budget_gives_the_same_atlas(population, tmp_path):
    """A memory-mapped population, read by blocks with the basis on disk and points
    decoded in small chunks, gives the in-memory atlas: same codes, field and basins."""
    pop, xy = population
    mapped = Population.from_safetensors(pop.to_safetensors(tmp_path / "pop.safetensors"),
                                         mmap=True)
    assert mapped.is_mapped
    atlases = []
    for p, budget, where in ((pop, None, "mem"), (mapped, "200kB", "mapped")):
        a = Atlas(p, xy, tmp_path / where, memory_budget=budget, device="cpu")  # host path
        a.embed("pca", dim=2)
        a.field(resolution=12, budget=300, tol=0.1)
        a.topology()
        atlases.append(a)
    mem, lazy = atlases
    assert lazy.reduction_.on_disk and not mem.reduction_.on_disk
    assert (lazy.path / "embedding" / "map.components.safetensors").exists()
    assert lazy._chunk_points() < len(pop)  # decoding really was chunked
    torch.testing.assert_close(lazy.codes_, mem.codes_, rtol=0, atol=1e-4)
    np.testing.assert_allclose(lazy.field_.values["log10_loss"], mem.field_.values["log10_loss"],
                               atol=1e-4)
    np.testing.assert_allclose(lazy.field_.values["distance"], mem.field_.values["distance"],
                               rtol=1e-4, atol=1e-4)
    assert lazy.basins_.tolist() == mem.basins_.tolist()
    f_lazy, f_mem = lazy.faithfulness(), mem.faithfulness()
    assert f_lazy["reconstruction_mse_raw"] == pytest.approx(f_mem["reconstruction_mse_raw"],
                                                             rel=1e-3, abs=1e-9)
    # the distance field, computed in span coordinates, equals decoding and measuring
    z = lazy.field_.coords[:25]
    pts = mem.decode(torch.as_tensor(z, dtype=torch.float32))
    direct = torch.cdist(pts.double(), pop.as_points().double()).min(1).values.numpy()
    np.testing.assert_allclose(lazy.field_.values["distance"][:25], direct, rtol=1e-4,
                               atol=1e-4)
