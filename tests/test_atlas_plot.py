"""atlas_plot: the landscape's legend stays off the map (it never covers a model)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from lossatlas.atlas_plot import plot_landscape


def test_legend_below_the_map_covers_no_model():
    rng = np.random.default_rng(0)
    coords = rng.uniform(-1, 1, (200, 2))
    labels = [{"variant": v, "seed": 0, "epoch": e} for v in "ABCDE" for e in range(3)]
    codes = rng.uniform(0.6, 1.0, (len(labels), 2))  # crowded in the upper right corner
    atlas = SimpleNamespace(
        field_=SimpleNamespace(coords=coords, n=len(coords),
                               values={"log10_loss": (coords ** 2).sum(1)}),
        codes_=torch.tensor(codes),
        population=SimpleNamespace(labels=labels, trajectories=lambda: {}))
    ax = plot_landscape(atlas)
    fig = ax.figure
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert len(ax.get_legend().get_texts()) == 5
    assert legend.y1 <= ax.get_window_extent().y0  # entirely below the axes
    px = ax.transData.transform(codes)
    inside = ((px[:, 0] >= legend.x0) & (px[:, 0] <= legend.x1)
              & (px[:, 1] >= legend.y0) & (px[:, 1] <= legend.y1))
    assert not inside.any()
    import matplotlib.pyplot as plt

    plt.close(fig)
