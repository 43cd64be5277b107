"""A GPT-2-style decoder for the benchmarks; imports only torch.

Shared by ``bench/transformer_slice.py`` and ``bench/_peers/landscaper_runner.py`` (which
runs in landscaper's own environment, without lossatlas's dependencies, and loads this
file by path).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention ``[n, T, d] -> [n, T, d]`` through SDPA."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).unbind(-3)
        q, k, v = (t.transpose(-3, -2) for t in (q, k, v))  # [n, H, T, d_head]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(-3, -2).flatten(-2))


class Block(nn.Module):
    """Pre-LN transformer block ``[n, T, d] -> [n, T, d]`` (attention, then a GELU MLP)."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, num_heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """GPT-2-style decoder: ``LongTensor[n, T] -> logits Tensor[n, T, vocab]``."""

    def __init__(self, vocab: int, d_model: int, num_heads: int, num_layers: int,
                 context: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, num_heads) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied, as GPT-2
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * num_layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[-1]
        h = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


class FlatLogits(nn.Module):
    """``[n * T, vocab]`` logits for losses that take one class axis (loss-landscapes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: Tensor) -> Tensor:
        out = self.model(idx)
        return out.reshape(-1, out.shape[-1])
