"""SIGKILL `lossatlas atlas` at random moments, re-run it, and get the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lossatlas.checkpoints import save_state_dict
from lossatlas.models import create
from lossatlas.store import Run

ARGS = ["--model", "mlp", "--model-arg", "hidden=[16]", "--data", "blobs", "--data-arg",
        "num_features=40", "--data-arg", "num_classes=10", "--method", "pca",
        "--resolution", "12", "--budget", "500", "--json"]


@pytest.fixture()
def population(tmp_path):
    d = tmp_path / "pop"
    d.mkdir()
    for variant in "AB":
        torch.manual_seed(ord(variant))
        m = create("mlp", in_features=40, hidden=(16,), num_classes=10)
        for epoch in range(3):
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.3 * torch.randn_like(p))
            save_state_dict(m.state_dict(), d / f"{variant}_seed0_epoch{epoch}.pt")
    return d


def _cmd(pop, out, extra=()):
    return [sys.executable, "-m", "lossatlas.cli", "atlas", "--population", str(pop), *ARGS,
            *extra, "--out", str(out)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _first_write(proc: subprocess.Popen, out) -> float:
    """Seconds from now until ``proc`` writes its first file into ``out`` (its imports and
    data loading done), polled every 20 ms; ``inf`` if it ends first."""
    t0 = time.perf_counter()
    while proc.poll() is None:
        if out.is_dir() and any(out.iterdir()):
            return time.perf_counter() - t0
        time.sleep(0.02)
    return float("inf")


@pytest.mark.parametrize("extra", [(), ("--memory-budget", "64kB")], ids=["memory", "budget"])
def test_killed_atlas_resumes_to_the_same_result(population, tmp_path, extra):
    """Killed twice (the second time while resuming), then resumed to the end: the same
    field, edges and basins as an uninterrupted run. The kills land at random moments
    after the start-up (imports take most of a short run's wall time); with a budget
    they can also land while checkpoints are streamed into the population file or the
    span basis is written to disk."""
    ref_out = tmp_path / "ref"
    proc = subprocess.Popen(_cmd(population, ref_out, extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=_env())
    startup = _first_write(proc, ref_out)
    t0 = time.perf_counter()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    work = time.perf_counter() - t0  # after the first write
    expected = Run(ref_out).open_field("atlas")
    out = tmp_path / "killed"
    for frac in np.random.default_rng(0).uniform(0.05, 0.9, size=2):
        proc = subprocess.Popen(_cmd(population, out, extra), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=_env())
        time.sleep(startup + frac * work)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "run.json").exists():
            json.loads((out / "run.json").read_text())  # never left corrupt
    done = subprocess.run(_cmd(population, out, extra), capture_output=True, text=True,
                          env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = Run(out).open_field("atlas")
    for var in ("loss", "accuracy", "log10_loss"):
        np.testing.assert_array_equal(got[var].values, expected[var].values)
    np.testing.assert_array_equal(got["edges"].values, expected["edges"].values)
    a = json.loads((out / "topology.json").read_text())
    b = json.loads((ref_out / "topology.json").read_text())
    assert a["model_basin"] == b["model_basin"]
