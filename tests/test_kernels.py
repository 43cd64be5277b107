"""Fast paths (lossatlas.kernels) against the generic vmap backend, and their detectors."""

import logging

import pytest
import torch
from torch import nn

from lossatlas import Evaluator, ParamSpace
from lossatlas.kernels import detect_mlp, fold_batchnorm
from lossatlas.models import create


def _points(space: ParamSpace, model: nn.Module, k: int, scale: float = 0.05) -> torch.Tensor:
    w = space.flatten(model)
    return w[None] + scale * w.abs().mean() * torch.randn(k, space.dim)


def _bn_warm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(2 * x + 0.5 + 0.1 * torch.randn_like(x))
    return model.eval()


MLPS = {
    "relu-40-32-16-10": (lambda: create("mlp", hidden=(32, 16)), (40,)),
    "gelu-40-64-10": (lambda: create("mlp", hidden=(64,), activation="gelu"), (40,)),
    "tanh-deep": (lambda: create("mlp", hidden=(16, 16, 16, 16), activation="tanh"), (40,)),
    "silu": (lambda: create("mlp", hidden=(24,), activation="silu"), (40,)),
    "sequential-nested": (
        lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(10, 12), nn.ReLU(), nn.Dropout(0.2),
            nn.Sequential(nn.Linear(12, 9, bias=False), nn.LeakyReLU(0.1)), nn.Linear(9, 10),
        ),
        (2, 5),
    ),
    "single-linear": (lambda: nn.Linear(7, 10), (7,)),
}


@pytest.mark.parametrize("name", sorted(MLPS))
def test_mlp_fast_path_equals_vmap(name):
    make, shape = MLPS[name]
    torch.manual_seed(0)
    model = make()
    x, y = torch.randn(150, *shape), torch.randint(0, 10, (150,))
    fast = Evaluator(model, (x, y), backend="fast", batch_size=64)
    assert fast.backend == "fast-mlp" and "fast-mlp" in repr(fast)
    ref = Evaluator(model, (x, y), backend="vmap", batch_size=64)
    pts = _points(fast.space, model, 5)
    a, b = fast.evaluate(pts), ref.evaluate(pts)
    torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a["accuracy"], b["accuracy"])


def test_mlp_fast_path_with_frozen_layer_and_custom_loss():
    torch.manual_seed(1)
    model = create("mlp", hidden=(16, 16))
    model.layers[0].requires_grad_(False)
    space = ParamSpace(model, trainable_only=True)
    x, y = torch.randn(80, 40), torch.randint(0, 10, (80,))
    pts = _points(space, model, 3)

    def mse(out, t):
        return (out.softmax(-1) - nn.functional.one_hot(t, 10).float()).pow(2).mean()

    kw = dict(space=space, loss_fn=mse, metrics={"maxlogit": lambda o, t: o.max(-1)[0].mean()})
    a = Evaluator(model, (x, y), backend="fast", **kw).evaluate(pts)
    b = Evaluator(model, (x, y), backend="vmap", **kw).evaluate(pts)
    for k in ("loss", "accuracy", "maxlogit"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


class Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + x)


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(self.a(x) * 2)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 3), nn.Linear(8, 3)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else self.b(x)  # not traceable


@pytest.mark.parametrize("cls", [Skip, Custom, Branchy])
def test_detector_refuses_and_auto_falls_back(cls):
    torch.manual_seed(2)
    model = cls().eval()
    plan, why = detect_mlp(model)
    assert plan is None and why
    x, y = torch.randn(20, 8), torch.randint(0, 3, (20,))
    ev = Evaluator(model, (x, y))
    assert ev.backend == "vmap"
    with pytest.raises(ValueError, match="no fast path"):
        Evaluator(model, (x, y), backend="fast")
    pts = _points(ev.space, model, 2)
    seq = Evaluator(model, (x, y), backend="sequential").evaluate(pts)
    torch.testing.assert_close(ev.evaluate(pts)["loss"], seq["loss"], rtol=1e-5, atol=1e-6)


def test_no_batchnorm_means_no_fold():
    gm, plan, why = fold_batchnorm(create("cnn").eval())
    assert gm is None and plan is None and "BatchNorm" in why


