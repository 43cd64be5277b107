"""BatchNorm with its batch's statistics taken in the convolution that feeds it.

Under ``bn="recompute"`` each BatchNorm layer normalises with the mean and variance of
its own input batch. Done plainly, a ``conv -> BatchNorm -> (+residual) -> ReLU`` chain
reads the convolution's output once for the statistics and once more to normalise it.
Here the convolution (the Triton kernel of :mod:`lossatlas.kernels.conv_triton`) also
returns the per-channel mean and biased variance of what it wrote (each program's
moments of its tile, merged exactly: Chan, Golub and LeVeque's pairwise formula), and
one elementwise kernel then applies the normalisation, the affine map, the residual add
and the ReLU:

- :func:`conv3x3_stats` ``(x, weight) -> (y, mean, var)``;
- :func:`bn_act` ``(y, mean, var, weight, bias, eps, residual, relu) -> out``;
- :func:`fuse_batchnorm_statistics` rewrites a traced model whose BatchNorm layers have
  no running statistics (:func:`lossatlas.batchnorm.strip_statistics`) to use them.

Both ops run on CUDA in bf16/fp16 (or in Triton's interpreter, for tests); elsewhere
they compute the same with PyTorch (``torch.var_mean``). The Evaluator's backend
``fast-bnrecompute-triton`` uses them when it runs eagerly; with ``compile=True`` it
leaves the BatchNorm layers to ``torch.compile``, whose fused reductions were faster
there (BENCHMARKS.md).
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor, fx, nn

from .conv_triton import _epilogue_chain, _launch_stats, _reference, triton

__all__ = ["bn_act", "conv3x3_stats", "fuse_batchnorm_statistics"]

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _bn_act_kernel(Y, MEAN, VAR, GAMMA, BETA, R, OUT, NPIX, eps, C: tl.constexpr,
                       AFFINE_W: tl.constexpr, AFFINE_B: tl.constexpr, HAS_RES: tl.constexpr,
                       RELU: tl.constexpr, BLOCK_M: tl.constexpr):
        """OUT = relu?((Y - MEAN) / sqrt(VAR + eps) * GAMMA + BETA (+ R)) over [NPIX, C]
        channels-last rows, fp32 inside (each program forms the per-channel scale and
        shift from the statistics itself: no separate launch)."""
        c = tl.arange(0, C)
        scale = 1.0 / tl.sqrt(tl.load(VAR + c) + eps)
        if AFFINE_W:
            scale = scale * tl.load(GAMMA + c).to(tl.float32)
        shift = -tl.load(MEAN + c) * scale
        if AFFINE_B:
            shift = shift + tl.load(BETA + c).to(tl.float32)
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        ok = (rm < NPIX)[:, None]
        off = rm[:, None] * C + c[None, :]
        v = tl.load(Y + off, mask=ok, other=0.0).to(tl.float32)
        v = v * scale[None, :] + shift[None, :]
        if HAS_RES:
            v = v + tl.load(R + off, mask=ok, other=0.0).to(tl.float32)
        if RELU:
            v = tl.maximum(v, 0.0)
        tl.store(OUT + off, v.to(OUT.dtype.element_ty), mask=ok)


def _scale_shift(mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None,
                 eps: float) -> tuple[Tensor, Tensor]:
    """Per-channel fp32 ``scale, shift`` with ``bn(y) = y * scale + shift``."""
    scale = torch.rsqrt(var.float() + eps)
    if weight is not None:
        scale = scale * weight.float()
    shift = -mean.float() * scale
    if bias is not None:
        shift = shift + bias.float()
    return scale.contiguous(), shift.contiguous()


@torch.library.custom_op("lossatlas::conv3x3_stats", mutates_args=())
def conv3x3_stats(x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, mean, var)``: ``y = conv2d(x, weight, padding=1)`` (3x3, no bias;
    Tensor[N, C_out, H, W] channels-last in ``x``'s dtype) and the per-channel mean and
    biased variance of ``y`` over samples and pixels (Tensor[C_out], fp32), the
    statistics a BatchNorm in training mode normalises ``y`` with."""
    out = _launch_stats(x, weight) if x.is_cuda else None
    if out is not None:
        return out
    y = _reference(x, weight, None, None, False)
    var, mean = torch.var_mean(y.float(), dim=(0, 2, 3), unbiased=False)
    return y, mean, var


