"""Progress bars on every long loop: shown on stderr when forced on, nothing when off or
when stderr is not a terminal (auto); tiny inputs, one test over the functions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossatlas.progress import progress_bar, progress_enabled


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def _data(n: int = 32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def _op():
    from lossatlas.curvature.hvp import MatrixOperator

    g = torch.Generator().manual_seed(0)
    A = torch.randn(12, 12, generator=g, dtype=torch.float64)
    return MatrixOperator(A + A.T)


def _report(tmp_path, progress):
    from lossatlas.report import write_report

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "run.json").write_text("{}")
    return write_report(tmp_path, progress=progress)


def _calls():
    from lossatlas.connectivity import barrier_curve, barrier_matrix, train_curve
    from lossatlas.curvature import terrain
    from lossatlas.curvature.density import spectral_density
    from lossatlas.curvature.lanczos import lanczos, power_iteration
    from lossatlas.curvature.llc import llc
    from lossatlas.curvature.spectrum import group_spectra, hessian_eigen
    from lossatlas.curvature.trace import exact_trace, hutch_plusplus, hutchinson

    m = [_model(s) for s in range(3)]
    xy = _data()
    return {
        "lanczos": ("lanczos", lambda p, _: lanczos(_op(), 2, num_iter=6, progress=p)),
        "power_iteration": ("power iteration",
                            lambda p, _: power_iteration(_op(), 1, max_iter=5, progress=p)),
        "hutchinson": ("Hutchinson", lambda p, _: hutchinson(_op(), 6, progress=p)),
        "hutch_plusplus": ("Hutch++", lambda p, _: hutch_plusplus(_op(), 9, progress=p)),
        "exact_trace": ("trace (exact)",
                        lambda p, _: exact_trace(_op(), probe_batch=4, progress=p)),
        "spectral_density": ("density (SLQ)", lambda p, _: spectral_density(
            _op(), num_iter=4, num_runs=2, progress=p)),
        "hessian_eigen": ("lanczos", lambda p, _: hessian_eigen(m[0], xy, 1, num_iter=4,
                                                                progress=p)),
        "group_spectra": ("group spectra", lambda p, _: group_spectra(
            m[0], xy, k=1, num_probes=3, progress=p)),
        "terrain": ("terrain", lambda p, _: terrain(m[:2], m[0], xy, measures=("eigenvalues",),
                                                    k=1, progress=p)),
        "llc": ("llc", lambda p, _: llc(m[0], xy, num_chains=2, num_draws=3, batch_size=8,
                                        progress=p)),
        "barrier_curve": ("field", lambda p, _: barrier_curve(m[0], m[1], xy, points=3,
                                                              progress=p)),
        "barrier_matrix": ("field", lambda p, _: barrier_matrix(m, xy, points=3, progress=p)),
        "train_curve": ("train bezier curve", lambda p, _: train_curve(
            m[0], m[1], xy, steps=3, batch_size=8, points=3, progress=p)),
        "write_report": ("report", lambda p, tmp: _report(tmp, p)),
    }


CALLS = list(_calls())


@pytest.mark.parametrize("name", CALLS)
def test_bar_when_on_nothing_when_off(name, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("LOSSATLAS_PROGRESS", raising=False)
    torch.set_num_threads(1)
    desc, call = _calls()[name]
    for progress in (False, None):  # None: auto, and pytest's stderr is not a terminal
        call(progress, tmp_path / f"off-{progress}")
        err = capsys.readouterr().err
        assert desc not in err and "%|" not in err, (progress, err)
    call(True, tmp_path / "on")
    err = capsys.readouterr().err
    assert desc in err and "%|" in err and "100%" in err, err


def test_progress_enabled(monkeypatch):
    monkeypatch.delenv("LOSSATLAS_PROGRESS", raising=False)
    assert progress_enabled(True) and not progress_enabled(False)
    assert not progress_enabled(None)  # captured stderr is not a terminal

    class Tty:
        def isatty(self):
            return True

        def write(self, s):
            return len(s)

        def flush(self):
            pass

    monkeypatch.setattr("sys.stderr", Tty())
    assert progress_enabled(None)
    monkeypatch.setenv("LOSSATLAS_PROGRESS", "0")
    assert not progress_enabled(None) and progress_enabled(True)
    monkeypatch.setenv("LOSSATLAS_PROGRESS", "yes")
    with pytest.raises(ValueError, match="LOSSATLAS_PROGRESS must be 0 or 1"):
        progress_enabled(None)


def test_disabled_bar_passes_items_through():
    assert list(progress_bar(range(3), progress=False)) == [0, 1, 2]


def test_auto_is_on_in_a_notebook(monkeypatch):
    """Under Jupyter tqdm.auto is the notebook widget: auto shows it (stderr is no tty)."""
    import tqdm.notebook

    import lossatlas.progress as mod

    monkeypatch.delenv("LOSSATLAS_PROGRESS", raising=False)
    assert not progress_enabled(None)
    monkeypatch.setattr(mod, "tqdm", type("widget", (tqdm.notebook.tqdm_notebook,), {}))
    assert progress_enabled(None)
