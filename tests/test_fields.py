import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from lossatlas import AffineSource, Evaluator, ExplicitSource, Run, compute_field


def _setup(alpha=(-1, 1, 9), beta=(-0.5, 0.5, 6)):
    """A small MLP, its Evaluator and a plane through it (the same in every process)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(80, 6), torch.randint(0, 3, (80,))
    ev = Evaluator(model, (x, y))
    w = ev.space.flatten(model)
    dirs = torch.randn(2, ev.space.dim, generator=torch.Generator().manual_seed(1))
    src = AffineSource(w, dirs, [np.linspace(*alpha), np.linspace(*beta)])
    return model, ev, src


KILL_GRID = {"alpha": (-1, 1, 20), "beta": (-1, 1, 5)}


def test_in_memory_field_is_labelled_and_correct():
    model, ev, src = _setup()
    ds = compute_field(ev, src)
    assert ds["loss"].dims == ("alpha", "beta") and ds["loss"].shape == (9, 6)
    i, j = 4, 2
    p = src.origin + src.coords["alpha"][i] * src.directions[0] + src.coords["beta"][j] * src.directions[1]
    assert np.isclose(ds["loss"].values[i, j], float(ev.evaluate(p)["loss"]), rtol=1e-5)


def test_stored_field_opens_with_xarray(tmp_path):
    _, ev, src = _setup()
    run = Run(tmp_path / "run", config={"what": "test"})
    ds = compute_field(ev, src, run, "plane", chunk_points=12)
    on_disk = xr.open_zarr(run.field_path("plane"), consolidated=False)
    assert set(on_disk.data_vars) >= {"loss", "accuracy"}
    np.testing.assert_array_equal(on_disk["loss"].values, ds["loss"].values)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["config"]["what"] == "test" and "field:plane" in meta["stages"]
    assert "torch" in meta["versions"]


def test_changed_points_refuse_to_resume(tmp_path):
    _, ev, src = _setup()
    run = Run(tmp_path)
    writer = run.begin_field("f", src, ["loss", "accuracy"], 12)
    assert writer.pending()
    other = AffineSource(src.origin, src.directions * 2, list(src.coords.values()))
    with pytest.raises(ValueError, match="different points"):
        compute_field(ev, other, run, "f")


SCRIPT = textwrap.dedent(
    f"""
    import sys, time
    import torch
    torch.set_num_threads(int(sys.argv[2]))  # the test's: the same sums, bit for bit
    sys.path.insert(0, {str(os.path.dirname(os.path.abspath(__file__)))!r})
    from test_fields import KILL_GRID, _setup
    from lossatlas import Run, compute_field
    _, ev, src = _setup(**KILL_GRID)
    real = ev.evaluate
    def slow(p):
        time.sleep(0.3)
        return real(p)
    ev.evaluate = slow
    compute_field(ev, src, Run(sys.argv[1]), "plane", chunk_points=10)
    """
)


def test_killed_field_resumes_only_missing_chunks(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir),
                             str(torch.get_num_threads())])
    progress = run_dir / "fields" / "plane.progress"
    deadline = time.time() + 120
    while time.time() < deadline:
        if progress.exists() and len(list(progress.glob("chunk-*"))) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(progress.glob("chunk-*")))
    assert 3 <= done_before < 10, done_before
    assert not (progress / "complete").exists()

    _, ev, src = _setup(**KILL_GRID)
    resumed = compute_field(ev, src, Run(run_dir), "plane", chunk_points=10)
    assert ev.points_evaluated == 100 - 10 * done_before
    # identical to an uninterrupted run with the same settings
    _, ev_ref, _ = _setup(**KILL_GRID)
    full = compute_field(ev_ref, src, Run(tmp_path / "ref"), "plane", chunk_points=10)
    np.testing.assert_array_equal(resumed["loss"].values, full["loss"].values)
    np.testing.assert_array_equal(resumed["accuracy"].values, full["accuracy"].values)
    assert (progress / "complete").exists()
    # a complete field is reused, not recomputed
    again = compute_field(ev, src, Run(run_dir), "plane", chunk_points=10)
    assert ev.points_evaluated == 100 - 10 * done_before
    np.testing.assert_array_equal(again["loss"].values, full["loss"].values)


def test_explicit_source_and_nonfinite():
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    ev = Evaluator(model, (x, y))
    pts = torch.randn(4, ev.space.dim)
    pts[2] = float("inf")
    ds = compute_field(ev, ExplicitSource(pts, dim="model"))
    assert ds["loss"].dims == ("model",)
    assert ds.attrs["nonfinite"] == 1
