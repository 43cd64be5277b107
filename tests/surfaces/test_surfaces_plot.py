import matplotlib
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from surf_helpers import data, mlp, train_trajectory

from lossatlas import Evaluator
from lossatlas.scale import log10_loss
from lossatlas.surfaces import (
    interpolation,
    pca_plane,
    plane,
    plot_contour,
    plot_curve,
    plot_surface,
    plot_trajectory,
    random_slice,
    save_figure,
    slice_field,
)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def setup():
    a, b, c = mlp(0), mlp(1), mlp(2)
    x, y = data(n=32)
    ev = Evaluator(a, (x, y), device="cpu")
    return a, b, c, x, y, ev


def _png(path):
    raw = path.read_bytes()
    assert raw.startswith(PNG) and len(raw) > 1000
    assert not list(path.parent.glob(".*.tmp*"))  # no temporary file left


def test_plot_curve(setup, tmp_path):
    a, b, _, _, _, ev = setup
    ds = slice_field(ev, interpolation(a, b, points=7, extrapolate=0.2))
    for var, log in (("loss", False), ("loss", True), ("accuracy", False)):
        ax = plot_curve(ds, var, log=log)
        assert isinstance(ax, Axes)
        assert ax.get_xlabel() == "t (fraction of the path from a to b)"
        assert ax.get_ylabel() == ("loss (nats)" if var == "loss" else "accuracy (fraction)")
        _png(save_figure(ax, tmp_path / f"curve_{var}_{log}.png"))
    with pytest.raises(ValueError, match="1-D"):
        plot_curve(slice_field(ev, random_slice(a, dim=2, resolution=3)))


def test_plot_contour_and_surface(setup, tmp_path):
    a, b, c, _, _, ev = setup
    s = plane(a, b, c, resolution=9)
    ds = slice_field(ev, s)
    ax = plot_contour(ds)  # anchors a, b, c from the stored slice description
    fig = ax.figure
    assert isinstance(ax, Axes) and fig.axes[0] is ax
    assert ax.get_xlabel() == "u (parameter distance (L2))"
    assert ax.get_ylabel() == "v (parameter distance (L2))"
    assert fig.axes[1].get_ylabel() == "log10 loss (nats)"  # colour bar
    assert {t.get_text() for t in ax.texts} == {"a", "b", "c"}
    _png(save_figure(fig, tmp_path / "contour.png"))
    ax = plot_contour(ds, "accuracy", log=False, points={"x": (0.1, 0.2)})
    assert ax.figure.axes[1].get_ylabel() == "accuracy (fraction)"
    _png(save_figure(ax, tmp_path / "contour_acc.png"))
    # on a given Axes: drawn there, nothing else made
    own = Figure().subplots(1, 2)[1]
    assert plot_contour(ds, points=np.array([[0.0, 0.0], [1.0, 0.5]]), ax=own) is own
    _png(save_figure(own, tmp_path / "contour_pts.png"))

    ax = plot_surface(ds)
    assert ax.name == "3d"
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_zlabel() == "log10 loss (nats)"
    # the surface's heights are the field's log10 loss (scale.log10_loss)
    norm = ax.collections[0].norm
    expect = log10_loss(ds["loss"].values)
    assert np.allclose([norm.vmin, norm.vmax], [expect.min(), expect.max()])
    _png(save_figure(ax, tmp_path / "surface.png"))
    own3d = Figure().add_subplot(projection="3d")
    assert plot_surface(ds, ax=own3d) is own3d
    with pytest.raises(ValueError, match="3-D Axes"):
        plot_surface(ds, ax=Figure().add_subplot())

    ds3 = slice_field(ev, random_slice(a, dim=3, resolution=3))
    with pytest.raises(ValueError, match="sel"):
        plot_contour(ds3)
    with pytest.raises(KeyError, match="nope"):
        plot_contour(ds, "nope")


def test_plot_trajectory(setup, tmp_path):
    a, _, _, x, y, ev = setup
    traj = train_trajectory(a, x, y, steps=8)
    s = pca_plane(traj, resolution=9)
    ds = slice_field(ev, s)
    ax = plot_trajectory(s, ds)
    assert isinstance(ax, Axes)
    assert ax.get_xlabel() == "pc1 (parameter distance (L2))"
    assert "explained variance" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "start" in labels and "final" in labels
    assert any("projection error" in t for t in labels)
    _png(save_figure(ax, tmp_path / "sub" / "trajectory.png"))
    # the description stored with the field is enough
    _png(save_figure(plot_trajectory(None, ds), tmp_path / "trajectory2.png"))


def test_backend_untouched():
    assert matplotlib.get_backend().lower() == "agg"
