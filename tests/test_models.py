"""Registry-parametrised smoke tests of the built-in models (a newly registered model is
tested here without writing a test), plus per-model checks."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from lossatlas import models

NAMES = models.list_models()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.create(name, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name: str) -> None:
    model = build(name).eval()
    x = model.example_input(5)
    out = model(x)
    assert out.dim() == 2 and out.shape[0] == 5 and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_init_deterministic_under_seed(name: str) -> None:
    a, b, c = build(name, 0), build(name, 0), build(name, 1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_stacked_parameters(name: str) -> None:
    members = [build(name, seed).eval() for seed in range(3)]
    params, buffers = stack_module_state(members)
    base = build(name, 99).eval()
    torch.manual_seed(123)
    x = base.example_input(4)

    def f(p, b):
        return functional_call(base, (p, b), (x,))

    batched = vmap(f)(params, buffers)
    separate = torch.stack([m(x) for m in members])
    torch.testing.assert_close(batched, separate, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    model = build(name)
    loss = model(model.example_input(2)).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mlp_benchmark_shape() -> None:
    model = build("mlp")
    widths = [(lin.in_features, lin.out_features) for lin in model.layers]
    assert widths == [(40, 512), (512, 512), (512, 10)]
    assert n_params(model) == 288_778
    assert build("mlp", in_features=64, hidden=(32,), activation="tanh")(
        torch.randn(3, 1, 8, 8)
    ).shape == (3, 10)
    with pytest.raises(ValueError, match="unknown activation 'relux'"):
        build("mlp", activation="relux")


def test_resnet_parameter_counts() -> None:
    r20, r56 = n_params(build("resnet20")), n_params(build("resnet56"))
    assert 0.25e6 < r20 < 0.30e6
    assert 0.80e6 < r56 < 0.90e6
    ratio = n_params(build("resnet20", width=2)) / r20
    assert 3.5 < ratio < 4.1


def test_resnet_option_b_shortcut_and_sizes() -> None:
    model = build("resnet20", in_channels=1, num_classes=7).eval()
    assert isinstance(model.layer2[0].shortcut[0], torch.nn.Conv2d)
    assert model.layer2[0].shortcut[0].kernel_size == (1, 1)
    assert len(model.layer1[0].shortcut) == 0
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 7)
    assert len(build("resnet56").layer3) == 9


def test_cnn_variants() -> None:
    cnn = build("cnn")
    assert cnn(torch.randn(3, 40)).shape == (3, 10)
    assert cnn(torch.randn(3, 1, 40)).shape == (3, 10)
    cnn2d = build("cnn2d")
    assert cnn2d(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert cnn2d(torch.randn(3, 64)).shape == (3, 10)
    assert build("cnn2d", image_size=32, in_channels=3, channels=(8, 8, 8))(
        torch.randn(2, 3, 32, 32)
    ).shape == (2, 10)
    with pytest.raises(ValueError, match="too short"):
        build("cnn", length=4, channels=(4, 4, 4))


def test_transformer_modular_shapes_and_options() -> None:
    model = build("transformer", p=11, d_model=32, num_heads=4, num_layers=2, norm="pre")
    x = torch.tensor([[1, 2, 11], [3, 4, 11]])
    assert x.dtype == torch.int64 and model(x).shape == (2, 11)
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    assert len(model.blocks) == 2
    # causal: the first position's output cannot depend on later tokens
    h = model.embed(x) + model.pos_embed
    y1 = model.blocks[0].attn(h)
    h2 = h.clone()
    h2[:, 1:] += 1.0
    y2 = model.blocks[0].attn(h2)
    torch.testing.assert_close(y1[:, 0], y2[:, 0])
    with pytest.raises(ValueError, match="divisible"):
        build("transformer", d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="norm must be"):
        build("transformer", norm="post")
