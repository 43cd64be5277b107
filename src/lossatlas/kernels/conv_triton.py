"""Fused 3x3 convolution on channels-last activations: bias, residual add and ReLU in one pass.

A CIFAR ResNet spends most of a point's time in its 16-64-channel 3x3 convolutions
and in the separate passes that follow each one (bias, ReLU, the residual add), each a
read and a write of an activation as large as the input batch. With BatchNorm folded
into the convolutions (:mod:`lossatlas.kernels.bnfold`) a whole ``conv -> +bias ->
(+residual) -> ReLU`` chain becomes one kernel here:

- one program takes ``BLOCK_M`` consecutive pixels (channels-last: a contiguous
  ``[BLOCK_M, C_in]`` tile) and, for each of the nine taps, the same tile shifted by
  ``dy * W + dx`` pixels (zero outside the image), multiplied by that tap's
  ``[C_in, C_out]`` weight slice on the tensor cores (fp32 accumulation);
- adds the bias, the residual tile and applies ReLU in fp32, and writes the output
  once, rounded to the activation dtype.

:func:`fuse_conv_epilogues` rewrites a traced model so that every supported
convolution (3x3, stride 1, padding 1, 16/32/64 channels, with a bias) and the ReLU /
residual add after it call :func:`conv3x3_act`. It runs on CUDA in bf16/fp16 (or in
Triton's interpreter, for tests); elsewhere the op computes the same thing with
PyTorch. :func:`check_kernel` compares the kernel with PyTorch on a small case (the
backend ``fast-bnfold-fused`` runs it before using the kernel). Launches are autotuned
per shape among the configurations an H200 sweep found fastest (``bench/conv_fused.py``).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = ["check_kernel", "conv3x3_act", "fuse_conv_epilogues", "supports_conv"]

try:  # Triton is optional: CPU installs usually lack it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]

_CHANNELS = (16, 32, 64)


def supports_conv(conv: nn.Module) -> str | None:
    """None if :func:`conv3x3_act` computes ``conv``, else why not."""
    if type(conv) is not nn.Conv2d:
        return "not an nn.Conv2d"
    if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1):
        return "not a 3x3 stride-1 convolution with padding 1"
    if conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
        return "dilated, grouped or non-zero padding"
    if conv.in_channels not in _CHANNELS or conv.out_channels not in _CHANNELS:
        return f"channels {conv.in_channels}->{conv.out_channels} not in {_CHANNELS}"
    if conv.bias is None:
        return "no bias (fold BatchNorm first)"
    return None


if triton is not None:

    @triton.jit
    def _tap(X, Wt, acc, t, rm, ok, row, col, ci, co, H, W, C_IN: tl.constexpr,
             C_OUT: tl.constexpr, IEEE: tl.constexpr):
        """``acc`` plus tap ``t``'s product: the pixel tile shifted by (dy, dx), zero
        outside the image, times the tap's [C_IN, C_OUT] weight slice."""
        dy = t // 3 - 1
        dx = t % 3 - 1
        inside = ok & (row + dy >= 0) & (row + dy < H) & (col + dx >= 0) & (col + dx < W)
        src = rm + (dy * W + dx)
        a = tl.load(X + src[:, None] * C_IN + ci[None, :], mask=inside[:, None], other=0.0)
        w = tl.load(Wt + (t * C_IN + ci[:, None]) * C_OUT + co[None, :])
        if IEEE:
            return tl.dot(a, w, acc, input_precision="ieee")
        return tl.dot(a, w, acc)

    @triton.jit
    def _conv3x3_kernel(X, Wt, B, R, Y, NPIX, H, W,
                        C_IN: tl.constexpr, C_OUT: tl.constexpr, HAS_RES: tl.constexpr,
                        RELU: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                        PIPELINE: tl.constexpr = 0):
        pid = tl.program_id(0)
        rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # pixel index in [0, N * H * W)
        ok = rm < NPIX
        col = rm % W
        row = (rm // W) % H
        ci = tl.arange(0, C_IN)
        co = tl.arange(0, C_OUT)
        acc = tl.zeros([BLOCK_M, C_OUT], dtype=tl.float32)
        if PIPELINE:  # a loop Triton software-pipelines (loads PIPELINE taps ahead)
            for t in tl.range(0, 9, num_stages=PIPELINE):
                acc = _tap(X, Wt, acc, t, rm, ok, row, col, ci, co, H, W, C_IN, C_OUT, IEEE)
        else:  # unrolled
            for t in tl.static_range(9):
                acc = _tap(X, Wt, acc, t, rm, ok, row, col, ci, co, H, W, C_IN, C_OUT, IEEE)
        acc = acc + tl.load(B + co)[None, :]
        out = rm[:, None] * C_OUT + co[None, :]
        if HAS_RES:
            acc = acc + tl.load(R + out, mask=ok[:, None], other=0.0).to(tl.float32)
        if RELU:
            acc = tl.maximum(acc, 0.0)
        tl.store(Y + out, acc.to(Y.dtype.element_ty), mask=ok[:, None])

    # the fastest launches per shape on an H200 (bench/conv_fused.py's sweep, 10,000
    # CIFAR images): the pipelined tap loop with 128-256 pixels per program
    _conv3x3_tuned = triton.autotune(
        configs=[
            triton.Config({"BLOCK_M": bm, "PIPELINE": 3}, num_warps=nw, num_stages=2)
            for bm, nw in ((128, 2), (128, 4), (128, 8), (256, 4), (256, 8))
        ],
        key=["C_IN", "C_OUT", "H", "W", "HAS_RES", "RELU"],
    )(_conv3x3_kernel)


def _reference(x: Tensor, weight: Tensor, bias: Tensor, residual: Tensor | None,
               relu: bool) -> Tensor:
    """The same computation in PyTorch (fp32 epilogue, one rounding to ``x.dtype``)."""
    y = F.conv2d(x, weight.to(x.dtype), None, padding=1).float() + bias.float()[:, None, None]
    if residual is not None:
        y = y + residual.float()
    if relu:
        y = torch.relu(y)
    return y.to(x.dtype).contiguous(memory_format=torch.channels_last)


def _launch(x: Tensor, weight: Tensor, bias: Tensor, residual: Tensor | None, relu: bool,
            config: dict | None = None) -> Tensor | None:
    """The Triton kernel's output, or None when it cannot run on these tensors. On CUDA
    the autotuned launch, or ``config`` (BLOCK_M, PIPELINE, num_warps, num_stages) when
    given (``bench/conv_fused.py`` sweeps them)."""
    if triton is None or x.dim() != 4 or weight.shape[2:] != (3, 3):
        return None
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    if c_in not in _CHANNELS or c_out not in _CHANNELS or n * h * w * max(c_in, c_out) >= 2**31:
        return None
    if x.is_cuda and x.dtype not in (torch.bfloat16, torch.float16):
        return None  # fp32 products on CUDA cores: cuDNN's convolution is the faster one
    if residual is not None and residual.shape != (n, c_out, h, w):
        return None
    x = x.contiguous(memory_format=torch.channels_last)
    wt = weight.to(x.dtype).permute(2, 3, 1, 0).contiguous()  # [3, 3, C_in, C_out]
    b = bias.float().contiguous()
    y = torch.empty((n, c_out, h, w), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    r = y if residual is None else residual.contiguous(memory_format=torch.channels_last)
    npix = n * h * w
    args = (x, wt, b, r, y, npix, h, w)
    flags = {"C_IN": c_in, "C_OUT": c_out, "HAS_RES": residual is not None, "RELU": relu,
             "IEEE": x.dtype == torch.float32}
    if config is not None:
        cfg = dict(config)
        grid = (triton.cdiv(npix, cfg["BLOCK_M"]),)
        _conv3x3_kernel[grid](*args, **flags, **cfg)
    elif x.is_cuda:
        _conv3x3_tuned[lambda meta: (triton.cdiv(npix, meta["BLOCK_M"]),)](*args, **flags)
    else:  # Triton's interpreter (tests)
        _conv3x3_kernel[(triton.cdiv(npix, 64),)](*args, **flags, BLOCK_M=64)
    return y


def check_kernel(device: str | torch.device, dtype: torch.dtype = torch.bfloat16) -> str | None:
    """None if the Triton kernel agrees with PyTorch on a small case (16 -> 32 channels,
    odd image size, residual and ReLU) in ``dtype`` on ``device``, else why not. Catches
    a Triton, driver or GPU that compiles the kernel wrongly before any point is
    evaluated with it (a fixed launch: no autotuning on the small case)."""
    g = torch.Generator().manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(2, 16, 9, 7, generator=g).to(device, dtype).contiguous(memory_format=cl)
    w = (torch.randn(32, 16, 3, 3, generator=g) / 12).to(device)
    b = torch.randn(32, generator=g).to(device)
    r = torch.randn(2, 32, 9, 7, generator=g).to(device, dtype).contiguous(memory_format=cl)
    try:
        got = _launch(x, w, b, r, True, config={"BLOCK_M": 64, "PIPELINE": 3, "num_warps": 4})
    except Exception as err:  # noqa: BLE001 - reported as the reason
        return f"the Triton kernel fails ({type(err).__name__}: {err})"
    if got is None:
        return f"the Triton kernel does not run on {dtype} tensors on {device}"
    ref = _reference(x, w, b, r, True)
    if not torch.allclose(got.float(), ref.float(), rtol=2e-2, atol=2e-2):
        err = float((got.float() - ref.float()).abs().max())
        return f"the Triton kernel's output differs from PyTorch's (max abs diff {err:.3g})"
    return None


@torch.library.custom_op("lossatlas::conv3x3_act", mutates_args=())
def conv3x3_act(x: Tensor, weight: Tensor, bias: Tensor, residual: Tensor | None,
                relu: bool) -> Tensor:
    """``relu?(conv2d(x, weight, padding=1) + bias (+ residual))``, channels-last.

    ``x`` [N, C_in, H, W]; ``weight`` [C_out, C_in, 3, 3] and ``bias`` [C_out] (cast to
    ``x``'s dtype / fp32); ``residual`` None or [N, C_out, H, W]. The sum is formed in
    fp32 and rounded once to ``x.dtype``. Returns Tensor[N, C_out, H, W] (channels-last).
    On CUDA with Triton, in bf16 or fp16, the fused kernel runs; otherwise PyTorch's
    convolution.
    """
    out = _launch(x, weight, bias, residual, relu) if x.is_cuda else None
    return _reference(x, weight, bias, residual, relu) if out is None else out


@conv3x3_act.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor, residual: Tensor | None, relu: bool) -> Tensor:
    n, _, h, w = x.shape
    return torch.empty((n, weight.shape[0], h, w), device=x.device, dtype=x.dtype,
                       memory_format=torch.channels_last)


_RELUS = (F.relu, torch.relu, torch.nn.functional.relu)


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_function" and node.target in _RELUS:
        return not node.kwargs.get("inplace", False) and len(node.args) == 1
    if node.op == "call_method" and node.target == "relu":
        return len(node.args) == 1
    return node.op == "call_module" and type(modules.get(node.target)) is nn.ReLU


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in (operator.add, torch.add)
            and len(node.args) == 2 and not node.kwargs)


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def fuse_conv_epilogues(gm: fx.GraphModule) -> int:
    """Rewrite ``gm`` in place: each supported 3x3 convolution (:func:`supports_conv`),
    with the residual add and the ReLU that follow it when they do, becomes one
    :func:`conv3x3_act` call reading the convolution's ``weight`` / ``bias`` attributes
    (so ``functional_call`` substitutes a point's tensors as before).

    Returns the number of convolutions fused (0: ``gm`` is unchanged).
    """
    modules = dict(gm.named_modules())
    fused = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or supports_conv(modules[node.target]) is not None:
            continue
        if len(node.args) != 1 or node.kwargs:
            continue
        chain, residual, relu = [node], None, False
        user = _only_user(node)
        if user is not None and _is_add(user):
            other = user.args[1] if user.args[0] is node else user.args[0]
            if isinstance(other, fx.Node) and other is not node:
                chain.append(user)
                residual = other
                user = _only_user(user)
        if user is not None and _is_relu(user, modules):
            chain.append(user)
            relu = True
        with gm.graph.inserting_before(node):
            w = gm.graph.get_attr(f"{node.target}.weight")
            b = gm.graph.get_attr(f"{node.target}.bias")
        with gm.graph.inserting_after(chain[-1]):
            new = gm.graph.call_function(torch.ops.lossatlas.conv3x3_act.default, (node.args[0], w, b, residual, relu))
        chain[-1].replace_all_uses_with(new)
        for dead in reversed(chain):
            gm.graph.erase_node(dead)
        fused += 1
    if fused:
        gm.graph.lint()
        gm.recompile()
    return fused
