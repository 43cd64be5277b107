"""BatchNorm with batch statistics from the convolution that feeds it (bn_triton)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lossatlas.batchnorm import strip_statistics
from lossatlas.kernels.bn_triton import bn_act, conv3x3_stats, fuse_batchnorm_statistics
from lossatlas.kernels.conv_triton import fuse_conv_epilogues
from lossatlas.models import create


def test_ops_equal_conv_and_train_mode_batchnorm():
    """The ops (PyTorch path off CUDA) against conv2d and F.batch_norm in training mode."""
    torch.manual_seed(0)
    x, w = torch.randn(4, 16, 6, 5) + 3.0, torch.randn(32, 16, 3, 3)
    y, mean, var = conv3x3_stats(x, w)
    ref = F.conv2d(x, w, padding=1)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(mean, ref.mean((0, 2, 3)), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(var, ref.var((0, 2, 3), unbiased=False), rtol=1e-4, atol=1e-4)
    gamma, beta, r = torch.randn(32), torch.randn(32), torch.randn(4, 32, 6, 5)
    want = F.relu(F.batch_norm(ref, None, None, gamma, beta, training=True, eps=1e-5) + r)
    torch.testing.assert_close(bn_act(y, mean, var, gamma, beta, 1e-5, r, True), want,
                               rtol=1e-4, atol=1e-4)
    plain = F.batch_norm(ref, None, None, None, None, training=True, eps=1e-3)
    torch.testing.assert_close(bn_act(y, mean, var, None, None, 1e-3, None, False), plain,
                               rtol=1e-4, atol=1e-4)


def _bn_cnn() -> nn.Module:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 32),
                         nn.Flatten(), nn.Linear(32 * 16, 10))


@pytest.mark.parametrize("name", ["resnet20", "bn_cnn"])
def test_rewrite_keeps_the_model(name, tmp_path):
    """Every BatchNorm after a rewritten convolution becomes one bn_act call (with the
    residual add and ReLU after it), and the graph equals the model with batch
    statistics at another point (checkpoint written to disk and read back)."""
    torch.manual_seed(0)
    make = (lambda: create(name)) if name == "resnet20" else _bn_cnn
    torch.save(make().state_dict(), tmp_path / "ckpt.pt")
    model = make()
    model.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    strip_statistics(model.eval())
    gm = torch.fx.symbolic_trace(copy.deepcopy(model))
    n_conv = fuse_conv_epilogues(gm)
    assert fuse_batchnorm_statistics(gm) == n_conv == (16 if name == "resnet20" else 2)
    targets = [nd.target for nd in gm.graph.nodes]
    assert targets.count(torch.ops.lossatlas.bn_act.default) == n_conv
    assert torch.ops.lossatlas.conv3x3_act.default not in targets
    left = [nd for nd in gm.graph.nodes if nd.op == "call_module"
            and isinstance(gm.get_submodule(nd.target), nn.BatchNorm2d)]
    # left: after the stem, the two stride-2 and the two 1x1 shortcut convolutions / 1->16
    assert len(left) == (5 if name == "resnet20" else 1)
    if name == "resnet20":  # each block's second BatchNorm took the residual add and ReLU
        acts = [nd for nd in gm.graph.nodes if nd.target is torch.ops.lossatlas.bn_act.default]
        assert sum(nd.args[6] is not None for nd in acts) == 9  # one per block
        assert all(nd.args[7] for nd in acts)  # every one followed by its ReLU
    g = torch.Generator().manual_seed(3)
    params = {k: v + 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
              for k, v in model.state_dict().items()}
    x = torch.randn(6, *(3, 32, 32) if name == "resnet20" else (1, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(functional_call(gm, params, (x,)),
                                   functional_call(model, params, (x,)), rtol=1e-4, atol=1e-4)


def test_rewrite_leaves_batchnorm_with_running_statistics():
    """A BatchNorm that keeps running statistics (eval mode) is not rewritten."""
    model = _bn_cnn().eval()
    gm = torch.fx.symbolic_trace(model)
    fuse_conv_epilogues(gm)
    assert fuse_batchnorm_statistics(gm) == 0


_KERNEL_CHECK = """
import torch, torch.nn.functional as F
from lossatlas.kernels.conv_triton import _launch_stats
from lossatlas.kernels.bn_triton import _bn_act_launch
torch.manual_seed(0)
# far from zero mean (the merge must not lose the variance), odd sizes, partial programs
x = torch.randn(5, 16, 7, 9) + 4.0
w = torch.randn(32, 16, 3, 3) / 12
ref = F.conv2d(x, w, padding=1)
var_ref, mean_ref = torch.var_mean(ref, dim=(0, 2, 3), unbiased=False)
assert float((mean_ref.abs() / var_ref.sqrt()).max()) > 3  # a mean several deviations out
for cfg in ({"BLOCK_M": 32, "ROWS": 1}, {"BLOCK_M": 64, "PIPELINE": 3}, {"BLOCK_M": 16, "ROWS": 1},
            None):
    y, mean, var = _launch_stats(x, w, config=cfg)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mean, mean_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var, var_ref, rtol=1e-5, atol=1e-5)
# more programs (70) than one block of the merge kernel takes (64)
xs = torch.randn(140, 16, 3, 5) - 2.0
ys, mean, var = _launch_stats(xs, w, config={"BLOCK_M": 16, "ROWS": 1})
var_s, mean_s = torch.var_mean(F.conv2d(xs, w, padding=1), dim=(0, 2, 3), unbiased=False)
torch.testing.assert_close(mean, mean_s, rtol=1e-5, atol=1e-5)
torch.testing.assert_close(var, var_s, rtol=1e-5, atol=1e-5)
gamma, beta, r = torch.randn(32), torch.randn(32), torch.randn(5, 32, 7, 9)
for g, b, res, relu in [(None, None, None, False), (gamma, beta, r, True), (gamma, None, r, False)]:
    got = _bn_act_launch(ref, mean_ref, var_ref, g, b, 1e-3, res, relu)
    want = F.batch_norm(ref, None, None, g, b, training=True, eps=1e-3)
    want = want + (0 if res is None else res)
    torch.testing.assert_close(got, F.relu(want) if relu else want, rtol=1e-4, atol=1e-4)
from lossatlas.kernels.conv_triton import check_kernel
assert check_kernel("cpu", torch.float16) is None, check_kernel("cpu", torch.float16)
print("ok")
"""


def test_kernels_in_interpreter(triton_interpreter):
    """The convolution's statistics (tap loop and row sweep, several programs each, a
    mean far from zero) and the elementwise kernel, in Triton's CPU interpreter."""
    triton_interpreter(_KERNEL_CHECK)
