"""The fused 3x3 convolution (bias, residual add, ReLU) and the graph rewrite that uses it."""

from __future__ import annotations

import copy
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lossatlas import Evaluator
from lossatlas.kernels.bnfold import fold_batchnorm
from lossatlas.kernels.conv_triton import conv3x3_act, fuse_conv_epilogues, supports_conv
from lossatlas.models import create


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Stored statistics far from 0 / 1, so that a wrong fold or fusion shows."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


def test_supports_conv_names_what_it_cannot_do():
    assert supports_conv(nn.Conv2d(16, 32, 3, padding=1)) is None
    assert "3x3 stride-1" in supports_conv(nn.Conv2d(16, 32, 3, stride=2, padding=1))
    assert "channels" in supports_conv(nn.Conv2d(3, 16, 3, padding=1))
    assert supports_conv(nn.Conv2d(16, 16, 3, padding=1, bias=False)) is None  # bias optional
    assert "grouped" in supports_conv(nn.Conv2d(16, 16, 3, padding=1, groups=2))


def test_op_equals_conv_bias_residual_relu():
    """The op (PyTorch path off CUDA) against the plain sequence of PyTorch calls."""
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 16, 6, 5), torch.randn(32, 16, 3, 3), torch.randn(32)
    r = torch.randn(3, 32, 6, 5)
    ref = F.relu(F.conv2d(x, w, b, padding=1) + r)
    torch.testing.assert_close(conv3x3_act(x, w, b, r, True), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv3x3_act(x, w, b, None, False), F.conv2d(x, w, b, padding=1),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv3x3_act(x, w, None, None, False), F.conv2d(x, w, padding=1),
                               rtol=1e-5, atol=1e-5)


def _bn_cnn() -> nn.Module:
    """A plain Sequential BatchNorm CNN: 1->16 (not fusable), 16->32, pool, 32->32."""
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 32),
                         nn.Flatten(), nn.Linear(32 * 16, 10))


@pytest.mark.parametrize("name", ["resnet20", "bn_cnn"])
def test_rewrite_keeps_the_model(name, tmp_path):
    """Folded + fused model under functional_call equals the original eval-mode model
    (a checkpoint written to disk and read back), and every supported convolution with
    its ReLU / residual add was replaced."""
    torch.manual_seed(0)
    make = (lambda: create(name)) if name == "resnet20" else _bn_cnn
    torch.save(_randomise_bn(make()).state_dict(), tmp_path / "ckpt.pt")
    model = make()
    model.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    model.eval()
    gm, plan, _ = fold_batchnorm(model)
    assert gm is not None and plan is not None
    supported = sum(supports_conv(m) is None for m in gm.modules())
    n = fuse_conv_epilogues(gm)
    assert n == supported
    x = torch.randn(5, *(3, 32, 32) if name == "resnet20" else (1, 8, 8))
    assert n == (16 if name == "resnet20" else 2)
    _, fixed = plan.apply({}, model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(functional_call(gm, fixed, (x,)), model(x), rtol=1e-4,
                                   atol=1e-4)
    ops = [nd.target for nd in gm.graph.nodes if nd.op == "call_function"]
    assert ops.count(torch.ops.lossatlas.conv3x3_act.default) == n
    if name == "resnet20":
        # 18 block convolutions, 2 of them stride 2: 16 fused, each block's second one
        # with its residual add, so no add is left
        assert operator.add not in ops
        assert sum(nd.target is F.relu for nd in gm.graph.nodes) == 3  # stem + 2 stride-2


def test_rewrite_of_a_hand_written_block():
    """A custom module: conv -> relu via nn.ReLU, conv + skip via torch.add, no ReLU after."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(16, 16, 3, padding=1)
            self.act = nn.ReLU()
            self.b = nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x):
            return torch.add(x, self.b(self.act(self.a(x))))

    torch.manual_seed(0)
    m = Block().eval()
    gm = torch.fx.symbolic_trace(m)
    assert fuse_conv_epilogues(gm) == 2
    x = torch.randn(2, 16, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), m(x), rtol=1e-5, atol=1e-5)
    calls = [nd for nd in gm.graph.nodes if nd.target is torch.ops.lossatlas.conv3x3_act.default]
    assert [c.args[3] is not None for c in calls] == [False, True]
    assert [c.args[4] for c in calls] == [True, False]


def test_rewrite_of_a_torchvision_style_block():
    """``out += identity`` after the second convolution (torchvision's BasicBlock; fx
    traces ``+=`` as an add) is fused, and so is ``y += conv(x)`` with ``y`` another
    tensor, each with the same values as the module."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
            self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    class Reversed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x):
            y = x * 2
            y += self.conv(x)
            return y - x

    torch.manual_seed(0)
    block = _randomise_bn(Block())
    gm, plan, _ = fold_batchnorm(block)
    assert gm is not None and plan is not None
    assert fuse_conv_epilogues(gm) == 2
    calls = [nd for nd in gm.graph.nodes if nd.target is torch.ops.lossatlas.conv3x3_act.default]
    assert [c.args[3] is not None for c in calls] == [False, True]  # the second with the skip
    assert operator.add not in [nd.target for nd in gm.graph.nodes]
    x = torch.randn(3, 16, 6, 7)
    _, fixed = plan.apply({}, block.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(functional_call(gm, fixed, (x,)), block(x.clone()),
                                   rtol=1e-4, atol=1e-4)
    rev = Reversed().eval()
    gm = torch.fx.symbolic_trace(rev)
    assert fuse_conv_epilogues(gm) == 1
    call = next(nd for nd in gm.graph.nodes if nd.target is torch.ops.lossatlas.conv3x3_act.default)
    assert call.args[3] is not None and call.args[3].target is operator.mul  # y as the residual
    with torch.no_grad():
        torch.testing.assert_close(gm(x), rev(x), rtol=1e-5, atol=1e-5)


def test_backend_not_taken_off_cuda():
    model = _randomise_bn(create("resnet20"))
    ev = Evaluator(model, (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))),
                   device="cpu", bn="own")
    assert ev.backend == "fast-bnfold"
    with pytest.raises(ValueError, match="CUDA, precision='bf16'"):
        Evaluator(model, (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))), device="cpu",
                  bn="own", backend="fast-bnfold-fused")


