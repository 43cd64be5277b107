"""slow_under_vmap_on_cpu: which operations a model calls that run slowly under vmap."""

import torch
from torch import nn

from lossatlas.vmap_ops import slow_under_vmap_on_cpu


class _Attn(nn.Module):
    def forward(self, x):
        q = x.unflatten(-1, (2, -1)).transpose(1, 2)
        return nn.functional.scaled_dot_product_attention(q, q, q).transpose(1, 2).flatten(-2)


def test_finds_convolutions_and_attention_and_nothing_else():
    img = torch.randn(2, 1, 6, 6)
    assert slow_under_vmap_on_cpu(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), img) == [
        "convolutions"]
    assert slow_under_vmap_on_cpu(nn.Conv1d(1, 2, 3), torch.randn(2, 1, 8)) == ["convolutions"]
    assert slow_under_vmap_on_cpu(_Attn(), torch.randn(2, 5, 8)) == ["attention"]
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    assert slow_under_vmap_on_cpu(mha, "not run") == ["attention"]  # by its type
    both = nn.Sequential(nn.Conv1d(5, 5, 1), _Attn())
    assert slow_under_vmap_on_cpu(both, torch.randn(2, 5, 8)) == ["attention", "convolutions"]
    from lossatlas.models.transformer import ModularTransformer

    written_out = ModularTransformer(p=7, d_model=8, num_heads=2)  # q k^T, softmax, @ v
    assert slow_under_vmap_on_cpu(written_out, torch.randint(0, 7, (2, 3))) == ["softmax"]
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert slow_under_vmap_on_cpu(mlp, torch.randn(2, 4)) == []
    assert slow_under_vmap_on_cpu(mlp, torch.randn(2, 5)) == []  # a failing model: nothing
