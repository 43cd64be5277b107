"""Figures draw without error, carry axis labels, and never open a window."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from lossatlas.topology import (  # noqa: E402
    graph_merge_tree,
    merge_tree,
    persistence,
    plot_merge_tree,
    plot_persistence_diagram,
)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _field() -> np.ndarray:
    f = gaussian_filter(np.random.default_rng(0).random((48, 48)), 3.0)
    f[0, :4] = np.inf
    return f


@pytest.mark.parametrize("labels", [None, "seq", "map"])
def test_plot_merge_tree(labels, tmp_path):
    tree = merge_tree(_field(), threshold="auto")
    leaf_labels = {
        None: None,
        "seq": [f"variant {i}" for i in range(tree.n_leaves)],
        "map": {0: "deepest"},
    }[labels]
    ax = plot_merge_tree(tree, leaf_labels=leaf_labels)
    assert ax.get_ylabel() == "loss" and ax.get_xlabel() and ax.get_title()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == {None: [], "seq": leaf_labels, "map": ["deepest"]}[labels]
    ax.figure.savefig(tmp_path / "tree.png")


def test_plot_merge_tree_into_given_axes_with_inf_saddles():
    tree = graph_merge_tree(np.array([0.0, np.inf, 1.0, 2.0]), np.array([[0, 1], [1, 2], [2, 3]]))
    fig, ax = plt.subplots()
    assert plot_merge_tree(tree, ax=ax) is ax
    single = merge_tree(np.arange(5.0))
    plot_merge_tree(single, ax=ax)


def test_plot_persistence_diagram(tmp_path):
    pairs = persistence(_field())
    ax = plot_persistence_diagram(pairs)
    assert "birth" in ax.get_xlabel() and "death" in ax.get_ylabel()
    assert any("inf" in t.get_text() for t in ax.get_legend().get_texts())
    ax.figure.savefig(tmp_path / "diagram.png")
    plot_persistence_diagram(np.array([[np.inf, np.inf]]))  # all diverged: still draws
