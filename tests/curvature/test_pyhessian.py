"""Agreement with PyHessian (the reference implementation people use)."""

import copy
import math

import numpy as np
import pytest
import torch
from conftest import tiny_data
from torch import nn

from lossatlas.curvature import HVP, exact_trace, hessian_eigenvalues, hutchinson

pyhessian = pytest.importorskip("pyhessian", reason="PyHessian (dev extra) is not installed")


def _model32():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))


def test_top_eigenvalues_and_trace_agree_with_pyhessian():
    model = _model32()
    x, y = tiny_data(256)
    x = x.float()
    ours = hessian_eigenvalues(model, (x, y), k=3)
    torch.manual_seed(0)
    ref = pyhessian.hessian(copy.deepcopy(model), nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    ref_vals, _ = ref.eigenvalues(top_n=3, maxIter=200)
    ref_vals = torch.tensor(sorted(ref_vals, reverse=True))
    torch.testing.assert_close(ours, ref_vals, rtol=1e-2, atol=1e-4)

    op = HVP(model, (x, y))
    exact = exact_trace(op).trace
    torch.manual_seed(0)
    samples = np.array(ref.trace(maxIter=100))
    # PyHessian stops at a 1e-3 relative change: compare within a few Hutchinson std
    sd = hutchinson(op, 200, seed=0).std * math.sqrt(200)
    assert abs(samples.mean() - exact) < 4 * sd / math.sqrt(len(samples))
    ours_tr = hutchinson(op, len(samples), seed=1)
    assert abs(ours_tr.trace - samples.mean()) < 4 * sd * math.sqrt(2 / len(samples))
