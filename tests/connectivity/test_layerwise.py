"""Layer-wise barriers: identical groups give zero, the only differing group carries the
whole barrier."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lossatlas import models
from lossatlas.connectivity import barrier, default_groups, layerwise_barriers


def test_identical_group_has_zero_barrier(digits, train):
    torch.manual_seed(0)
    x, y = digits.x_train, digits.y_train
    a = train(models.create("mlp", in_features=64, hidden=(32, 32)), x, y, steps=100)
    b = copy.deepcopy(a)
    with torch.no_grad():  # only the second hidden layer differs: its units are shuffled
        perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
        b.layers[1].weight.copy_(a.layers[1].weight[perm])
        b.layers[1].bias.copy_(a.layers[1].bias[perm])
    data = (digits.x_test, digits.y_test)
    table = layerwise_barriers(a, b, data, definition="mean", points=9)
    assert table.dims == ("group", "anchor")
    assert list(table["group"].values) == ["layers.0", "layers.1", "layers.2"]
    assert np.all(table.sel(group=["layers.0", "layers.2"]).values == 0)
    full = barrier(a, b, data, definition="mean", points=9)
    assert full > 0
    for anchor in "ab":  # the only differing group carries the whole path
        assert table.sel(group="layers.1", anchor=anchor).item() == pytest.approx(full, rel=1e-5)
    err = layerwise_barriers(a, b, data, groups={"first": "layers.0."}, metric="error", points=5)
    assert err.shape == (1, 2) and np.all(err.values == 0)
    with pytest.raises(ValueError, match="nothing"):
        layerwise_barriers(a, b, data, groups={"x": "nothing."})


def test_default_groups():
    model = models.create("resnet20")
    assert list(default_groups(model, "modules")) == [
        "conv1", "bn1", "layer1", "layer2", "layer3", "linear"]
    layers = default_groups(model, "layers")
    assert layers["layer2.0.shortcut.0"] == "layer2.0.shortcut.0."
    assert len(layers) == 21 + 21 + 1  # convs (2 of them shortcuts), BatchNorms, linear
