"""A small transformer for modular arithmetic (grokking), written with plain layers.

Attention is built from `nn.Linear` and tensor ops (no `nn.MultiheadAttention`), so
`torch.func.functional_call` + `vmap` over stacked parameters work. Defaults follow the
one-layer grokking model of Nanda et al. (2023): d_model 128, 4 heads, MLP 512, ReLU,
no LayerNorm; ``norm="pre"`` gives pre-LN blocks and a final LayerNorm instead.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lossatlas.models._factory import MODELS
from lossatlas.models.mlp import make_activation

__all__ = ["ModularTransformer", "transformer"]


class Attention(nn.Module):
    """Causal multi-head self-attention ``[N, T, d_model] -> [N, T, d_model]``."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(
                f"ModularTransformer: d_model {d_model} must be divisible by num_heads {num_heads}"
            )
        self.num_heads, self.d_head = num_heads, d_model // num_heads
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.o = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[-2]
        # [N, T, D] -> [N, H, T, d_head]
        q, k, v = (
            proj(x).unflatten(-1, (self.num_heads, self.d_head)).transpose(-3, -2)
            for proj in (self.q, self.k, self.v)
        )
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # [N, H, T, T]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        out = scores.softmax(dim=-1) @ v  # [N, H, T, d_head]
        return self.o(out.transpose(-3, -2).flatten(-2))


class Block(nn.Module):
    """Residual block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, d_model: int, num_heads: int, d_mlp: int, norm: str, act: str) -> None:
        super().__init__()
        make_norm = (lambda: nn.LayerNorm(d_model)) if norm == "pre" else nn.Identity
        self.ln1, self.ln2 = make_norm(), make_norm()
        self.attn = Attention(d_model, num_heads)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_mlp), make_activation(act), nn.Linear(d_mlp, d_model)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ModularTransformer(nn.Module):
    """Transformer over token sequences ``a, b, =`` predicting ``a op b mod p``.

    Input ``LongTensor[N, seq_len]`` with tokens in ``[0, p]`` (``p`` is ``'='``); output
    logits ``Tensor[N, p]`` read from the last position.
    """

    def __init__(
        self,
        p: int = 97,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 1,
        d_mlp: int = 512,
        norm: str = "none",
        activation: str = "relu",
        seq_len: int = 3,
    ) -> None:
        super().__init__()
        if norm not in ("none", "pre"):
            raise ValueError(f"ModularTransformer: norm must be 'none' or 'pre', got {norm!r}")
        self.p, self.seq_len = int(p), int(seq_len)
        self.embed = nn.Embedding(self.p + 1, d_model)
        self.pos_embed = nn.Parameter(torch.empty(self.seq_len, d_model))
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, d_mlp, norm, activation) for _ in range(num_layers)
        )
        self.ln_final = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.unembed = nn.Linear(d_model, self.p, bias=False)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)
        nn.init.normal_(self.pos_embed, std=d_model**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x) + self.pos_embed[: x.shape[-1]]  # [N, T, D]
        for block in self.blocks:
            h = block(h)
        return self.unembed(self.ln_final(h[..., -1, :]))

    def example_input(self, batch_size: int = 2) -> Tensor:
        """Random ``LongTensor[batch_size, 3]`` of ``a, b, '='`` tokens."""
        ab = torch.randint(0, self.p, (batch_size, 2))
        return torch.cat([ab, torch.full((batch_size, 1), self.p)], dim=1)


@MODELS.register()
def transformer(
    p: int = 97,
    d_model: int = 128,
    num_heads: int = 4,
    num_layers: int = 1,
    d_mlp: int = 512,
    norm: str = "none",
    activation: str = "relu",
) -> ModularTransformer:
    """Modular-arithmetic transformer: ``LongTensor[N, 3] -> Tensor[N, p]``."""
    return ModularTransformer(p, d_model, num_heads, num_layers, d_mlp, norm, activation)
