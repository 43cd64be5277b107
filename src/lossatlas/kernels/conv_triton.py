"""Fused 3x3 convolution on channels-last activations: bias, residual add and ReLU in one pass.

A CIFAR ResNet spends most of a point's time in its 16-64-channel 3x3 convolutions
and in the separate passes that follow each one (bias, ReLU, the residual add), each a
read and a write of an activation as large as the input batch. With BatchNorm folded
into the convolutions (:mod:`lossatlas.kernels.bnfold`) a whole ``conv -> +bias ->
(+residual) -> ReLU`` chain becomes one kernel here:

- the tap loop: one program takes ``BLOCK_M`` consecutive pixels (channels-last: a
  contiguous ``[BLOCK_M, C_in]`` tile) and, for each of the nine taps, the same tile
  shifted by ``dy * W + dx`` pixels (zero outside the image), multiplied by that tap's
  ``[C_in, C_out]`` weight slice on the tensor cores (fp32 accumulation); each input
  pixel is loaded nine times (through the caches);
- the row sweep (``ROWS=1``): one program takes a few whole images and walks down their
  rows; each input row is loaded once with its one-pixel left / right shifts and feeds
  three output rows (kernel rows 2, 1, 0 of the rows above, at and below it), kept as
  three running accumulators; each input pixel is loaded three times;
- either way the epilogue adds the bias, the residual tile and applies ReLU in fp32,
  writes the output once, rounded to the activation dtype, and (``STATS``) can also
  write each program's per-channel moments of what it wrote (count, mean, M2), merged
  by :func:`_launch_stats` into the batch's mean and variance
  (:mod:`lossatlas.kernels.bn_triton`).

:func:`fuse_conv_epilogues` rewrites a traced model so that every supported
convolution (3x3, stride 1, padding 1, 16/32/64 channels, with or without a bias) and
the ReLU / residual add after it call :func:`conv3x3_act`. It runs on CUDA in bf16/fp16
(or in Triton's interpreter, for tests); elsewhere the op computes the same thing with
PyTorch. Two backends use it: ``fast-bnfold-fused`` (BatchNorm folded into each
convolution: bias, residual add and ReLU fused) and ``fast-bnrecompute-triton`` (each
convolution followed by a BatchNorm with its batch's statistics: the convolution
alone, or with the statistics). :func:`check_kernel` compares the kernel with PyTorch
on a small case (both backends run it before using the kernel). Launches are autotuned
per shape among the tap loop's and the row sweep's configurations
(``bench/conv_fused.py`` sweeps them).
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
    return None


if triton is not None:

    @triton.jit
    def _product(a, Wt, t, ci, co, acc, C_IN: tl.constexpr, C_OUT: tl.constexpr,
                 IEEE: tl.constexpr):
        """``acc + a @ Wt[t]``: a pixel tile [M, C_IN] times tap ``t``'s [C_IN, C_OUT]
        weight slice on the tensor cores (IEEE fp32 products when ``IEEE``)."""
        w = tl.load(Wt + (t * C_IN + ci[:, None]) * C_OUT + co[None, :])
        if IEEE:
            return tl.dot(a, w, acc, input_precision="ieee")
        return tl.dot(a, w, acc)

    @triton.jit
    def _epilogue(acc, B, R, Y, pix, ok, co, C_OUT: tl.constexpr, HAS_BIAS: tl.constexpr,
                  HAS_RES: tl.constexpr, RELU: tl.constexpr):
        """Writes ``relu?(acc (+ bias) (+ residual))`` at output pixels ``pix`` where ``ok``."""
        if HAS_BIAS:
            acc = acc + tl.load(B + co)[None, :]
        out = pix[:, None] * C_OUT + co[None, :]
        if HAS_RES:
            acc = acc + tl.load(R + out, mask=ok[:, None], other=0.0).to(tl.float32)
        if RELU:
            acc = tl.maximum(acc, 0.0)
        val = acc.to(Y.dtype.element_ty)
        tl.store(Y + out, val, mask=ok[:, None])
        return val.to(tl.float32)

    @triton.jit
    def _moments(v, ok):
        """Count, mean and sum of squared deviations (M2) per column of the rows of ``v``
        where ``ok`` (two passes over the tile in registers)."""
        w = ok.to(tl.float32)
        n = tl.sum(w, axis=0)
        mean = tl.sum(v * w[:, None], axis=0) / tl.maximum(n, 1.0)
        d = (v - mean[None, :]) * w[:, None]
        return n, mean, tl.sum(d * d, axis=0)

    @triton.jit
    def _chan(n, mean, m2, n_b, mean_b, m2_b):
        """Two (count, mean, M2) summaries merged into one (Chan, Golub and LeVeque's
        pairwise update; exact, no cancellation between large sums)."""
        tot = n + n_b
        delta = mean_b - mean
        frac = n_b / tl.maximum(tot, 1.0)
        return tot, mean + delta * frac, m2 + m2_b + delta * delta * n * frac

    @triton.jit
    def _merge(n, mean, m2, v, ok):
        """The running (count, mean, M2) merged with those of the rows of ``v`` where ``ok``."""
        n_t, mean_t, m2_t = _moments(v, ok)
        return _chan(n, mean, m2, n_t, mean_t, m2_t)

    @triton.jit
    def _store_moments(S, mean, m2, co, C_OUT: tl.constexpr):
        """This program's per-channel mean and M2, row ``program_id`` of S [P, 2, C_OUT]."""
        base = S + tl.program_id(0) * 2 * C_OUT
        tl.store(base + co, mean)
        tl.store(base + C_OUT + co, m2)

    @triton.jit
    def _combine_kernel(S, MEAN, VAR, P, STEP, TOTAL, C: tl.constexpr, BLOCK_P: tl.constexpr):
        """MEAN, VAR [C] (biased) of ``TOTAL`` values from the moments S [P, 2, C] of P
        programs of ``STEP`` values each (the last one the rest): blocks of programs'
        moments merged exactly, one block after another (one program, no host sync)."""
        c = tl.arange(0, C)
        count = tl.full([], 0.0, tl.float32)
        mean = tl.zeros([C], dtype=tl.float32)
        m2 = tl.zeros([C], dtype=tl.float32)
        for start in range(0, P, BLOCK_P):
            p = start + tl.arange(0, BLOCK_P)
            ok = p < P
            n_p = tl.where(ok, tl.minimum(STEP, TOTAL - p * STEP), 0).to(tl.float32)
            at = S + p[:, None] * 2 * C + c[None, :]
            mean_p = tl.load(at, mask=ok[:, None], other=0.0)
            m2_p = tl.load(at + C, mask=ok[:, None], other=0.0)
            n_b = tl.sum(n_p, axis=0)
            mean_b = tl.sum(mean_p * n_p[:, None], axis=0) / tl.maximum(n_b, 1.0)
            d = mean_p - mean_b[None, :]
            m2_b = tl.sum(m2_p, axis=0) + tl.sum(d * d * n_p[:, None], axis=0)
            count, mean, m2 = _chan(count, mean, m2, n_b, mean_b, m2_b)
        tl.store(MEAN + c, mean)
        tl.store(VAR + c, m2 / tl.maximum(count, 1.0))

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
        return _product(a, Wt, t, ci, co, acc, C_IN, C_OUT, IEEE)

    @triton.jit
    def _taps_block(X, Wt, B, R, Y, S, NPIX, H, W, C_IN: tl.constexpr, C_OUT: tl.constexpr,
                    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, RELU: tl.constexpr,
                    STATS: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                    PIPELINE: tl.constexpr):
        """One program: ``BLOCK_M`` consecutive output pixels, each of the nine taps
        loading its own shifted input tile."""
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # pixel in [0, N * H * W)
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
        val = _epilogue(acc, B, R, Y, rm, ok, co, C_OUT, HAS_BIAS, HAS_RES, RELU)
        if STATS:
            _, mean, m2 = _moments(val, ok)
            _store_moments(S, mean, m2, co, C_OUT)

    @triton.jit
    def _rows_block(X, Wt, B, R, Y, S, N, H, W, C_IN: tl.constexpr, C_OUT: tl.constexpr,
                    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, RELU: tl.constexpr,
                    STATS: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_W: tl.constexpr, PIPELINE: tl.constexpr):
        """One program: ``BLOCK_M // BLOCK_W`` whole images, swept row by row. Each input
        row is loaded once (with its two one-pixel shifts) and feeds kernel row 2 of the
        output row above it, row 1 of its own and row 0 of the one below: three running
        accumulators, the oldest written out (complete) at each step."""
        IMG: tl.constexpr = BLOCK_M // BLOCK_W
        m = tl.arange(0, BLOCK_M)
        img = tl.program_id(0) * IMG + m // BLOCK_W
        col = m % BLOCK_W
        ok = (img < N) & (col < W)
        left = ok & (col >= 1)
        right = ok & (col + 1 < W)
        ci = tl.arange(0, C_IN)
        co = tl.arange(0, C_OUT)
        above = tl.zeros([BLOCK_M, C_OUT], dtype=tl.float32)  # output row ih - 1
        here = tl.zeros([BLOCK_M, C_OUT], dtype=tl.float32)  # output row ih
        first = img * H * W + col  # pixel index of row 0 of each image
        count = tl.full([], 0.0, tl.float32)  # moments of the rows written so far (STATS)
        mean = tl.zeros([C_OUT], dtype=tl.float32)
        m2 = tl.zeros([C_OUT], dtype=tl.float32)
        for ih in tl.range(0, H, num_stages=PIPELINE):
            pix = first + ih * W
            src = X + pix[:, None] * C_IN + ci[None, :]
            a_l = tl.load(src - C_IN, mask=left[:, None], other=0.0)  # input column w - 1
            a_c = tl.load(src, mask=ok[:, None], other=0.0)
            a_r = tl.load(src + C_IN, mask=right[:, None], other=0.0)  # input column w + 1
            above = _product(a_l, Wt, 6, ci, co, above, C_IN, C_OUT, IEEE)
            above = _product(a_c, Wt, 7, ci, co, above, C_IN, C_OUT, IEEE)
            above = _product(a_r, Wt, 8, ci, co, above, C_IN, C_OUT, IEEE)
            here = _product(a_l, Wt, 3, ci, co, here, C_IN, C_OUT, IEEE)
            here = _product(a_c, Wt, 4, ci, co, here, C_IN, C_OUT, IEEE)
            here = _product(a_r, Wt, 5, ci, co, here, C_IN, C_OUT, IEEE)
            below = tl.zeros([BLOCK_M, C_OUT], dtype=tl.float32)
            below = _product(a_l, Wt, 0, ci, co, below, C_IN, C_OUT, IEEE)
            below = _product(a_c, Wt, 1, ci, co, below, C_IN, C_OUT, IEEE)
            below = _product(a_r, Wt, 2, ci, co, below, C_IN, C_OUT, IEEE)
            done = ok & (ih >= 1)
            val = _epilogue(above, B, R, Y, pix - W, done, co, C_OUT, HAS_BIAS, HAS_RES, RELU)
            if STATS:
                count, mean, m2 = _merge(count, mean, m2, val, done)
            above = here
            here = below
        val = _epilogue(above, B, R, Y, first + (H - 1) * W, ok, co, C_OUT, HAS_BIAS, HAS_RES,
                        RELU)
        if STATS:
            count, mean, m2 = _merge(count, mean, m2, val, ok)
            _store_moments(S, mean, m2, co, C_OUT)

    @triton.jit
    def _conv3x3_kernel(X, Wt, B, R, Y, S, NPIX, N, H, W,
                        C_IN: tl.constexpr, C_OUT: tl.constexpr, HAS_BIAS: tl.constexpr,
                        HAS_RES: tl.constexpr, RELU: tl.constexpr, STATS: tl.constexpr,
                        IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr,
                        ROWS: tl.constexpr = 0, PIPELINE: tl.constexpr = 0):
        """The output Y = relu?(conv(X) (+ B) (+ R)); with STATS each program's per-channel
        mean and M2 of the values written, in S [programs, 2, C_OUT]."""
        if ROWS:
            _rows_block(X, Wt, B, R, Y, S, N, H, W, C_IN, C_OUT, HAS_BIAS, HAS_RES, RELU,
                        STATS, IEEE, BLOCK_M, BLOCK_W, PIPELINE)
        else:
            _taps_block(X, Wt, B, R, Y, S, NPIX, H, W, C_IN, C_OUT, HAS_BIAS, HAS_RES, RELU,
                        STATS, IEEE, BLOCK_M, PIPELINE)

    def _whole_rows_fit(configs, named_args, **kwargs):
        """The autotuner's candidates for this shape: the row sweep only where a program's
        ``BLOCK_M`` pixels hold at least one whole (padded) image row."""
        bw = kwargs.get("BLOCK_W", named_args.get("BLOCK_W", 1))
        return [c for c in configs if not c.kwargs.get("ROWS") or c.kwargs["BLOCK_M"] >= bw]

    # candidates timed per shape: the fastest launches of the tap loop and of the row
    # sweep in an H200 sweep (bench/conv_fused.py, 10,000 CIFAR images; the best: rows,
    # 64-128 pixels, 2 warps at 16 and 32 channels, taps, 128 pixels at 64 channels)
    _conv3x3_tuned = triton.autotune(
        configs=[
            triton.Config({"BLOCK_M": bm, "PIPELINE": 3}, num_warps=nw, num_stages=2)
            for bm, nw in ((64, 4), (128, 4), (128, 8), (256, 4))
        ] + [
            triton.Config({"BLOCK_M": bm, "ROWS": 1, "PIPELINE": p}, num_warps=nw, num_stages=2)
            for bm, nw, p in ((64, 2, 3), (128, 2, 3), (128, 4, 2), (128, 8, 2))
        ],
        key=["C_IN", "C_OUT", "H", "W", "HAS_BIAS", "HAS_RES", "RELU", "STATS"],
        prune_configs_by={"early_config_prune": _whole_rows_fit},
    )(_conv3x3_kernel)


