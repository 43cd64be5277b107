"""Atlas.connect / align / terrain: thin calls into the library with the atlas's
population, data, loss and BatchNorm policy, so their numbers are the direct calls'.

On a small MLP and a small BatchNorm CNN population, trained and written to disk as a
checkpoint folder (tests/zoo.py), read back with ``Population.from_checkpoints``.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lossatlas import Atlas, Population
from lossatlas.connectivity import train_curve
from lossatlas.connectivity.population import population_barrier_matrices
from lossatlas.curvature import terrain
from lossatlas.symmetry import permutation_spec, weight_matching

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import zoo  # noqa: E402  (tests/ on sys.path)


@pytest.fixture(scope="module", params=["mlp", "bn_cnn"])
def case(request, tmp_path_factory):
    name = request.param
    torch.set_num_threads(1)
    folder = zoo.population_dir(name, tmp_path_factory.mktemp(name) / "ckpt", checkpoints=1)
    pop = Population.from_checkpoints(folder, f"{TESTS / 'zoo.py'}:{name}")
    x, y = zoo.data(name)
    xy = (x[:96], y[:96])
    atlas = Atlas(pop, xy, tmp_path_factory.mktemp(f"{name}_run"), device="cpu")
    models = [pop.model(i) for i in range(len(pop))]
    names = [f"{i}:{lab['variant']}" for i, lab in enumerate(pop.labels)]
    return name, pop, xy, atlas, models, names


def test_connect_is_population_barrier_matrices(case):
    name, pop, xy, atlas, models, names = case
    got = atlas.connect(points=5)
    want = population_barrier_matrices(models, names, xy, align=True, device="cpu", points=5,
                                       bn=pop.bn)
    assert set(got) == {"before", "after"}
    for k in want:
        np.testing.assert_array_equal(got[k].values, want[k].values)
        assert list(got[k].coords["model_i"].values) == names
    # a barrier is >= 0 and the diagonal (a model with itself) is zero
    assert np.all(np.diag(got["before"].values) == 0) and np.nanmin(got["before"].values) >= 0
    sub = atlas.connect(align=False, points=5, indices=[2, 0])
    assert set(sub) == {"before"}
    np.testing.assert_array_equal(sub["before"].values,
                                  got["before"].values[np.ix_([2, 0], [2, 0])])


def test_align_is_weight_matching_and_keeps_the_functions(case):
    name, pop, xy, atlas, models, names = case
    res = atlas.align(reference=0)
    spec = permutation_spec(models[0], data=xy)
    assert res.indices == list(range(len(pop))) and res.models[0] is not None
    for i in range(1, len(pop)):
        ref_model, perms = weight_matching(models[0], models[i], spec, return_perms=True)
        for g in perms:
            assert torch.equal(res.perms[i][g], perms[g])
        for (k, a), b in zip(res.models[i].state_dict().items(),
                             ref_model.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
        # an aligned copy computes the same function as the model it came from
        with torch.no_grad():
            torch.testing.assert_close(res.models[i].eval()(xy[0]), models[i].eval()(xy[0]),
                                       rtol=1e-4, atol=1e-5)
    assert all(torch.equal(p, torch.arange(len(p))) for p in res.perms[0].values())
    assert res.points.shape == (len(pop), pop.space.dim)


def test_connect_curves_are_train_curve_on_the_aligned_pair(case):
    name, pop, xy, atlas, models, names = case
    if name != "mlp":
        pytest.skip("one family is enough for the curve (train_curve has its own tests)")
    got = atlas.connect(curves=[(0, 1)], points=5, steps=10)
    aligned = atlas.align(0).models
    want = train_curve(aligned[0], aligned[1], xy, points=5, steps=10, device="cpu")
    assert set(got["curves"]) == {(0, 1)}
    torch.testing.assert_close(got["curves"][(0, 1)].bends, want.bends, rtol=0, atol=0)
    assert got["curves"][(0, 1)].barrier == want.barrier
    with pytest.raises(ValueError, match="not among indices"):
        atlas.connect(curves=[(0, 2)], indices=[0, 1], points=5, steps=1)


def test_terrain_is_curvature_terrain(case):
    name, pop, xy, atlas, models, names = case
    kw = {"measures": ("eigenvalues", "trace"), "k": 2, "num_probes": 4}
    got = atlas.terrain(**kw)
    want = terrain(models, models[0], xy, bn=pop.bn, device="cpu", labels=names, **kw)
    for v in want.data_vars:
        np.testing.assert_array_equal(got[v].values, want[v].values)
    assert list(got["model"].values) == names
    # its loss is the atlas's own evaluation of the models (one BatchNorm policy)
    np.testing.assert_allclose(got["loss"].values, atlas.true_values()["loss"].double().numpy(),
                               rtol=1e-5)


def test_indices_outside_the_population_are_refused(case):
    name, pop, xy, atlas, models, names = case
    with pytest.raises(ValueError, match=r"indices must name models 0\.\.2"):
        atlas.connect(indices=[0, 7], points=5)
    with pytest.raises(ValueError, match=r"got \[-1\]"):
        atlas.align(reference=-1)


def test_compile_reaches_the_evaluator(case, tmp_path):
    """Atlas(compile=True) evaluates through torch.compile, with the same losses."""
    name, pop, xy, atlas, _, _ = case
    if name != "mlp":
        pytest.skip("one family is enough: the flag is passed the same way for every model")
    compiled = Atlas(pop, xy, tmp_path / "run", device="cpu", compile=True)
    assert compiled.evaluator.compile is True and atlas.evaluator.compile is False
    pts = pop.as_points()[:2].float()
    torch.testing.assert_close(compiled.evaluator.evaluate(pts)["loss"],
                               atlas.evaluator.evaluate(pts)["loss"], rtol=1e-5, atol=1e-6)
    assert compiled.evaluator._compiled is not None  # the compiled function did the work
