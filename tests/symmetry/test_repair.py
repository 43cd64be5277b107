"""BatchNorm reset and REPAIR: statistics of the repaired interpolation hit their targets."""

from __future__ import annotations

import pytest
import torch

from lossatlas import models
from lossatlas.symmetry import interpolate, repair, reset_bn
from lossatlas.symmetry.repair import _channel_stats


def _stats(model, name, x):
    from lossatlas import as_tensor_data

    return _channel_stats(model, name, as_tensor_data((x, torch.zeros(len(x)))), 256)


def test_repair_mlp_matches_interpolated_statistics():
    torch.manual_seed(0)
    a = models.create("mlp", in_features=10, hidden=(32, 32)).eval()
    b = models.create("mlp", in_features=10, hidden=(32, 32)).eval()
    x = torch.randn(512, 10)
    mid = repair(a, b, 0.5, (x, torch.zeros(512)))
    for name in ("layers.0", "layers.1"):
        (ma, sa), (mb, sb), (mm, sm) = (_stats(m, name, x) for m in (a, b, mid))
        torch.testing.assert_close(mm, (ma + mb) / 2, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(sm, (sa + sb) / 2, rtol=1e-4, atol=1e-4)
    plain = interpolate(a, b, 0.5)
    _, s_plain = _stats(plain, "layers.1", x)
    _, s_target = _stats(mid, "layers.1", x)
    assert s_plain.mean() < s_target.mean()  # the variance collapse REPAIR undoes


def test_reset_bn_and_repair_batchnorm_network():
    torch.manual_seed(0)
    a = models.create("cnn2d", channels=(8, 8)).eval()
    x = torch.randn(64, 1, 8, 8)
    with pytest.raises(ValueError, match="no BatchNorm"):
        reset_bn(a, (x, torch.zeros(64)))
    r1 = models.create("resnet20", num_classes=3).eval()
    r2 = models.create("resnet20", num_classes=3).eval()
    x = torch.randn(64, 3, 8, 8)
    reset = reset_bn(r1, (x, torch.zeros(64)))
    assert not torch.equal(reset.bn1.running_mean, r1.bn1.running_mean)
    torch.testing.assert_close(reset.bn1.running_mean, reset.conv1(x).mean((0, 2, 3)),
                               rtol=1e-4, atol=1e-5)
    for m in (r1, r2):
        reset_bn(m, (x, torch.zeros(64)), inplace=True)
    mid = repair(r1, r2, 0.3, (x, torch.zeros(64)))
    for name in ("bn1", "layer2.0.bn2", "layer3.2.bn2"):
        (ma, sa), (mb, sb), (mm, sm) = (_stats(m, name, x) for m in (r1, r2, mid))
        torch.testing.assert_close(mm, 0.7 * ma + 0.3 * mb, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(sm, 0.7 * sa + 0.3 * sb, rtol=1e-3, atol=1e-3)
