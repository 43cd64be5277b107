"""Example inputs inferred for tracing: plain Sequential MLPs / CNNs and custom classes
without ``example_input()`` align with no extra argument; explicit inputs and data win."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossatlas.batches import TensorData
from lossatlas.symmetry import (
    SpecWarning,
    activation_matching,
    align,
    infer_example_input,
    permutation_spec,
    permute_model,
    random_permutation,
    rescale_canonical,
    weight_matching,
)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 20), nn.ReLU(),
                         nn.Linear(20, 5))


def _bn_cnn() -> nn.Module:
    """Conv-BN-ReLU x2 with pooling, whose Linear head only fits 28x28 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 7 * 7, 10),
    )


class CustomCNN(nn.Module):
    """A CNN class without an ``example_input`` method (head built for 16x16 images)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12 * 8 * 8, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class FlatInputCNN(nn.Module):
    """Takes flat 40-feature rows and views them as 5x8 images: no input shaped after
    one of its layers runs through it, so it needs data (or an explicit input)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 5 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x.view(x.shape[0], 1, 5, 8)))
        return self.fc(x.flatten(1))


BUILDERS = {"sequential_mlp": _mlp, "sequential_bn_cnn": _bn_cnn, "custom_cnn": CustomCNN}


def _randomised(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm affine parameters and running statistics (eval mode)."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen))
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    return model.eval()


def _input_for(name: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    shape = {"sequential_mlp": (6, 12), "sequential_bn_cnn": (6, 1, 28, 28),
             "custom_cnn": (6, 3, 16, 16)}[name]
    return torch.randn(*shape, generator=gen)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_weight_matching_recovers_a_permuted_copy_without_an_example_input(name):
    torch.manual_seed(0)
    model = _randomised(BUILDERS[name]())
    assert not hasattr(model, "example_input")
    spec = permutation_spec(model)
    assert len(spec.groups) == 2  # the two hidden layers; the output stays fixed
    perms = random_permutation(spec, torch.Generator().manual_seed(1))
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    permuted = permute_model(model, spec, perms)
    ref = model.state_dict()
    assert any(not torch.equal(ref[k], v) for k, v in permuted.state_dict().items())

    aligned = weight_matching(model, permuted)

    for k, v in aligned.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-6, atol=1e-6, msg=k)
    x = _input_for(name)
    with torch.no_grad():
        torch.testing.assert_close(aligned.eval()(x), model(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(permuted.eval()(x), model(x), rtol=1e-5, atol=1e-5)


def test_inferred_spatial_size_is_the_one_the_linear_head_fits():
    x = infer_example_input(_bn_cnn())
    assert x.shape == (2, 1, 28, 28) and x.dtype == torch.float32
    assert infer_example_input(CustomCNN(), batch_size=3).shape == (3, 3, 16, 16)
    conv1d = nn.Sequential(nn.Conv1d(4, 6, 5), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 60, 2))
    assert infer_example_input(conv1d).shape == (2, 4, 64)
    conv3d = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.Flatten(),
                           nn.Linear(3 * 8 * 8 * 8, 2))
    assert infer_example_input(conv3d).shape == (2, 2, 8, 8, 8)
    assert infer_example_input(_mlp()).shape == (2, 12)


def test_inferred_input_follows_the_model_dtype_and_leaves_its_state_alone():
    model = _randomised(_bn_cnn()).double()
    model[1].train()  # one BatchNorm in train mode: its statistics must not move
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = infer_example_input(model)
    assert x.dtype == torch.float64 and x.shape == (2, 1, 28, 28)
    assert model[1].training and not model[5].training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_embedding_model_gets_integer_tokens():
    model = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(16 * 8, 4))
    x = infer_example_input(model)
    assert x.dtype == torch.long and x.shape == (2, 16)
    assert int(x.min()) >= 0 and int(x.max()) < 50
    short = nn.Sequential(nn.Embedding(30, 4), nn.Flatten(), nn.Linear(8 * 4, 4))
    assert infer_example_input(short).shape == (2, 8)  # the head fixes the length


class NoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_no_usable_layer_gives_a_clear_error():
    with pytest.raises(ValueError, match=r"NoLayers.*example_input="):
        infer_example_input(NoLayers())
    with pytest.raises(ValueError, match=r"permutation_spec.*NoLayers.*example_input="):
        permutation_spec(NoLayers())
    with pytest.raises(ValueError, match=r"weight_matching.*FlatInputCNN.*Conv2d.*example_input="):
        weight_matching(FlatInputCNN(), FlatInputCNN())
    with pytest.raises(TypeError, match="list"):
        infer_example_input([nn.Linear(2, 2)])


def test_explicit_example_input_and_data_win_over_inference():
    torch.manual_seed(0)
    x = torch.randn(32, 40)
    y = torch.randint(0, 3, (32,))
    for data in ((x, y), TensorData(x, y), TensorDataset(x, y),
                 DataLoader(TensorDataset(x, y), batch_size=4), x):
        torch.testing.assert_close(infer_example_input(FlatInputCNN(), data), x[:2])

    class WithOwn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(40, 2)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.fc(t)

        def example_input(self, n: int = 2) -> torch.Tensor:
            return torch.zeros(n, 40)

    assert torch.equal(infer_example_input(WithOwn(), batch_size=3), torch.zeros(3, 40))
    torch.testing.assert_close(infer_example_input(WithOwn(), (x, y)), x[:2])  # data first

    a, b = FlatInputCNN(), FlatInputCNN()
    spec = permutation_spec(a, x[:2])
    perms = random_permutation(spec, torch.Generator().manual_seed(2))
    permuted = permute_model(a, spec, perms)
    for aligned in (weight_matching(a, permuted, example_input=x[:2]),
                    weight_matching(a, permuted, data=(x, y)),
                    activation_matching(a, permuted, (x, y)),
                    align(a, permuted, data=(x, y))[1]):
        for k, v in aligned.state_dict().items():
            torch.testing.assert_close(v, a.state_dict()[k], msg=k)
    out = rescale_canonical(b, data=(x, y))
    with torch.no_grad():
        torch.testing.assert_close(out(x), b(x), rtol=1e-5, atol=1e-5)


def test_empty_data_is_refused_with_its_caller_named():
    loader = DataLoader(TensorDataset(torch.zeros(0, 4), torch.zeros(0)), batch_size=2)
    with pytest.raises(ValueError, match="permutation_spec data: the DataLoader yielded no"):
        permutation_spec(_mlp(), data=loader)
    with pytest.raises(ValueError, match="batch_size"):
        infer_example_input(_mlp(), batch_size=0)


class TinyTokenModel(nn.Module):
    """Token embeddings plus learned positions for at most 8 tokens, a residual MLP and
    a head on the mean; no example_input() method."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.pos = nn.Parameter(torch.randn(8, 16))
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos[: x.shape[-1]]
        h = h + self.mlp(h)
        return self.head(h.mean(1))


def test_token_model_without_example_input_traces_on_inferred_tokens():
    torch.manual_seed(0)
    model = TinyTokenModel().eval()
    x = infer_example_input(model)
    assert x.dtype == torch.long and x.shape == (2, 8)  # 16 tokens exceed the positions
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)  # nothing left out
        spec = permutation_spec(model)
    # the residual stream (embedding columns, the sliced position table, the MLP's output
    # rows, the head's columns) and the MLP's hidden units
    assert spec.sizes == {"embed": 16, "mlp.0": 32}
    assert ("pos", 1) in {(ax.name, ax.axis) for ax in spec.groups["embed"]}
    perms = random_permutation(spec, torch.Generator().manual_seed(4))
    permuted = permute_model(model, spec, perms)
    aligned = weight_matching(model, permuted)
    for k, v in aligned.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k], msg=k)
    tokens = torch.randint(0, 20, (5, 6))
    with torch.no_grad():
        torch.testing.assert_close(aligned(tokens), model(tokens))
