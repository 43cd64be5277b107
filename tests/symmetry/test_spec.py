"""Permutation specs from the fx graph: the self-test on every built-in model, wrong
specs detected, unsupported operations reported."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch
from torch import nn

from lossatlas import models
from lossatlas.symmetry import (
    SpecWarning,
    apply_permutation,
    check_spec,
    permutation_spec,
    random_permutation,
    spec_discrepancy,
)


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm parameters and statistics, so a missed BN tensor shows."""
    gen = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.data = torch.randn(m.weight.shape, generator=gen)
            m.bias.data = torch.randn(m.bias.shape, generator=gen)
            m.running_mean = torch.randn(m.running_mean.shape, generator=gen)
            m.running_var = torch.rand(m.running_var.shape, generator=gen) + 0.5
    return model.eval()


BUILTIN = {
    "mlp": {},
    "cnn": {},
    "cnn2d": {},
    "resnet20": {},
}


def _drop_one(spec, group, index):
    groups = dict(spec.groups)
    groups[group] = [ax for i, ax in enumerate(groups[group]) if i != index]
    return dataclasses.replace(spec, groups=groups)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_spec_self_test_on_builtin_models(name):
    torch.manual_seed(0)
    model = _randomise_bn(models.create(name, **BUILTIN[name]))
    x = model.example_input(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)  # built-in CNNs need no fallback
        spec = permutation_spec(model)
    assert len(spec) >= 2
    assert check_spec(model, spec, x)
    # every group of the largest size misses one tensor in turn: the check must fail
    for group in list(spec.groups)[:3]:
        for index in range(len(spec.groups[group])):
            wrong = _drop_one(spec, group, index)
            assert not check_spec(model, wrong, x), (group, spec.groups[group][index])


def test_resnet_residual_groups_are_tied():
    spec = permutation_spec(models.create("resnet20"))
    stage1 = next(g for g, axes in spec.groups.items()
                  if any(ax.name == "layer1.0.bn2.weight" for ax in axes))
    names = {ax.name for ax in spec.groups[stage1]}
    assert {"conv1.weight", "bn1.running_var", "layer1.2.bn2.bias", "layer2.0.conv1.weight",
            "layer2.0.shortcut.0.weight"} <= names
    stage2 = next(g for g, axes in spec.groups.items()
                  if any(ax.name == "layer2.0.shortcut.1.weight" for ax in axes))
    assert "layer2.0.bn2.weight" in {ax.name for ax in spec.groups[stage2]}
    assert len(spec) == 12  # 3 stage groups + 9 inner block groups
    assert "linear" in spec.fixed  # the output units are never permuted


def test_transformer_is_partial_with_warnings():
    model = models.create("transformer", d_model=32, num_heads=4, d_mlp=64, p=11)
    x = model.example_input(4)
    with pytest.warns(SpecWarning, match="unflatten"):
        spec = permutation_spec(model)
    # the residual stream (embedding, sliced position table, attention output and MLP
    # rows, unembedding columns) and the MLP hidden units; q / k / v split into heads by
    # unflatten stay fixed
    assert list(spec.groups) == ["embed", "blocks.0.mlp.0"]
    stream = {(ax.name, ax.axis) for ax in spec.groups["embed"]}
    assert {("embed.weight", 1), ("pos_embed", 1), ("blocks.0.attn.o.weight", 0),
            ("blocks.0.mlp.2.weight", 0), ("blocks.0.attn.q.weight", 1),
            ("unembed.weight", 1)} <= stream
    assert check_spec(model, spec, x)
    with pytest.raises(NotImplementedError, match="strict"):
        permutation_spec(model, strict=True)


class LNNet(nn.Module):
    """Conv -> flatten -> Linear -> LayerNorm -> GELU -> Linear, and a unit-splitting view."""

    def __init__(self, split: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 12)
        self.ln = nn.LayerNorm(12)
        self.out = nn.Linear(12, 3)
        self.split = split

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        h = nn.functional.gelu(self.ln(self.fc(h)))
        if self.split:
            h = h.view(h.shape[0], 3, 4).transpose(1, 2).reshape(h.shape[0], 12)
        return self.out(h)