def test_check_kernel_reports_a_wrong_or_missing_kernel(monkeypatch):
    """The backend's start-up check refuses a kernel whose output is off, or absent."""
    from lossatlas.kernels import conv_triton

    def off_by_one(x, w, b, r, relu, config=None):
        return conv_triton._reference(x, w, b, r, relu) + 1

    monkeypatch.setattr(conv_triton, "_launch", off_by_one)
    assert "differs from PyTorch's (max abs diff 1" in conv_triton.check_kernel("cpu", torch.float32)
    monkeypatch.setattr(conv_triton, "_launch", lambda *a, **k: None)
    assert "does not run" in conv_triton.check_kernel("cpu")
    monkeypatch.setattr(conv_triton, "_launch",
                        lambda x, w, b, r, relu, config=None: conv_triton._reference(x, w, b, r, relu))

    def stats(x, w, config=None, shift=0.0):
        y = conv_triton._reference(x, w, None, None, False)
        var, mean = torch.var_mean(y.float(), dim=(0, 2, 3), unbiased=False)
        return y, mean + shift, var

    monkeypatch.setattr(conv_triton, "_launch_stats", stats)
    assert conv_triton.check_kernel("cpu") is None
    monkeypatch.setattr(conv_triton, "_launch_stats", lambda x, w, config=None: stats(x, w, shift=1e-3))
    assert "statistics differ" in conv_triton.check_kernel("cpu")


