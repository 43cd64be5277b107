"""Fused Triton kernel for the commonest MLP case: Linear-ReLU-Linear-ReLU-Linear + cross-entropy.

For P points and n samples the whole forward and the loss run in one kernel; no
activation ever leaves the chip. One program takes a tile of ``BM`` samples of one
point and, for each block of ``BN`` second-layer units:

- recomputes the first layer ``relu(x W1^T + b1)`` in ``BK``-wide slices (the
  input is 40-128 wide, so this is cheap) and accumulates the second layer;
- applies bias + ReLU and multiplies into the (padded) logits.

Then it computes cross-entropy and arg-max correctness per sample and adds the
tile's sums to ``loss[p]`` / ``correct[p]`` (atomics). Inputs and weights are
bf16, accumulation fp32 (as under bf16 autocast). CUDA only (or the Triton
interpreter, for tests).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .mlp import MLPPlan

__all__ = ["fused_mlp_ce", "supports"]

try:  # Triton is optional: CPU installs usually lack it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]


def _pad(n: int, lo: int = 16) -> int:
    return max(lo, 1 << (int(n) - 1).bit_length())


def supports(plan: MLPPlan) -> str | None:
    """None if the fused kernel handles ``plan``, else why not."""
    if triton is None:
        return "Triton is not installed"
    if len(plan.linears) != 3:
        return "the kernel handles exactly two hidden layers"
    if plan.acts[0] != (("relu", None),) or plan.acts[1] != (("relu", None),) or plan.acts[2]:
        return "the kernel handles ReLU after each hidden layer and none after the last"
    k0, h1, h2, c = plan.widths
    if k0 > 128 or c > 64 or h1 % 64 or h2 % 128:
        return "widths out of range (in <= 128, hidden multiples of 64/128, classes <= 64)"
    return None


if triton is not None:

    @triton.jit
    def _mlp3_ce_kernel(X, W1, B1, W2, B2, W3, B3, Y, LOSS, CORR, n,
                        K0P: tl.constexpr, H1: tl.constexpr, H2: tl.constexpr,
                        C: tl.constexpr, CP: tl.constexpr,
                        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        pid_m = tl.program_id(0)
        p = tl.program_id(1).to(tl.int64)
        rm = pid_m * BM + tl.arange(0, BM)
        row_ok = rm < n
        r0 = tl.arange(0, K0P)
        rc = tl.arange(0, CP)
        x = tl.load(X + rm[:, None] * K0P + r0[None, :], mask=row_ok[:, None], other=0.0)
        logits = tl.zeros([BM, CP], dtype=tl.float32)
        for j in range(0, H2, BN):
            rj = j + tl.arange(0, BN)
            acc = tl.zeros([BM, BN], dtype=tl.float32)
            for k in range(0, H1, BK):
                rk = k + tl.arange(0, BK)
                w1 = tl.load(W1 + p * H1 * K0P + rk[None, :] * K0P + r0[:, None])  # [K0P, BK]
                h1 = tl.dot(x, w1)
                h1 = tl.maximum(h1 + tl.load(B1 + p * H1 + rk)[None, :], 0.0).to(W2.dtype.element_ty)
                w2 = tl.load(W2 + p * H2 * H1 + rj[None, :] * H1 + rk[:, None])  # [BK, BN]
                acc = tl.dot(h1, w2, acc)
            h2 = tl.maximum(acc + tl.load(B2 + p * H2 + rj)[None, :], 0.0).to(W3.dtype.element_ty)
            w3 = tl.load(W3 + p * CP * H2 + rc[None, :] * H2 + rj[:, None])  # [BN, CP]
            logits = tl.dot(h2, w3, logits)
        logits = logits + tl.load(B3 + p * CP + rc)[None, :]
        logits = tl.where((rc < C)[None, :], logits, float("-inf"))
        mx = tl.max(logits, 1)
        lse = mx + tl.log(tl.sum(tl.exp(logits - mx[:, None]), 1))
        yv = tl.load(Y + rm, mask=row_ok, other=0)
        tgt = tl.sum(tl.where(rc[None, :] == yv[:, None], logits, 0.0), 1)
        loss = tl.where(row_ok, lse - tgt, 0.0)
        pred = tl.min(tl.where(logits == mx[:, None], rc[None, :], CP), 1)
        corr = tl.where(row_ok & (pred == yv), 1.0, 0.0)
        tl.atomic_add(LOSS + p, tl.sum(loss, 0))
        tl.atomic_add(CORR + p, tl.sum(corr, 0))

    _mlp3_ce_tuned = triton.autotune(
        configs=[
            triton.Config({"BM": 128, "BN": 128, "BK": 64}, num_warps=8, num_stages=3),
            triton.Config({"BM": 64, "BN": 256, "BK": 64}, num_warps=8, num_stages=3),
            triton.Config({"BM": 128, "BN": 256, "BK": 64}, num_warps=8, num_stages=2),
            triton.Config({"BM": 64, "BN": 128, "BK": 64}, num_warps=4, num_stages=3),
            triton.Config({"BM": 128, "BN": 128, "BK": 32}, num_warps=8, num_stages=4),
        ],
        key=["n", "H1", "H2"],
        reset_to_zero=["LOSS", "CORR"],
    )(_mlp3_ce_kernel)


def _weights(plan: MLPPlan, batched: Mapping[str, Tensor], fixed: Mapping[str, Tensor],
             P: int, i: int, pad_in: int, pad_out: int, dtype: torch.dtype
             ) -> tuple[Tensor, Tensor]:
    """Layer ``i``'s weight [P, out_pad, in_pad] (``dtype``) and bias [P, out_pad] (fp32)."""
    wn, bn, k, o = plan.linears[i]
    w = batched[wn] if wn in batched else fixed[wn].expand(P, o, k)
    if bn is None:
        b = torch.zeros(P, o, device=w.device)
    else:
        b = batched[bn] if bn in batched else fixed[bn].expand(P, o)
    if pad_in != k or pad_out != o:
        wp = torch.zeros(P, pad_out, pad_in, device=w.device, dtype=dtype)
        wp[:, :o, :k] = w
        bp = torch.zeros(P, pad_out, device=w.device)
        bp[:, :o] = b
        return wp, bp
    return w.to(dtype).contiguous(), b.float().contiguous()


