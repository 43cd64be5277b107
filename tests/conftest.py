"""Shared test set-up: a headless matplotlib, a fixed seed, and quick-training helpers."""

from __future__ import annotations

import os

import matplotlib
import pytest
import torch
from torch import nn

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")
# under pytest-xdist (``make test`` runs one worker per core) each worker takes one thread
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1))
torch.set_num_threads(THREADS)

# small models run fastest (and predictably on a busy machine) on one thread
ONE_THREAD_DIRS = {"connectivity", "symmetry"}


@pytest.fixture(autouse=True)
def _seed_and_threads(request):
    torch.manual_seed(0)
    old = torch.get_num_threads()
    if request.path.parent.name in ONE_THREAD_DIRS:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def train_quick(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 300,
                lr: float = 1e-3, batch_size: int = 128, seed: int = 0) -> nn.Module:
    """Adam on random mini-batches; returns the model in eval mode."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(old)
    return model.eval()


@pytest.fixture(scope="session")
def train():
    """The quick training function (fixtures avoid importing this conftest by name)."""
    return train_quick


@pytest.fixture(scope="session")
def digits():
    from lossatlas import data

    return data.create("digits")


@pytest.fixture(scope="session")
def triton_interpreter():
    """``run(script)``: runs a Python script in a subprocess under Triton's CPU
    interpreter (``TRITON_INTERPRET=1``) and asserts that it printed ``ok``; skips where
    Triton is missing or its interpreter cannot start."""
    import subprocess
    import sys

    def run(script: str) -> None:
        pytest.importorskip("triton")
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=env, timeout=600)
        if "active drivers" in proc.stderr or (
                "interpreter" in proc.stderr.lower() and proc.returncode):
            pytest.skip(f"Triton interpreter unavailable: {proc.stderr.strip().splitlines()[-1]}")
        assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]

    return run