def test_layernorm_flatten_and_unsupported_view():
    torch.manual_seed(0)
    model = LNNet().eval()
    x = torch.randn(5, 2, 4, 4)
    spec = permutation_spec(model, x)
    assert len(spec) == 2
    fc_axes = {(ax.name, ax.axis, ax.block) for ax in spec.groups["conv"]}
    assert ("fc.weight", 1, 16) in fc_axes  # each channel -> 16 consecutive columns
    assert {("ln.weight", 0, 1), ("ln.bias", 0, 1)} <= {
        (ax.name, ax.axis, ax.block) for ax in spec.groups["fc"]}
    assert check_spec(model, spec, x)
    split = LNNet(split=True).eval()
    with pytest.warns(SpecWarning, match="fc"):
        spec2 = permutation_spec(split, x)
    assert list(spec2.groups) == ["conv"] and check_spec(split, spec2, x)


def test_apply_permutation_inverse_and_errors():
    model = models.create("mlp", hidden=(8, 8))
    spec = permutation_spec(model)
    state = model.state_dict()
    perms = random_permutation(spec, torch.Generator().manual_seed(0))
    permuted = apply_permutation(spec, state, perms)
    assert not torch.equal(permuted["layers.0.weight"], state["layers.0.weight"])
    inverse = {g: torch.argsort(p) for g, p in perms.items()}
    back = apply_permutation(spec, permuted, inverse)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert spec_discrepancy(model, spec, model.example_input(3)) < 1e-5
    with pytest.raises(KeyError, match="no group"):
        apply_permutation(spec, state, {"nope": perms["layers.0"]})
    with pytest.raises(ValueError, match="shape"):
        apply_permutation(spec, state, {"layers.0": torch.arange(3)})