@pytest.fixture(scope="module")
def resnet20_case():
    torch.manual_seed(3)
    model = create("resnet20")
    x, y = torch.randn(24, 3, 32, 32), torch.randint(0, 10, (24,))
    _bn_warm(model, x)
    assert not torch.allclose(model.bn1.running_var, torch.ones(16))
    return model, x, y


@pytest.mark.parametrize("loop", [False, True])
def test_folded_bn_equals_unfolded_resnet20(resnet20_case, loop):
    model, x, y = resnet20_case
    space = ParamSpace(model, buffers=True)  # bn="own": every point its own statistics
    torch.manual_seed(4)
    pts = _points(space, model, 3)  # variances on a log scale: any point is valid
    fast = Evaluator(model, (x, y), space=space, backend="fast", batch_size=12,
                     channels_last=loop, bn="own")
    assert fast.backend == "fast-bnfold"
    fast._fold_vmap = not loop
    ref = Evaluator(model, (x, y), space=space, backend="vmap", batch_size=12, bn="own")
    a, b = fast.evaluate(pts), ref.evaluate(pts)
    torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a["accuracy"], b["accuracy"])


def test_fold_plan_removes_batchnorm(resnet20_case):
    model = resnet20_case[0]
    gm, plan, _ = fold_batchnorm(model)
    assert gm is not None and plan is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    assert len(plan.pairs) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # user's model untouched


def test_oom_backoff_on_fast_paths(monkeypatch, resnet20_case):
    model, x, y = resnet20_case
    ev = Evaluator(model, (x, y), backend="fast", chunk_size=4, batch_size=12, bn="own")
    real = ev._point_outputs_folded

    def flaky(chunk, xb):
        if len(chunk) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(chunk, xb)

    monkeypatch.setattr(ev, "_point_outputs_folded", flaky)
    pts = _points(ev.space, model, 3)
    out = ev.evaluate(pts)
    assert ev.chunk_size == 1
    ref = Evaluator(model, (x, y), backend="vmap", batch_size=12, bn="own").evaluate(pts)
    torch.testing.assert_close(out["loss"], ref["loss"], rtol=1e-4, atol=1e-5)


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    torch.manual_seed(5)
    model = create("mlp", hidden=(16,))
    x, y = torch.randn(30, 40), torch.randint(0, 10, (30,))

    def broken_compile(fn, **_kw):
        def run(*_a):
            raise RuntimeError("backend exploded")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    ev = Evaluator(model, (x, y), compile=True, chunk_size=4)
    pts = _points(ev.space, model, 6)
    with caplog.at_level(logging.WARNING, logger="lossatlas.evaluate"):
        out = ev.evaluate(pts)
    assert "torch.compile failed" in caplog.text
    ref = Evaluator(model, (x, y), backend="vmap").evaluate(pts)
    torch.testing.assert_close(out["loss"], ref["loss"], rtol=1e-5, atol=1e-6)


_FUSED_CHECK = """
import torch, torch.nn.functional as F
from lossatlas import ParamSpace
from lossatlas.kernels.mlp import detect_mlp, mlp_logits
from lossatlas.kernels.mlp_triton import fused_mlp_ce, supports
from lossatlas.models import create
torch.manual_seed(0)
m = create("mlp", hidden=(128, 256)).eval()
plan, _ = detect_mlp(m)
assert supports(plan) is None
sp = ParamSpace(m)
pts = sp.flatten(m) + 0.3 * torch.randn(3, sp.dim) * sp.flatten(m).abs().mean()
x, y = torch.randn(100, 40), torch.randint(0, 10, (100,))
b = sp.unflatten(pts)
loss, corr = fused_mlp_ce(plan, b, {}, 3, x, y, dtype=torch.float32)
lg = mlp_logits(plan, b, {}, 3, x)
ref = torch.stack([F.cross_entropy(lg[i], y, reduction="sum") for i in range(3)])
torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-4)
torch.testing.assert_close(corr, (lg.argmax(-1) == y).float().sum(1))
assert supports(detect_mlp(create("mlp", hidden=(128,)).eval())[0]) is not None
print("ok")
"""


def test_fused_triton_kernel_in_interpreter(triton_interpreter):
    """The fused MLP + cross-entropy kernel's logic, run by Triton's CPU interpreter (fp32)."""
    triton_interpreter(_FUSED_CHECK)
