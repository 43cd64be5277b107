"""Persistence pairs against gudhi (cubical complex and simplex tree) and on graphs."""

import zlib

import gudhi
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from lossatlas.topology import graph_persistence, persistence


def _sorted(pairs: np.ndarray) -> np.ndarray:
    pairs = np.asarray(pairs, dtype=float).reshape(-1, 2)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _gudhi_cubical(values: np.ndarray) -> np.ndarray:
    cc = gudhi.CubicalComplex(vertices=values)
    cc.persistence()
    g = cc.persistence_intervals_in_dimension(0)
    keep = (g[:, 1] > g[:, 0]) | np.isinf(g[:, 1])  # zero persistence dropped, essential kept
    return g[keep]


def _gudhi_graph(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    st = gudhi.SimplexTree()
    for i, v in enumerate(values):
        st.insert([i], filtration=v)
    for a, b in edges:
        if a != b:
            st.insert([int(a), int(b)], filtration=max(values[a], values[b]))
    st.persistence(persistence_dim_max=True)
    g = st.persistence_intervals_in_dimension(0)
    return g[(g[:, 1] > g[:, 0]) | np.isinf(g[:, 1])]


def _assert_same(ours: np.ndarray, oracle: np.ndarray) -> None:
    a, b = _sorted(ours), _sorted(oracle)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def _field(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    if kind == "continuous":
        return rng.random(shape)
    if kind == "levels":  # plateaus: values rounded to few levels
        return np.round(rng.random(shape) * 4) / 4
    if kind == "ints":
        return rng.integers(0, 4, size=shape).astype(float)
    x = rng.random(shape)  # diverged points
    x[rng.random(shape) < 0.2] = np.inf
    return x


@pytest.mark.parametrize("shape", [(50,), (17, 23), (7, 8, 9)])
@pytest.mark.parametrize("kind", ["continuous", "levels", "ints", "with_inf"])
def test_matches_gudhi_cubical(shape, kind):
    rng = np.random.default_rng(zlib.crc32(repr((shape, kind)).encode()))
    for _ in range(5):
        x = _field(rng, shape, kind)
        _assert_same(persistence(x), _gudhi_cubical(x))


@pytest.mark.parametrize("kind", ["continuous", "ints", "with_inf"])
def test_matches_gudhi_cubical_4d(kind):
    x = _field(np.random.default_rng(4), (4, 5, 3, 6), kind)
    _assert_same(persistence(x), _gudhi_cubical(x))


def test_smooth_field_matches_gudhi():
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(np.random.default_rng(1).random((80, 90)), 3)
    _assert_same(persistence(x), _gudhi_cubical(x))


def test_output_layout():
    p = persistence(np.array([3.0, 1.0, 2.0, 0.0, 4.0]))
    assert p.dtype == np.float64 and p.shape == (2, 2)
    np.testing.assert_array_equal(p, [[1.0, 2.0], [0.0, np.inf]])  # by death, essential last


def test_nan_counts_as_inf():
    x = np.random.default_rng(2).random((12, 12))
    x[3, :] = np.inf
    y = x.copy()
    y[3, ::2] = np.nan
    np.testing.assert_array_equal(persistence(x), persistence(y))


def test_all_inf_keeps_one_essential_pair():
    np.testing.assert_array_equal(persistence(np.full((3, 4), np.inf)), [[np.inf, np.inf]])


def test_integer_and_float32_input():
    x = np.random.default_rng(3).integers(0, 9, size=(10, 11))
    _assert_same(persistence(x), _gudhi_cubical(x.astype(float)))
    _assert_same(persistence(x.astype(np.float32)), _gudhi_cubical(x.astype(float)))


def _grid_edges(shape: tuple[int, ...]) -> np.ndarray:
    ids = np.arange(np.prod(shape)).reshape(shape)
    parts = []
    for axis in range(len(shape)):
        lo = np.take(ids, np.arange(shape[axis] - 1), axis=axis).reshape(-1)
        hi = np.take(ids, np.arange(1, shape[axis]), axis=axis).reshape(-1)
        parts.append(np.stack([lo, hi], axis=1))
    return np.concatenate(parts)


@pytest.mark.parametrize("shape", [(40,), (13, 17), (5, 6, 7)])
def test_graph_on_grid_graph_equals_grid(shape):
    x = _field(np.random.default_rng(5), shape, "ints")
    edges = _grid_edges(shape)
    rng = np.random.default_rng(6)
    edges = edges[rng.permutation(edges.shape[0])][:, ::-1]  # order and direction don't matter
    _assert_same(graph_persistence(x.reshape(-1), edges), persistence(x))


@pytest.mark.parametrize("kind", ["continuous", "ints", "with_inf"])
def test_graph_matches_gudhi_simplex_tree(kind):
    rng = np.random.default_rng(7)
    for _ in range(10):
        n = 60
        values = _field(rng, (n,), kind)
        edges = rng.integers(0, n, size=(90, 2))  # self-loops, duplicates, several components
        _assert_same(graph_persistence(values, edges), _gudhi_graph(values, edges))


def test_disconnected_graph_has_one_essential_per_component():
    rng = np.random.default_rng(8)
    n = 50
    values = rng.random(n)
    edges = rng.integers(0, n, size=(30, 2))
    adj = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    n_comp, comp = connected_components(adj, directed=False)
    pairs = graph_persistence(values, edges)
    essential = pairs[np.isinf(pairs[:, 1])]
    assert essential.shape[0] == n_comp
    mins = np.sort([values[comp == c].min() for c in range(n_comp)])
    np.testing.assert_array_equal(np.sort(essential[:, 0]), mins)


def test_graph_without_edges():
    pairs = graph_persistence(np.array([2.0, 1.0, 3.0]), np.zeros((0, 2), int))
    np.testing.assert_array_equal(_sorted(pairs), [[1, np.inf], [2, np.inf], [3, np.inf]])


@pytest.mark.parametrize(
    "values, message",
    [
        (np.zeros((2, 2, 2, 2, 2)), r"persistence: values must be a 1-D to 4-D array, got shape \(2, 2, 2, 2, 2\)"),
        (np.float64(1.0), r"persistence: values must be a 1-D to 4-D array, got shape \(\)"),
        (np.zeros((0, 3)), r"persistence: values must not be empty, got shape \(0, 3\)"),
        (np.array(["a", "b"]), r"persistence: values must be a real numeric array, got dtype <U1"),
        (np.ones(3) * 1j, r"persistence: values must be a real numeric array, got dtype complex128"),
    ],
)
def test_grid_errors(values, message):
    with pytest.raises(ValueError, match=message):
        persistence(values)


@pytest.mark.parametrize(
    "values, edges, message",
    [
        (np.zeros((3, 3)), np.zeros((0, 2), int), r"graph_persistence: values must be a 1-D array, got shape \(3, 3\)"),
        (np.zeros(5), np.array([[0, 1], [2, 7]]), r"graph_persistence: edges refer to vertex 7, out of range for 5 vertices"),
        (np.zeros(5), np.array([[0, -1]]), r"graph_persistence: edges refer to vertex -1"),
        (np.zeros(5), np.array([[0, 1, 2]]), r"graph_persistence: edges must have shape \[m, 2\], got shape \(1, 3\)"),
        (np.zeros(5), np.array([[0.0, 1.0]]), r"graph_persistence: edges must be an integer array, got dtype float64"),
    ],
)
def test_graph_errors(values, edges, message):
    with pytest.raises(ValueError, match=message):
        graph_persistence(values, edges)


def test_graph_with_hubs_matches_gudhi_simplex_tree():
    rng = np.random.default_rng(9)
    n = 200
    values = rng.integers(0, 20, size=n).astype(float)
    hubs = np.stack([np.zeros(120, int), rng.integers(1, n, size=120)], axis=1)  # degree > 16
    edges = np.concatenate([hubs, rng.integers(0, n, size=(150, 2))])
    _assert_same(graph_persistence(values, edges), _gudhi_graph(values, edges))
    values[0] = 25.0  # the hub is a high saddle joining many components at once
    _assert_same(graph_persistence(values, edges), _gudhi_graph(values, edges))
