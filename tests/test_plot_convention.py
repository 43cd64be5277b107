"""Every plot_* function of the figure modules draws on ``ax`` (or a new Figure built
directly) and returns the Axes (a list for the multi-panel plot_barriers): no pyplot, no
backend chosen, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np, torch, xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from lossatlas.curvature.density import SpectralDensity
    from lossatlas.curvature.plot import plot_density, plot_llc_trace
    from lossatlas.dynamics.plot import plot_transitions
    from lossatlas.surfaces.plot import plot_contour, plot_curve
    from lossatlas.topology import merge_tree, plot_merge_tree, plot_persistence_diagram
    from lossatlas.plotting import new_axes

    g = np.linspace(-1, 1, 5)
    field = xr.Dataset({"loss": (("u", "v"), np.exp(np.add.outer(g, g)))},
                       coords={"u": g, "v": g})
    curve = xr.Dataset({"loss": ("t", np.exp(g))}, coords={"t": g})
    llc = {"loss_trace": torch.ones(2, 4), "init_loss": 1.0, "llc_mean": 0.0, "llc_std": 0.0}
    dens = SpectralDensity(grid=torch.linspace(-1, 1, 9), density=torch.ones(9),
                           nodes=torch.zeros(1, 2), weights=torch.full((1, 2), 0.5), sigma=0.1)
    tree = merge_tree(np.array([[0.0, 2.0, 1.0], [3.0, 4.0, 0.5]]))
    axes = [plot_contour(field), plot_curve(curve), plot_llc_trace(llc), plot_density(dens),
            plot_transitions(np.arange(5.0), {"acc": np.linspace(0, 1, 5)}),
            plot_merge_tree(tree), plot_persistence_diagram(np.array([[0.0, 1.0]]))]
    assert all(isinstance(a, Axes) and type(a.figure) is Figure for a in axes), axes
    from lossatlas.connectivity.population import plot_barriers
    mats = {k: xr.DataArray(np.array([[0.0, v], [v, 0.0]]), dims=("model_a", "model_b"))
            for k, v in (("before", 2.0), ("after", 0.5))}
    pair = plot_barriers(mats, ["a", "b"])
    assert len(pair) == 2 and pair[0].figure is pair[1].figure
    assert np.array_equal(pair[1].images[0].get_array(), mats["after"].values)
    own = new_axes()
    assert plot_curve(curve, ax=own) is own and plot_density(dens, ax=own) is own
    assert "matplotlib.pyplot" not in sys.modules, "a plot function imported pyplot"
    assert os.listdir(".") == [], os.listdir(".")
    print("ok")
""")


def test_plot_functions_return_axes_without_pyplot(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MPLBACKEND", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