_KERNEL_CHECK = """
import torch, torch.nn.functional as F
from lossatlas.kernels.conv_triton import _launch
torch.manual_seed(0)
for cin, cout, res, relu in [(16, 16, True, True), (16, 32, False, True), (64, 32, True, False),
                             (32, 64, False, False)]:
    x, w, b = torch.randn(3, cin, 5, 7), torch.randn(cout, cin, 3, 3), torch.randn(cout)
    r = torch.randn(3, cout, 5, 7) if res else None
    ref = F.conv2d(x, w, b, padding=1) + (r if res else 0)
    ref = F.relu(ref) if relu else ref
    got = _launch(x, w, b, r, relu)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    pipelined = _launch(x, w, b, r, relu, config={"BLOCK_M": 32, "PIPELINE": 3})
    torch.testing.assert_close(pipelined, ref, rtol=1e-4, atol=1e-4)
    # the row sweep: 2 images (padded rows of 8) per program, the last program half empty
    rows = _launch(x, w, b, r, relu, config={"BLOCK_M": 16, "ROWS": 1, "PIPELINE": 2})
    torch.testing.assert_close(rows, ref, rtol=1e-4, atol=1e-4)
    assert _launch(x, w, b, r, relu, config={"BLOCK_M": 4, "ROWS": 1}) is None  # row of 8
# one-row and one-column images: the sweep's first output row is also its last; no bias
for shape in [(2, 16, 1, 5), (3, 16, 4, 1)]:
    x, w = torch.randn(*shape), torch.randn(16, 16, 3, 3)
    for cfg in ({"BLOCK_M": 16, "ROWS": 1}, {"BLOCK_M": 16, "PIPELINE": 3}):
        got = _launch(x, w, None, None, False, config=cfg)
        torch.testing.assert_close(got, F.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
from lossatlas.kernels.conv_triton import check_kernel
assert check_kernel("cpu", torch.float16) is None, check_kernel("cpu", torch.float16)
print("ok")
"""


def test_kernel_in_interpreter(triton_interpreter):
    """The Triton kernel itself (fp32, IEEE products), run by Triton's CPU interpreter, on
    odd image sizes so that every border mask is exercised: the tap loop and the row
    sweep."""
    triton_interpreter(_KERNEL_CHECK)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bn, backend", [("own", "fast-bnfold-fused"),
                                         ("recompute", "fast-bnrecompute-triton")])
def test_triton_backends_on_cuda_match_fp32(bn, backend):
    """On CUDA in bf16 the Triton-convolution backend of each BatchNorm policy is chosen
    and agrees with the fp32 sequential evaluation under that policy to bf16 rounding."""
    pytest.importorskip("triton")
    torch.manual_seed(0)
    model = _randomise_bn(create("resnet20")).cuda()
    data = (torch.randn(512, 3, 32, 32), torch.randint(0, 10, (512,)))
    ev = Evaluator(model, data, device="cuda", bn=bn, precision="bf16")
    assert ev.backend == backend
    ref = Evaluator(model, data, device="cuda", bn=bn, precision="fp32", backend="sequential")
    w = ref.space.flatten(model).cuda()
    pts = w + 0.01 * torch.randn(4, w.numel(), device="cuda") * w.abs().mean()
    torch.testing.assert_close(ev.evaluate(pts)["loss"], ref.evaluate(pts)["loss"], rtol=2e-2,
                               atol=2e-2)


def _stripped(model: nn.Module) -> nn.Module:
    """``model`` with its BatchNorm layers normalising with their batch's statistics."""
    from lossatlas.batchnorm import strip_statistics

    strip_statistics(model)
    return model


@pytest.mark.parametrize("name", ["resnet20", "bn_cnn"])
def test_rewrite_under_recomputed_statistics(name, tmp_path):
    """The graph ``fast-bnrecompute-triton`` runs: the unfolded model (no conv bias, a
    BatchNorm with batch statistics after each convolution) with its convolutions
    replaced by the op equals the model (checkpoint written to disk and read back)."""
    torch.manual_seed(0)
    make = (lambda: create(name)) if name == "resnet20" else _bn_cnn
    torch.save(_randomise_bn(make()).state_dict(), tmp_path / "ckpt.pt")
    model = make()
    model.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    model = _stripped(model.eval())
    gm = torch.fx.symbolic_trace(copy.deepcopy(model))
    n = fuse_conv_epilogues(gm)
    assert n == (16 if name == "resnet20" else 2)
    calls = [nd for nd in gm.graph.nodes if nd.target is torch.ops.lossatlas.conv3x3_act.default]
    if name == "resnet20":  # a BatchNorm follows every convolution: the op is the conv alone
        assert all(c.args[2] is None and c.args[3] is None and not c.args[4] for c in calls)
    x = torch.randn(6, *(3, 32, 32) if name == "resnet20" else (1, 8, 8))
    params = {k: v * 1.1 for k, v in model.state_dict().items()}  # another point
    with torch.no_grad():
        torch.testing.assert_close(functional_call(gm, params, (x,)),
                                   functional_call(model, params, (x,)), rtol=1e-4, atol=1e-4)
