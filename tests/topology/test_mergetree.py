"""Merge trees: known answers on Gaussian wells, consistency with persistence, labels."""

import itertools
import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, label
from scipy.sparse.csgraph import minimum_spanning_tree

from lossatlas.topology import (
    auto_threshold,
    basins_of,
    graph_merge_tree,
    merge_tree,
    persistence,
    threshold_from_fraction,
)


def _wells(n: int, centres, depths, widths) -> np.ndarray:
    """Sum of negative Gaussians on an n x n grid over [0, 1]^2 (axis 0 is x)."""
    t = np.linspace(0.0, 1.0, n)
    x, y = np.meshgrid(t, t, indexing="ij")
    f = np.zeros((n, n))
    for (cx, cy), a, s in zip(centres, depths, widths, strict=True):
        f -= a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s**2))
    return f


def _cell(n: int, point) -> tuple[int, int]:
    return tuple(int(round(c * (n - 1))) for c in point)


def _saddles_by_level_sets(f: np.ndarray, centres) -> np.ndarray:
    """Independent oracle: the k-1 merge levels of the wells, from connected components of
    sublevel sets (scipy.ndimage.label) and bisection on the level, then the minimax tree."""
    n, k = f.shape[0], len(centres)
    cells = [_cell(n, c) for c in centres]
    level = np.zeros((k, k))
    for i, j in itertools.combinations(range(k), 2):
        lo, hi = max(f[cells[i]], f[cells[j]]), float(f.max())
        for _ in range(45):
            mid = 0.5 * (lo + hi)
            lab, _ = label(f <= mid)
            lo, hi = (lo, mid) if lab[cells[i]] == lab[cells[j]] else (mid, hi)
        level[i, j] = hi + 10.0  # shifted positive: the MST ignores zero entries
    mst = minimum_spanning_tree(level).toarray()
    return np.sort(mst[mst > 0] - 10.0)


WELLS = {
    3: ([(0.25, 0.3), (0.72, 0.25), (0.5, 0.75)], [1.6, 2.0, 1.8], [0.09, 0.1, 0.08]),
    5: (
        [(0.2, 0.2), (0.8, 0.22), (0.5, 0.5), (0.22, 0.8), (0.78, 0.8)],
        [1.5, 1.9, 2.0, 1.7, 1.6],
        [0.08, 0.07, 0.09, 0.08, 0.075],
    ),
}
NOISE = 1e-3


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("threshold", ["auto", 0.1])
def test_gaussian_wells(k, threshold):
    centres, depths, widths = WELLS[k]
    n = 128
    f = _wells(n, centres, depths, widths)
    f += NOISE * np.random.default_rng(k).random(f.shape)
    assert merge_tree(f).n_leaves > 3 * k  # the noise makes many shallow minima
    tree = merge_tree(f, threshold=threshold)
    assert tree.n_leaves == k
    assert tree.saddle_values.shape == (k - 1,)
    # saddles against the noise-free field on a 4x finer grid; tolerance: the noise plus the
    # grid error of a saddle, curvature * (h / 2)^2 / 2 with curvature <= depth / width^2
    oracle = _saddles_by_level_sets(_wells(4 * n, centres, depths, widths), centres)
    h = 1.0 / (n - 1)
    tol = 2 * NOISE + h**2 / 8 * max(depths) / min(widths) ** 2
    np.testing.assert_allclose(np.sort(tree.saddle_values), oracle, rtol=0, atol=tol)
    # every well centre is its own basin, and every minimum sits at a centre
    at_centres = basins_of(tree, np.array([_cell(n, c) for c in centres]))
    assert sorted(at_centres.tolist()) == list(range(k))
    assert np.unique(tree.labels).size == k
    for leaf, c in zip(at_centres, centres, strict=True):
        assert np.abs(tree.minima[leaf] - _cell(n, c)).max() <= 1
    # cells near a centre drain to that centre's well
    t = np.linspace(0.0, 1.0, n)
    x, y = np.meshgrid(t, t, indexing="ij")
    for leaf, c, s in zip(at_centres, centres, widths, strict=True):
        near = (x - c[0]) ** 2 + (y - c[1]) ** 2 < s**2
        assert (tree.labels[near] == leaf).all()