def fused_mlp_ce(plan: MLPPlan, batched: Mapping[str, Tensor], fixed: Mapping[str, Tensor],
                 n_points: int, x: Tensor, y: Tensor, dtype: torch.dtype = torch.bfloat16
                 ) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy (nats) and number of correct arg-max predictions per point.

    Parameters
    ----------
    plan : MLPPlan accepted by :func:`supports`
    batched, fixed : per-point tensors [P, *shape] and shared tensors, by name
    n_points : P
    x : Tensor[n, *in_shape] (float), y : Tensor[n] (integer classes)
    dtype : inputs and weights in the matrix products (bf16; fp32 for interpreter tests)

    Returns
    -------
    (loss_sum, correct) : Tensor[P] each (fp32), sums over the n samples.
    """
    P, n = n_points, x.shape[0]
    k0, h1, h2, c = plan.widths
    k0p, cp = _pad(k0), _pad(c)
    xf = x.reshape(n, -1)
    xp = torch.zeros(n, k0p, device=x.device, dtype=dtype)
    xp[:, :k0] = xf
    w1, b1 = _weights(plan, batched, fixed, P, 0, k0p, h1, dtype)
    w2, b2 = _weights(plan, batched, fixed, P, 1, h1, h2, dtype)
    w3, b3 = _weights(plan, batched, fixed, P, 2, h2, cp, dtype)
    loss = torch.zeros(P, device=x.device)
    corr = torch.zeros(P, device=x.device)
    yy = y.to(torch.int32).contiguous()

    def grid(meta):
        return (triton.cdiv(n, meta["BM"]), P)

    args = (xp, w1, b1, w2, b2, w3, b3, yy, loss, corr, n)
    if x.is_cuda:
        _mlp3_ce_tuned[grid](*args, K0P=k0p, H1=h1, H2=h2, C=c, CP=cp)
    else:  # the Triton interpreter (tests): one fixed configuration
        _mlp3_ce_kernel[grid](*args, K0P=k0p, H1=h1, H2=h2, C=c, CP=cp, BM=64, BN=128, BK=64)
    return loss, corr