def _grid(npix: int, n: int, block_w: int):
    """The launch grid for a kernel configuration ``meta``."""
    def grid(meta: dict) -> tuple[int]:
        if meta.get("ROWS"):
            return (triton.cdiv(n, meta["BLOCK_M"] // block_w),)
        return (triton.cdiv(npix, meta["BLOCK_M"]),)
    return grid


def _reference(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None,
               relu: bool) -> Tensor:
    """The same computation in PyTorch (fp32 epilogue, one rounding to ``x.dtype``)."""
    y = F.conv2d(x, weight.to(x.dtype), None, padding=1).float()
    if bias is not None:
        y = y + bias.float()[:, None, None]
    if residual is not None:
        y = y + residual.float()
    if relu:
        y = torch.relu(y)
    return y.to(x.dtype).contiguous(memory_format=torch.channels_last)


def _launch(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None,
            relu: bool, config: dict | None = None) -> Tensor | None:
    """The Triton kernel's output, or None when it cannot run on these tensors. On CUDA
    the autotuned launch, or ``config`` (BLOCK_M, ROWS, PIPELINE, num_warps, num_stages)
    when given (``bench/conv_fused.py`` sweeps them; None for a row sweep whose
    ``BLOCK_M`` is narrower than an image row)."""
    out = _run(x, weight, bias, residual, relu, config, stats=False)
    return None if out is None else out[0]


def _launch_stats(x: Tensor, weight: Tensor, config: dict | None = None
                  ) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(y, mean, var)``: the kernel's ``conv2d(x, weight, padding=1)`` (no bias) and the
    per-channel mean and biased variance (fp32) of the values it wrote, from each
    program's moments merged exactly on the device; None where the kernel cannot run."""
    out = _run(x, weight, None, None, False, config, stats=True)
    if out is None:
        return None
    y, (moments, programs, step, total) = out
    c = y.shape[1]
    mean = torch.empty(c, device=y.device, dtype=torch.float32)
    var = torch.empty_like(mean)
    _combine_kernel[(1,)](moments, mean, var, programs, step, total, C=c, BLOCK_P=64)
    return y, mean, var


def _program_pixels(npix: int, n: int, hw: int, block_w: int, meta: dict
                    ) -> tuple[int, int, int]:
    """``(programs, step, total)`` of launch ``meta``: each program covers ``step`` of
    the ``total`` output pixels (the last one the rest)."""
    step = (meta["BLOCK_M"] // block_w) * hw if meta.get("ROWS") else meta["BLOCK_M"]
    total = n * hw if meta.get("ROWS") else npix
    return triton.cdiv(total, step), step, total


def _run(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, relu: bool,
         config: dict | None, stats: bool) -> tuple[Tensor, tuple | None] | None:
    """One launch: the output and, with ``stats``, ``(moments, programs, step, total)``:
    the programs' moments [>= programs, 2, C_out] and :func:`_program_pixels`; None when
    the kernel cannot run."""
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
    block_w = triton.next_power_of_2(w)
    if config is not None and config.get("ROWS") and config["BLOCK_M"] < block_w:
        return None
    x = x.contiguous(memory_format=torch.channels_last)
    wt = weight.to(x.dtype).permute(2, 3, 1, 0).contiguous()  # [3, 3, C_in, C_out]
    y = torch.empty((n, c_out, h, w), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    b = y if bias is None else bias.float().contiguous()
    r = y if residual is None else residual.contiguous(memory_format=torch.channels_last)
    npix = n * h * w
    # room for the moments of the launch with the most programs (the smallest block)
    s = torch.empty((triton.cdiv(npix, 32) + n, 2, c_out) if stats else (1,),
                    device=x.device, dtype=torch.float32)
    args = (x, wt, b, r, y, s, npix, n, h, w)
    flags = {"C_IN": c_in, "C_OUT": c_out, "HAS_BIAS": bias is not None,
             "HAS_RES": residual is not None, "RELU": relu, "STATS": stats,
             "IEEE": x.dtype == torch.float32, "BLOCK_W": block_w}
    grid = _grid(npix, n, block_w)
    if config is not None:
        cfg = dict(config)
        if cfg.get("ROWS"):
            cfg.setdefault("PIPELINE", 2)
    elif x.is_cuda:
        _conv3x3_tuned[grid](*args, **flags)
        cfg = dict(_conv3x3_tuned.best_config.kwargs)
    else:  # Triton's interpreter (tests)
        cfg = {"BLOCK_M": 64}
    if config is not None or not x.is_cuda:
        _conv3x3_kernel[grid(cfg)](*args, **flags, **cfg)
    if not stats:
        return y, None
    return y, (s, *_program_pixels(npix, n, h * w, block_w, cfg))


def check_kernel(device: str | torch.device, dtype: torch.dtype = torch.bfloat16) -> str | None:
    """None if the Triton kernel agrees with PyTorch on a small case (16 -> 32 channels,
    odd image size, residual and ReLU; and without them, with its output's per-channel
    mean and variance) in ``dtype`` on ``device``, else why not. Catches
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
    try:  # the row sweep with output statistics (two images per program)
        stats = _launch_stats(x, w, config={"BLOCK_M": 16, "ROWS": 1, "num_warps": 4})
    except Exception as err:  # noqa: BLE001 - reported as the reason
        return f"the Triton kernel with statistics fails ({type(err).__name__}: {err})"
    if stats is None:
        return f"the Triton kernel with statistics does not run on {dtype} on {device}"
    y, mean, var = stats
    ref_y = _reference(x, w, None, None, False).float()
    ref_var, ref_mean = torch.var_mean(y.float(), dim=(0, 2, 3), unbiased=False)
    if not (torch.allclose(y.float(), ref_y, rtol=2e-2, atol=2e-2)
            and torch.allclose(mean, ref_mean, rtol=1e-4, atol=1e-5)
            and torch.allclose(var, ref_var, rtol=1e-4, atol=1e-5)):
        return "the Triton kernel's output statistics differ from PyTorch's"
    return None


@torch.library.custom_op("lossatlas::conv3x3_act", mutates_args=())
def conv3x3_act(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None,
                relu: bool) -> Tensor:
    """``relu?(conv2d(x, weight, padding=1) (+ bias) (+ residual))``, channels-last.

    ``x`` [N, C_in, H, W]; ``weight`` [C_out, C_in, 3, 3] and ``bias`` None or [C_out]
    (cast to ``x``'s dtype / fp32); ``residual`` None or [N, C_out, H, W]. The sum is formed in
    fp32 and rounded once to ``x.dtype``. Returns Tensor[N, C_out, H, W] (channels-last).
    On CUDA with Triton, in bf16 or fp16, the fused kernel runs; otherwise PyTorch's
    convolution.
    """
    out = _launch(x, weight, bias, residual, relu) if x.is_cuda else None
    return _reference(x, weight, bias, residual, relu) if out is None else out


@conv3x3_act.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None,
      relu: bool) -> Tensor:
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


def _epilogue_chain(node: fx.Node, modules: dict[str, nn.Module]
                    ) -> tuple[list[fx.Node], fx.Node | None, bool]:
    """``(chain, residual, relu)``: ``node`` with the residual add (of another node,
    ``residual``) and the ReLU that follow it, each where it is ``node``'s (or the add's)
    only user."""
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
    return chain, residual, relu


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
        chain, residual, relu = _epilogue_chain(node, modules)
        with gm.graph.inserting_before(node):
            w = gm.graph.get_attr(f"{node.target}.weight")
            b = (gm.graph.get_attr(f"{node.target}.bias")
                 if modules[node.target].bias is not None else None)
        with gm.graph.inserting_after(chain[-1]):
            new = gm.graph.call_function(torch.ops.lossatlas.conv3x3_act.default,
                                         (node.args[0], w, b, residual, relu))
        chain[-1].replace_all_uses_with(new)
        for dead in reversed(chain):
            gm.graph.erase_node(dead)
        fused += 1
    if fused:
        gm.graph.lint()
        gm.recompile()
    return fused
