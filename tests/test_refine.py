import numpy as np
import pytest

from lossatlas.refine import Refinement, delaunay_edges, refine_field
from lossatlas.topology import graph_merge_tree, merge_tree

CENTRES = np.array([[0.31, 0.27], [-0.52, 0.13], [0.18, -0.61]])


def narrow_wells(z):
    """Loss with three narrow wells (width 0.02 on a [-1, 1]^2 box), minimum 1e-3."""
    r2 = ((z[:, None, :] - CENTRES[None]) ** 2).sum(-1)
    return {"loss": 1e-3 + 3.0 * np.prod(1.0 - np.exp(-r2 / 4e-4), axis=1)}


def test_uniform_grid_misses_narrow_wells_refinement_finds_them():
    res = 32
    axes = np.linspace(-1, 1, res)
    zz = np.stack(np.meshgrid(axes, axes, indexing="ij"), -1).reshape(-1, 2)
    grid = np.log10(narrow_wells(zz)["loss"]).reshape(res, res)
    coarse = merge_tree(grid, threshold=0.5)
    assert len(coarse.minima) < 3  # the grid alone does not see the wells
    field = refine_field(narrow_wells, [-1, -1], [1, 1], resolution=res, tol=0.2, budget=8000,
                         focus_points=CENTRES)
    tree = graph_merge_tree(field.values["log10_loss"], field.edges, threshold=0.5)
    assert len(tree.minima) == 3
    found = field.coords[np.asarray(tree.minima).reshape(-1)]
    for c in CENTRES:  # each well's minimum located within the finest cell size
        assert np.min(np.linalg.norm(found - c, axis=1)) < 2 / (res - 1) / 2**4
    # the field interpolated near each centre is within 0.05 decades of the truth
    probe = CENTRES + 0.003
    truth = np.log10(narrow_wells(probe)["loss"])
    assert np.median(np.abs(field.interpolate(probe) - truth)) < 0.05


def test_refinement_keeps_samples_and_minima():
    small = refine_field(narrow_wells, [-1, -1], [1, 1], resolution=16, tol=0.2, budget=600,
                         focus_points=CENTRES)
    big = refine_field(narrow_wells, [-1, -1], [1, 1], resolution=16, tol=0.2, budget=3000,
                       focus_points=CENTRES)
    assert big.n > small.n
    # samples already taken keep their coordinates and values (a prefix of the bigger run)
    np.testing.assert_array_equal(big.coords[: small.n], small.coords)
    np.testing.assert_array_equal(big.values["loss"][: small.n], small.values["loss"])
    # every minimum present before refinement still has a minimum at least as low nearby
    t_small = graph_merge_tree(small.values["log10_loss"], small.edges, threshold=0.5)
    t_big = graph_merge_tree(big.values["log10_loss"], big.edges, threshold=0.5)
    mins_big = np.asarray(t_big.minima).reshape(-1)
    for m in np.asarray(t_small.minima).reshape(-1):
        near = np.linalg.norm(big.coords[mins_big] - small.coords[m], axis=1) < 2 / 15
        assert near.any()
        assert big.values["log10_loss"][mins_big[near]].min() <= small.values["log10_loss"][m]
    assert len(mins_big) >= len(np.asarray(t_small.minima).reshape(-1))


def test_extra_points_are_samples_and_budget_respected():
    field = refine_field(narrow_wells, [-1, -1], [1, 1], resolution=8, tol=0.1, budget=300,
                         extra_points=CENTRES)
    assert field.n <= 300
    np.testing.assert_array_equal(field.coords[64:67], CENTRES)
    assert (field.level[64:67] == -1).all()
    np.testing.assert_allclose(field.values["loss"][64:67], 1e-3, rtol=1e-6)


def test_graph_of_a_grid_matches_grid_topology():
    # with no refinement (tol huge), the Delaunay graph of a grid keeps the grid's minima
    field = refine_field(narrow_wells, [-1, -1], [1, 1], resolution=12, tol=1e9, budget=10**4)
    assert field.rounds == 0 and field.n == 144
    grid = field.values["log10_loss"].reshape(12, 12)
    assert len(graph_merge_tree(field.values["log10_loss"], field.edges, 0.1).minima) == len(
        merge_tree(grid, 0.1).minima)


def test_delaunay_edges_3d_and_errors():
    pts = np.random.default_rng(0).random((50, 3))
    e = delaunay_edges(pts)
    assert e.shape[1] == 2 and (e[:, 0] < e[:, 1]).all()
    with pytest.raises(ValueError, match="over the budget"):
        refine_field(narrow_wells, [-1, -1], [1, 1], resolution=64, budget=100)
    with pytest.raises(ValueError, match="hi > lo"):
        refine_field(narrow_wells, [1, -1], [1, 1])


def test_refinement_ask_tell_is_refine_field_one_round_at_a_time():
    ref = Refinement([-1, -1], [1, 1], resolution=8, tol=0.1, budget=400, extra_points=CENTRES,
                     round_size=40)
    first = ref.pending()
    assert first.shape == (64 + 3, 2)  # the base grid, then the extra points
    np.testing.assert_array_equal(first[:8, 1], np.linspace(-1, 1, 8))
    with pytest.raises(RuntimeError, match="pending"):
        ref.result()
    sizes = []
    while not ref.done:
        z = ref.pending()
        sizes.append(len(z))
        ref.tell(narrow_wells(z))
    assert all(0 < s <= 40 for s in sizes[1:]) and ref.rounds == len(sizes) - 1
    assert len(ref.pending()) == 0
    got = ref.result()
    calls = []
    want = refine_field(narrow_wells, [-1, -1], [1, 1], resolution=8, tol=0.1, budget=400,
                        extra_points=CENTRES, round_size=40,
                        on_round=lambda r, n: calls.append((r, n)))
    np.testing.assert_array_equal(got.coords, want.coords)
    np.testing.assert_array_equal(got.values["log10_loss"], want.values["log10_loss"])
    assert calls == [(r + 1, sum(sizes[:r + 2])) for r in range(ref.rounds)]
    with pytest.raises(KeyError, match="'loss'"):
        Refinement([-1], [1], resolution=4, budget=10).tell({"acc": np.zeros(4)})


def test_plan_counts_points_and_rounds_before_any_evaluation():
    # 8x8 base grid + 3 distinct extra points (one given twice), 300-sample budget
    extra = np.concatenate([CENTRES, CENTRES[:1]])
    plan = Refinement([-1, -1], [1, 1], resolution=8, tol=0.1, budget=300, extra_points=extra,
                      round_size=100, max_level=2).plan()
    assert (plan.base, plan.extra, plan.first, plan.max_points) == (64, 3, 67, 300)
    assert plan.rounds == 3  # ceil(233 / 100) rounds of at most 100
    assert "then up to 233 in refinement rounds of at most 100 (3 or more to spend" in \
        plan.describe()
    assert "8x8 = 64 points + 3 model codes" in plan.describe()
    field = refine_field(narrow_wells, [-1, -1], [1, 1], resolution=8, tol=0.1, budget=300,
                         extra_points=extra, round_size=100, max_level=2)
    assert field.n <= plan.max_points
    # nothing to refine: the first round is all
    for kwargs in ({"tol": np.inf}, {"max_level": 0}, {"budget": 64 + 3 + 4}):
        plan = Refinement([-1, -1], [1, 1], **{"resolution": 8, "budget": 300,
                                               "extra_points": CENTRES, **kwargs}).plan()
        assert (plan.max_points, plan.rounds) == (67, 0), kwargs
        assert plan.describe().endswith("at most 67 points, no refinement")