def test_an_unsupported_leaf_with_parameters_is_never_silent():
    """A layer without a rule (a per-channel nn.PReLU) holds units that are not permuted:
    a SpecWarning, and an error under strict=True, even when no group flows in."""
    model = nn.Sequential(nn.PReLU(5), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.randn(3, 5)
    with pytest.warns(SpecWarning, match="0 \\(PReLU\\)"):
        spec = permutation_spec(model, x)
    assert list(spec.groups) == ["1"]
    with pytest.raises(NotImplementedError, match="strict"):
        permutation_spec(model, x, strict=True)


def _randomise_affine(model: nn.Module) -> nn.Module:
    """Non-trivial norm weights and biases, so that a missed one shows."""
    gen = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, (nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            m.weight.data = torch.randn(m.weight.shape, generator=gen)
            m.bias.data = torch.randn(m.bias.shape, generator=gen)
    return model.eval()


class GNNet(nn.Module):
    """Conv -> GroupNorm(3 groups of 4) -> ReLU -> Conv -> GroupNorm(2 groups of 4),
    a residual branch whose GroupNorm has 4 groups of 2 (tied: blocks of lcm 4), flatten,
    Linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(2, 12, 3, padding=1), nn.GroupNorm(3, 12)
        self.c2, self.n2 = nn.Conv2d(12, 8, 3, padding=1), nn.GroupNorm(2, 8)
        self.c3, self.n3 = nn.Conv2d(12, 8, 1), nn.GroupNorm(4, 8)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        h = torch.relu(self.n1(self.c1(x)))
        h = torch.relu(self.n2(self.c2(h)) + self.n3(self.c3(h)))
        return self.fc(h.flatten(1))


def test_groupnorm_moves_whole_channel_groups():
    """A group reaching a GroupNorm becomes its channel groups (units of C / G channels);
    two GroupNorms tied by a residual add move blocks of the lcm of their group sizes;
    random permutations keep the function, while swapping two channels of different
    groups (a plain channel permutation) does not."""
    torch.manual_seed(0)
    model = _randomise_affine(GNNet())
    x = torch.randn(6, 2, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        spec = permutation_spec(model, x)
    assert spec.sizes == {"c1": 3, "c2": 2}
    axes = {(ax.name, ax.axis, ax.block) for ax in spec.groups["c1"]}
    assert {("c1.weight", 0, 4), ("n1.weight", 0, 4), ("c2.weight", 1, 4)} <= axes
    axes = {(ax.name, ax.axis, ax.block) for ax in spec.groups["c2"]}
    assert {("c2.weight", 0, 4), ("c3.weight", 0, 4), ("n3.bias", 0, 4),
            ("fc.weight", 1, 64)} <= axes
    assert check_spec(model, spec, x)
    swapped = GNNet()
    swapped.load_state_dict(model.state_dict())
    p = torch.arange(12)
    p[[0, 11]] = p[[11, 0]]  # channel 0 (group 0) <-> channel 11 (group 2)
    with torch.no_grad():
        for t in (swapped.c1.weight, swapped.c1.bias, swapped.n1.weight, swapped.n1.bias):
            t.copy_(t[p])
        for conv in (swapped.c2, swapped.c3):
            conv.weight.copy_(conv.weight[:, p])
        assert not torch.allclose(swapped.eval()(x), model(x), atol=1e-4)


class StreamEncoder(nn.Module):
    """A Linear writes the residual stream of two nn.TransformerEncoderLayers (post- and
    pre-LayerNorm), mean pooling, a head."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.inp = nn.Linear(5, d)
        self.l1 = nn.TransformerEncoderLayer(d, 4, 12, dropout=0.0, batch_first=True)
        self.l2 = nn.TransformerEncoderLayer(d, 2, 10, dropout=0.0, batch_first=True,
                                             norm_first=True, activation="gelu")
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        return self.head(self.l2(self.l1(self.inp(x))).mean(1))


def test_transformer_encoder_layer_ffn_and_residual_stream():
    """Each layer's feed-forward units and attention heads are groups; the residual
    stream written by the Linear passes through both layers (attention in/out
    projections, FFN, LayerNorms); random permutations keep the function; a permuted
    copy is matched back exactly."""
    from lossatlas.symmetry import permute_model, weight_matching

    torch.manual_seed(0)
    model = _randomise_affine(StreamEncoder())
    x = torch.randn(4, 6, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        spec = permutation_spec(model, x)
    assert spec.sizes == {"inp": 8, "l1.self_attn": 4, "l1.linear1": 12, "l2.self_attn": 2,
                          "l2.linear1": 10}
    heads = {(ax.name, ax.axis, ax.block, ax.segments) for ax in spec.groups["l1.self_attn"]}
    assert heads == {("l1.self_attn.in_proj_weight", 0, 2, 3), ("l1.self_attn.in_proj_bias", 0, 2, 3),
                     ("l1.self_attn.out_proj.weight", 1, 2, 1)}
    stream = {(ax.name, ax.axis) for ax in spec.groups["inp"]}
    for layer in ("l1", "l2"):
        assert {(f"{layer}.self_attn.in_proj_weight", 1), (f"{layer}.linear2.bias", 0),
                (f"{layer}.self_attn.out_proj.weight", 0), (f"{layer}.norm2.weight", 0),
                ("head.weight", 1)} <= stream
    assert check_spec(model, spec, x, tol=1e-5)
    perms = random_permutation(spec, torch.Generator().manual_seed(2))
    permuted = permute_model(model, spec, perms)
    aligned, found = weight_matching(model, permuted, example_input=x, return_perms=True)
    for k, v in aligned.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k], rtol=0, atol=0, msg=k)
    assert all(torch.equal(found[g], torch.argsort(p)) for g, p in perms.items())


def test_activation_matching_reads_inside_an_encoder_layer():
    """Activation matching takes the FFN units' activations at the layer's second Linear
    (through the unfused path) and undoes a permutation of them; the heads, which no
    module reads, are left out with a warning."""
    from lossatlas.symmetry import match_activations, permute_model

    torch.manual_seed(0)
    model = StreamEncoder().eval()
    x = torch.randn(64, 6, 5)
    spec = permutation_spec(model, x)
    perms = random_permutation(spec, torch.Generator().manual_seed(4))
    perms = {g: p if "self_attn" not in g else torch.arange(len(p)) for g, p in perms.items()}
    permuted = permute_model(model, spec, perms)
    with pytest.warns(UserWarning, match="no Linear/Conv reader"):
        found = match_activations(spec, model, permuted, (x, torch.zeros(64, dtype=torch.long)))
    assert set(found) == {g for g in spec.groups if "self_attn" not in g}
    for g in found:
        assert torch.equal(found[g], torch.argsort(perms[g])), g


class TokenEncoder(nn.Module):
    """Embedding + a learned position table, an nn.TransformerEncoderLayer, a head."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.emb = nn.Embedding(10, d)
        self.pos = nn.Parameter(torch.randn(5, d))
        self.layer = nn.TransformerEncoderLayer(d, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        return self.head(self.layer(self.emb(x) + self.pos).mean(1))


def test_embedding_and_position_table_start_the_residual_stream():
    """The embedding's columns and the position table move with the residual stream;
    a sum with a computed tensor that is not permuted still fixes the group."""
    torch.manual_seed(0)
    model = _randomise_affine(TokenEncoder())
    x = torch.randint(0, 10, (4, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        spec = permutation_spec(model, x)
    assert spec.sizes == {"emb": 8, "layer.self_attn": 2, "layer.linear1": 16}
    assert {("emb.weight", 1), ("pos", 1), ("layer.norm1.bias", 0), ("head.weight", 1)} <= {
        (ax.name, ax.axis) for ax in spec.groups["emb"]}
    assert check_spec(model, spec, x, tol=1e-5)

    class Shifted(TokenEncoder):
        def forward(self, x):
            return self.head(self.layer(self.emb(x) + torch.ones(8)).mean(1))

    with pytest.warns(SpecWarning, match="emb"):
        spec2 = permutation_spec(Shifted().eval(), x)
    assert list(spec2.groups) == ["layer.self_attn", "layer.linear1"]


def test_a_tensor_built_in_forward_fixes_the_group():
    """A sum with a tensor made inside forward (``torch.arange``: a fixed table, not a
    model tensor) is not permuted with the units: the group is left unpermuted with a
    warning (it used to be permuted, and the spec was wrong)."""

    class Offset(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x) + torch.arange(8.0)))

    torch.manual_seed(0)
    model, x = Offset().eval(), torch.randn(3, 4)
    with pytest.warns(SpecWarning, match="_tensor_constant"):
        spec = permutation_spec(model, x)
    assert spec.groups == {} and check_spec(model, spec, x)


def test_hand_permuted_heads_are_matched_back():
    """Heads reordered by hand (query, key and value rows of each head and the output
    projection's columns, not through the spec) keep the function, and weight matching
    finds the order back exactly."""
    from lossatlas.symmetry import weight_matching

    torch.manual_seed(0)
    model = StreamEncoder().eval()
    x = torch.randn(4, 6, 5)
    other = copy.deepcopy(model)
    attn, hd = other.l1.self_attn, other.l1.self_attn.head_dim
    order = torch.tensor([2, 0, 3, 1])
    rows = (order[:, None] * hd + torch.arange(hd)).reshape(-1)
    qkv = torch.cat([rows + k * 8 for k in range(3)])
    with torch.no_grad():
        attn.in_proj_weight.copy_(attn.in_proj_weight[qkv])
        attn.in_proj_bias.copy_(attn.in_proj_bias[qkv])
        attn.out_proj.weight.copy_(attn.out_proj.weight[:, rows])
        assert not torch.equal(other.l1.self_attn.in_proj_weight, model.l1.self_attn.in_proj_weight)
        torch.testing.assert_close(other(x), model(x), rtol=1e-5, atol=1e-5)
    aligned = weight_matching(model, other, example_input=x)
    for k, v in aligned.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k], rtol=0, atol=0, msg=k)


def test_a_module_tensor_read_directly_elsewhere_fixes_its_group():
    """An embedding also used as an output matrix through F.linear (tied weights), and a
    position table added in two places: permuting the tensor for one reader would change
    what the other computes, so the group is left unpermuted with a warning (the tied
    case used to give a wrong spec)."""

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            h = self.head(self.emb(x).mean(1))
            tied = nn.functional.linear(torch.ones(x.shape[0], 8), self.emb.weight)
            return torch.cat([h, tied], 1)

    class TwoReads(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.pos = nn.Parameter(torch.randn(5, 8))
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head((self.emb(x) + self.pos).mean(1)) + (self.pos * 2).sum()

    x = torch.randint(0, 10, (3, 5))
    for make, culprit in ((Tied, "emb.weight is also read"), (TwoReads, "emb")):
        torch.manual_seed(0)
        model = make().eval()
        with pytest.warns(SpecWarning, match=culprit):
            spec = permutation_spec(model, x)
        assert "emb" not in spec.groups and check_spec(model, spec, x)


def test_a_sum_over_the_units_keeps_permutations_but_not_sign_flips():
    """Units summed away (no later layer reads them) may be permuted but not flipped or
    rescaled: the group is neither odd nor rescalable (it used to be marked odd, and
    check_spec's random sign flips changed the output)."""

    class SumOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = nn.Linear(8, 8)

        def forward(self, x):
            return torch.tanh(self.mix(x)).mean(1).sum(-1, keepdim=True)

    torch.manual_seed(0)
    model, x = SumOut().eval(), torch.randn(3, 5, 8)
    spec = permutation_spec(model, x)
    assert list(spec.groups) == ["mix"]
    assert "mix" not in spec.odd and "mix" not in spec.rescalable
    assert check_spec(model, spec, x)
