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


@pytest.mark.parametrize("extra", [(), ("--memory-budget", "64kB")], ids=["memory", "budget"])
def test_killed_atlas_resumes_to_the_same_result(population, tmp_path, extra):
    """With a budget the kill can also land while checkpoints are streamed into the
    population file or the span basis is written to disk."""
    t0 = time.perf_counter()
    ref = subprocess.run(_cmd(population, tmp_path / "ref", extra), capture_output=True, text=True,
                         env=_env(), timeout=300)
    wall = time.perf_counter() - t0
    assert ref.returncode == 0, ref.stderr[-2000:]
    expected = Run(tmp_path / "ref").open_field("atlas")
    rng = np.random.default_rng(0)
    for k, frac in enumerate(rng.uniform(0.3, 0.9, size=2)):
        out = tmp_path / f"killed{k}"
        proc = subprocess.Popen(_cmd(population, out, extra), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=_env())
        time.sleep(frac * wall)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = subprocess.run(_cmd(population, out, extra), capture_output=True, text=True,
                              env=_env(), timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        got = Run(out).open_field("atlas")
        for var in ("loss", "accuracy", "log10_loss"):
            np.testing.assert_array_equal(got[var].values, expected[var].values)
        np.testing.assert_array_equal(got["edges"].values, expected["edges"].values)
        a = json.loads((out / "topology.json").read_text())
        b = json.loads((tmp_path / "ref" / "topology.json").read_text())
        assert a["model_basin"] == b["model_basin"]
        json.loads((out / "run.json").read_text())  # run.json never left corrupt