@conv3x3_stats.register_fake
def _(x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    n, _, h, w = x.shape
    c = weight.shape[0]
    y = torch.empty((n, c, h, w), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    return y, x.new_empty(c, dtype=torch.float32), x.new_empty(c, dtype=torch.float32)


def _bn_act_launch(y: Tensor, mean: Tensor, var: Tensor, weight: Tensor | None,
                   bias: Tensor | None, eps: float, residual: Tensor | None,
                   relu: bool) -> Tensor | None:
    """The Triton kernel's output, or None where it cannot run."""
    c = y.shape[1]
    if triton is None or y.dim() != 4 or c & (c - 1) or c > 256 or y.numel() >= 2**31:
        return None
    if y.is_cuda and y.dtype not in (torch.bfloat16, torch.float16):
        return None
    if residual is not None and residual.shape != y.shape:
        return None
    cl = torch.channels_last
    y = y.contiguous(memory_format=cl)
    out = torch.empty_like(y, memory_format=cl)
    r = out if residual is None else residual.contiguous(memory_format=cl)
    stats = [t.float().contiguous() for t in (mean, var)]
    affine = [out if t is None else t.contiguous() for t in (weight, bias)]
    npix = y.numel() // c
    block = max(16, 4096 // c)
    _bn_act_kernel[(triton.cdiv(npix, block),)](
        y, *stats, *affine, r, out, npix, float(eps), C=c, AFFINE_W=weight is not None,
        AFFINE_B=bias is not None, HAS_RES=residual is not None, RELU=relu, BLOCK_M=block)
    return out


@torch.library.custom_op("lossatlas::bn_act", mutates_args=())
def bn_act(y: Tensor, mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None,
           eps: float, residual: Tensor | None, relu: bool) -> Tensor:
    """``relu?((y - mean) / sqrt(var + eps) * weight + bias (+ residual))`` per channel of
    ``y`` [N, C, H, W] (``weight`` / ``bias`` None: 1 / 0), formed in fp32 and rounded
    once to ``y.dtype``. Returns Tensor[N, C, H, W] (channels-last)."""
    out = _bn_act_launch(y, mean, var, weight, bias, eps, residual, relu) if y.is_cuda else None
    if out is not None:
        return out
    scale, shift = _scale_shift(mean, var, weight, bias, eps)
    v = y.float() * scale[:, None, None] + shift[:, None, None]
    if residual is not None:
        v = v + residual.float()
    if relu:
        v = torch.relu(v)
    return v.to(y.dtype).contiguous(memory_format=torch.channels_last)


@bn_act.register_fake
def _(y: Tensor, mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None,
      eps: float, residual: Tensor | None, relu: bool) -> Tensor:
    return torch.empty_like(y, memory_format=torch.channels_last)


def _batch_statistics_bn(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The BatchNorm2d module ``node`` calls, if it normalises with its batch's statistics
    (no running statistics), else None."""
    if node.op != "call_module":
        return None
    m = modules.get(node.target)
    if type(m) is not nn.BatchNorm2d or m.running_mean is not None:
        return None
    return m


def fuse_batchnorm_statistics(gm: fx.GraphModule) -> int:
    """Rewrite ``gm`` in place: each ``conv3x3_act(x, w)`` call without bias or epilogue
    (:func:`~lossatlas.kernels.conv_triton.fuse_conv_epilogues`) whose only user is a
    BatchNorm2d without running statistics becomes :func:`conv3x3_stats` followed by one
    :func:`bn_act` call, which also takes the residual add and the ReLU after the
    BatchNorm when they follow. The BatchNorm's ``weight`` / ``bias`` are read as
    attributes (``functional_call`` substitutes a point's tensors).

    Returns the number of BatchNorm layers rewritten (0: ``gm`` is unchanged).
    """
    op = torch.ops.lossatlas.conv3x3_act.default
    modules = dict(gm.named_modules())
    done = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not op:
            continue
        x, w, b, r, relu = node.args
        if b is not None or r is not None or relu or len(node.users) != 1:
            continue
        bn_node = next(iter(node.users))
        bn = _batch_statistics_bn(bn_node, modules)
        if bn is None or len(bn_node.args) != 1 or bn_node.kwargs:
            continue
        chain, residual, act = _epilogue_chain(bn_node, modules)
        g = gm.graph
        with g.inserting_before(node):
            stats = g.call_function(torch.ops.lossatlas.conv3x3_stats.default, (x, w))
            y, mean, var = (g.call_function(operator.getitem, (stats, i)) for i in range(3))
            weight = g.get_attr(f"{bn_node.target}.weight") if bn.weight is not None else None
            bias = g.get_attr(f"{bn_node.target}.bias") if bn.bias is not None else None
        with g.inserting_after(chain[-1]):
            new = g.call_function(torch.ops.lossatlas.bn_act.default,
                                  (y, mean, var, weight, bias, float(bn.eps), residual, act))
        chain[-1].replace_all_uses_with(new)
        for dead in [*reversed(chain), node]:
            g.erase_node(dead)
        done += 1
    if done:
        gm.graph.lint()
        gm.recompile()
    return done