def test_two_wells_closed_form_saddle():
    # equal wells at (+-d/2, 0), d > 2 sigma: the only saddle is the midpoint,
    # at -2 a exp(-d^2 / (8 sigma^2)); the midpoint is a grid point
    n, a, sigma, d = 129, 1.0, 0.1, 0.5
    t = np.linspace(-1.0, 1.0, n)
    x, y = np.meshgrid(t, t, indexing="ij")
    f = -a * (
        np.exp(-((x - d / 2) ** 2 + y**2) / (2 * sigma**2))
        + np.exp(-((x + d / 2) ** 2 + y**2) / (2 * sigma**2))
    )
    tree = merge_tree(f)
    assert tree.n_leaves == 2
    np.testing.assert_allclose(tree.saddle_values, [-2 * a * np.exp(-(d**2) / (8 * sigma**2))],
                               rtol=1e-12)
    assert tree.saddles[0].index == (n // 2, n // 2)
    assert np.unique(tree.labels[: n // 2]).size == 1 and np.unique(tree.labels[n // 2 + 1:]).size == 1


def test_monotone_field_has_one_leaf():
    x, y, z = np.meshgrid(np.arange(6), np.arange(7), np.arange(5), indexing="ij")
    tree = merge_tree(x + 2.0 * y + 0.5 * z, threshold="auto")
    assert tree.n_leaves == 1 and tree.saddle_values.size == 0
    assert tree.minima.tolist() == [[0, 0, 0]]
    assert (tree.labels == 0).all() and tree.parent.tolist() == [-1]
    assert np.isinf(tree.persistence[0])


@pytest.mark.parametrize("shape", [(300,), (40, 50), (12, 13, 14), (5, 6, 5, 6)])
def test_consistent_with_persistence(shape):
    rng = np.random.default_rng(len(shape))
    f = gaussian_filter(rng.random(shape), 1.0)
    pairs = persistence(f)
    tree = merge_tree(f, threshold=0.0)
    assert tree.n_leaves == pairs.shape[0]
    finite = pairs[np.isfinite(pairs[:, 1])]
    np.testing.assert_array_equal(np.sort(tree.saddle_values), np.sort(finite[:, 1]))
    np.testing.assert_allclose(np.sort(tree.persistence), np.sort(pairs[:, 1] - pairs[:, 0]))
    np.testing.assert_array_equal(np.sort(tree.minimum_values), np.sort(pairs[:, 0]))
    # simplification keeps exactly the minima deeper than the threshold
    pers = np.sort(finite[:, 1] - finite[:, 0])
    thr = float(pers[len(pers) // 2])
    simple = merge_tree(f, threshold=thr)
    assert simple.n_leaves == 1 + int((pers > thr).sum())
    assert (simple.persistence > thr).all()


def _check_tree(tree):
    k, s = tree.n_leaves, tree.saddle_values.size
    assert tree.parent.shape == (k + s,)
    assert (np.diff(tree.saddle_values) >= 0).all()
    assert (np.diff(tree.minimum_values) >= 0).all()  # leaf 0 is the deepest
    for node, p in enumerate(tree.parent):  # a parent is a later saddle, at least as high
        if p >= 0:
            assert p >= k and p > node and tree.node_values[p] >= tree.node_values[node]
    for sd in tree.saddles:  # the younger leaf dies at its saddle: persistence matches
        assert tree.persistence[sd.younger] == pytest.approx(sd.value - tree.minimum_values[sd.younger])
        assert tree.minimum_values[sd.elder] <= tree.minimum_values[sd.younger]
    assert (tree.labels[tuple(tree.minima.T)] == np.arange(k)).all()
    assert tree.basin_sizes.sum() == tree.labels.size and (tree.basin_sizes > 0).all()


@pytest.mark.parametrize("kind", ["smooth", "levels", "with_inf"])
def test_basins_are_connected_and_tree_valid(kind):
    rng = np.random.default_rng(11)
    for _ in range(8):
        if kind == "levels":
            f = rng.integers(0, 4, size=(30, 30)).astype(float)
        else:
            f = gaussian_filter(rng.random((40, 40)), 1.5)
        if kind == "with_inf":
            f[rng.random(f.shape) < 0.1] = np.nan
        for thr in [0.0, "auto", 0.02]:
            tree = merge_tree(f, threshold=thr)
            _check_tree(tree)
            for leaf in range(tree.n_leaves):
                assert label(tree.labels == leaf)[1] == 1


def test_plateaus_are_deterministic():
    f = np.zeros((5, 6))
    tree = merge_tree(f)
    assert tree.minima.tolist() == [[0, 0]] and (tree.labels == 0).all()
    g = np.random.default_rng(3).integers(0, 3, size=(20, 20)).astype(float)
    a, b = merge_tree(g, threshold=0.5), merge_tree(g.copy(), threshold=0.5)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.minima_flat, b.minima_flat)
    # on a plateau minimum the leaf sits at the lowest flat index
    for m in a.minima_flat:
        lab, _ = label(g == g.flat[m])
        region = np.flatnonzero(lab == lab.flat[m])
        assert m == region.min()


def test_inf_wall_separates_basins():
    f = np.array([0.0, 1.0, np.inf, 0.5, 2.0, np.nan, 3.0])
    tree = merge_tree(f, threshold=10.0)
    assert tree.minima.tolist() == [[0], [3], [6]]
    assert np.isinf(tree.persistence).all() and np.isinf(tree.saddle_values).all()
    assert tree.labels.tolist() == [0, 0, 1, 1, 1, 1, 2]  # inf cells drain to their lowest side
    d = tree.to_dict(include_labels=True)
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["saddles"][0]["value"] is None


def test_graph_merge_tree_matches_grid():
    f = gaussian_filter(np.random.default_rng(5).random((25, 30)), 1.2)
    ids = np.arange(f.size).reshape(f.shape)
    edges = np.concatenate([
        np.stack([ids[:-1].ravel(), ids[1:].ravel()], 1),
        np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], 1),
    ])
    for thr in [0.0, "auto"]:
        g, t = graph_merge_tree(f.ravel(), edges, threshold=thr), merge_tree(f, threshold=thr)
        assert g.graph and g.labels.shape == (f.size,) and g.minima.shape == (t.n_leaves, 1)
        np.testing.assert_array_equal(g.labels, t.labels.ravel())
        np.testing.assert_array_equal(g.minima_flat, t.minima_flat)
        np.testing.assert_array_equal(g.parent, t.parent)


def test_graph_merge_tree_disconnected():
    values = np.array([1.0, 3.0, 0.0, 5.0, 2.0, 4.0])
    edges = np.array([[0, 1], [1, 2], [3, 4], [4, 5]])
    tree = graph_merge_tree(values, edges)
    assert tree.minima_flat.tolist() == [2, 0, 4]
    assert tree.persistence.tolist() == [np.inf, 2.0, np.inf]
    assert (tree.parent < 0).sum() == 2  # one root per component
    assert np.isinf(tree.persistence).sum() == 2
    assert basins_of(tree, np.array([3, 5])).tolist() == [tree.labels[3], tree.labels[5]]


def test_to_dict_round_trip():
    f = gaussian_filter(np.random.default_rng(6).random((30, 30)), 2.0)
    tree = merge_tree(f, threshold="auto")
    d = json.loads(json.dumps(tree.to_dict(), allow_nan=False))
    assert d["kind"] == "grid" and d["shape"] == [30, 30]
    assert len(d["leaves"]) == tree.n_leaves and len(d["saddles"]) == tree.saddle_values.size
    assert d["parent"] == tree.parent.tolist()
    assert d["leaves"][0]["persistence"] is None
    assert [s["merges"] for s in d["saddles"]] == tree.saddle_pairs.tolist()


def test_auto_threshold_and_fraction():
    pairs = np.array([[0.0, 0.01], [0.1, 0.12], [0.0, 1.0], [0.3, 1.4], [-1.0, np.inf]])
    assert auto_threshold(pairs) == pytest.approx(0.5 * (0.02 + 1.0))
    assert auto_threshold(np.array([[0.0, np.inf]])) == 0.0
    assert auto_threshold(np.array([[0.0, 2.0]])) == pytest.approx(1.0)  # keeps the only one
    assert threshold_from_fraction(0.1, 2.0, 4.0) == pytest.approx(0.2)


def test_basins_of():
    f = np.array([[0.0, 1.0, 2.0], [5.0, 6.0, 1.5], [0.5, 3.0, 1.0]])
    tree = merge_tree(f)
    got = basins_of(tree, np.array([[0, 0], [2, 2], [2, 0]]))
    assert got.tolist() == [tree.labels[0, 0], tree.labels[2, 2], tree.labels[2, 0]]
    assert len(set(got.tolist())) == 3


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: merge_tree(np.zeros((1,) * 5)), r"merge_tree: values must be a 1-D to 4-D array, got shape \(1, 1, 1, 1, 1\)"),
        (lambda: merge_tree(np.zeros(4), threshold=-1.0), r"merge_tree: threshold must be >= 0 .*got -1.0"),
        (lambda: merge_tree(np.zeros(4), threshold=float("nan")), r"merge_tree: threshold must be >= 0"),
        (lambda: merge_tree(np.zeros(4), threshold="big"), r"merge_tree: threshold must be a number, None or 'auto', got 'big'"),
        (lambda: graph_merge_tree(np.zeros(3), np.array([[0, 3]])), r"graph_merge_tree: edges refer to vertex 3, out of range for 3 vertices"),
        (lambda: basins_of(merge_tree(np.zeros((3, 4))), np.array([[0, 4]])), r"basins_of: point 0 has index \[0, 4\], outside the field of shape \(3, 4\)"),
        (lambda: basins_of(merge_tree(np.zeros((3, 4))), np.array([1, 2])), r"basins_of: points_index must have shape \[p, 2\]"),
        (lambda: basins_of(merge_tree(np.zeros((3, 4))), np.array([[0.0, 1.0]])), r"basins_of: points_index must be integer"),
        (lambda: auto_threshold(np.zeros(3)), r"auto_threshold: pairs must have shape \[k, 2\], got shape \(3,\)"),
        (lambda: threshold_from_fraction(-0.1, 0, 1), r"threshold_from_fraction: frac must be finite and >= 0, got -0.1"),
        (lambda: threshold_from_fraction(0.1, 2, 1), r"threshold_from_fraction: need finite low <= high, got low=2.0, high=1.0"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_graph_basins_with_hub_are_connected():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(12)
    n = 300
    values = rng.random(n)
    values[0] = 2.0
    edges = np.concatenate([
        np.stack([np.zeros(60, int), rng.integers(1, n, 60)], 1), rng.integers(0, n, (400, 2))
    ])
    for thr in [0.0, "auto", 0.3]:
        tree = graph_merge_tree(values, edges, threshold=thr)
        _check_tree(tree)
        for leaf in range(tree.n_leaves):
            members = np.flatnonzero(tree.labels == leaf)
            keep = np.isin(edges, members).all(axis=1)
            sub = edges[keep]
            remap = np.searchsorted(members, sub)
            m = members.size
            adj = coo_matrix((np.ones(len(remap)), (remap[:, 0], remap[:, 1])), shape=(m, m))
            assert connected_components(adj, directed=False)[0] == 1
