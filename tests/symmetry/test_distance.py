"""Distances and barriers modulo symmetry, before and after alignment."""

from __future__ import annotations

import pytest
import torch

from lossatlas import models
from lossatlas.symmetry import (
    compare_alignment,
    parameter_distance,
    permutation_spec,
    permute_model,
    random_permutation,
)


def test_permuted_copy_is_at_distance_zero_after_alignment():
    torch.manual_seed(0)
    a = models.create("mlp", in_features=10, hidden=(24, 24), num_classes=3).eval()
    spec = permutation_spec(a)
    b = permute_model(a, spec, random_permutation(spec, torch.Generator().manual_seed(2)))
    assert parameter_distance(a, b)["distance"] > 0
    x, y = torch.randn(128, 10), torch.randint(0, 3, (128,))
    for method in ("weight", "activation"):
        table = compare_alignment(a, b, (x, y), method=method, rescale=True, points=5)
        assert list(table["alignment"].values) == ["none", "aligned"]
        assert table["distance"].sel(alignment="aligned") == pytest.approx(0.0, abs=1e-5)
        assert table["cosine"].sel(alignment="aligned") == pytest.approx(1.0, abs=1e-6)
        assert table["loss_barrier"].sel(alignment="aligned") == pytest.approx(0.0, abs=1e-6)
        assert table.attrs["method"] == method
    no_data = compare_alignment(a, b)
    assert "loss_barrier" not in no_data and no_data["distance"].sel(alignment="aligned") < 1e-5
