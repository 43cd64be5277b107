import numpy as np
import pytest
import torch
from conftest import tiny_data, tiny_mlp
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lossatlas.curvature import (
    hessian_density,
    hessian_eigenvalues,
    llc,
    plot_density,
    plot_llc_trace,
    terrain,
)
from lossatlas.plotting import save_figure
from lossatlas.space import ParamSpace


def test_terrain_of_a_population(problem):
    model, x, y, H = problem
    models = [model, tiny_mlp(seed=7)]
    ds = terrain(
        models,
        model,
        (x, y),
        k=2,
        num_probes=30,
        llc_kwargs=dict(num_chains=2, num_draws=20, batch_size=16, epsilon=1e-4),
        labels=["a", "b"],
    )
    assert list(ds.model.values) == ["a", "b"]
    assert ds.eigenvalues.dims == ("model", "rank") and ds.eigenvalues.shape == (2, 2)
    top = torch.linalg.eigvalsh(H).flip(0)[:2]
    torch.testing.assert_close(
        torch.from_numpy(ds.eigenvalues.values[0]), top, rtol=1e-5, atol=1e-9
    )
    other = hessian_eigenvalues(model, (x, y), k=2, params=ParamSpace(model).flatten(models[1]))
    assert abs(float(ds.top_eigenvalue.sel(model="b")) - float(other[0])) < 1e-6 * float(other[0])
    for name in ("trace", "epsilon_sharpness", "adaptive_sharpness", "llc_mean", "llc_std", "loss"):
        assert ds[name].dims == ("model",) and bool(ds[name].notnull().all()), name
    assert bool((ds.epsilon_sharpness > 0).all())
    assert ds.attrs["mode"] == "eval"
    only = terrain(
        torch.stack([ParamSpace(model).flatten(m) for m in models]),
        model,
        (x, y),
        measures=["trace"],
        num_probes=9,
    )
    assert set(only.data_vars) == {"loss", "trace", "trace_std"}


def test_plots_write_pngs(tmp_path):
    model = tiny_mlp()
    x, y = tiny_data()
    res = llc(model, (x, y), num_chains=3, num_draws=20, batch_size=16, epsilon=1e-4)
    ax = plot_llc_trace(res)
    assert isinstance(ax, Axes) and len(ax.lines) == 3 + 2  # chains, mean, L(w*)
    assert np.allclose(ax.lines[0].get_ydata(), res.loss_trace[0].numpy())
    save_figure(ax, tmp_path / "trace.png")
    assert (tmp_path / "trace.png").read_bytes()[:4] == b"\x89PNG"
    density = hessian_density(model, (x, y), num_iter=20, num_runs=2)
    own = Figure().add_subplot()
    assert plot_density(density, ax=own) is own and own.get_yscale() == "log"
    # deprecated: saving by path (second positional argument or path=) still works
    with pytest.warns(DeprecationWarning, match="path= is deprecated"):
        plot_llc_trace(res, tmp_path / "old.png")
    with pytest.warns(DeprecationWarning, match="path= is deprecated"):
        plot_density(density, path=tmp_path / "d.png")
    assert (tmp_path / "old.png").exists() and (tmp_path / "d.png").stat().st_size > 1000


def test_terrain_of_batchnorm_models_uses_each_models_statistics():
    """Under bn="own" each model's top eigenvalue is that of its own statistics (not the
    first model's); under "recompute" that of statistics recomputed at it. Both equal the
    single-model computation."""
    from lossatlas.curvature import hessian_eigen, terrain

    torch.manual_seed(0)
    x, y = torch.randn(60, 4) * 2 + 1, torch.randint(0, 3, (60,))
    models = []
    for s in range(2):
        torch.manual_seed(s)
        m = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6),
                                torch.nn.Tanh(), torch.nn.Linear(6, 3)).train()
        with torch.no_grad():
            m(x * (1 + 2 * s))  # statistics far apart
        models.append(m.eval())
    for bn in ("own", "recompute"):
        ds = terrain(models, models[0], (x, y), measures=["eigenvalues"], k=1, bn=bn)
        want = [float(hessian_eigen(m, (x, y), k=1, bn=bn).eigenvalues[0]) for m in models]
        assert ds.attrs["bn"] == bn
        np.testing.assert_allclose(ds["top_eigenvalue"].values, want, rtol=1e-4)
    own = terrain(models, models[0], (x, y), measures=["eigenvalues"], k=1, bn="own")
    rec = terrain(models, models[0], (x, y), measures=["eigenvalues"], k=1, bn="recompute")
    assert not np.allclose(own["top_eigenvalue"].values, rec["top_eigenvalue"].values,
                           rtol=1e-3)
