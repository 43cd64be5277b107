import pytest
import torch
from torch import nn

from lossatlas import ParamSpace


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5))


def test_layout_and_roundtrip():
    m = _model()
    space = ParamSpace(m)
    assert space.dim == sum(p.numel() for p in m.parameters())
    assert space.buffer_names == []
    w = space.flatten(m)
    assert w.shape == (space.dim,)
    params = space.unflatten(w)
    for name, p in m.named_parameters():
        assert torch.equal(params[name], p.detach())


def test_buffers_included_but_never_num_batches_tracked():
    m = _model()
    space = ParamSpace(m, buffers=True)
    assert "1.running_mean" in space.buffer_names and "1.running_var" in space.buffer_names
    assert not any("num_batches_tracked" in n for n in space.names)
    assert space.dim == sum(p.numel() for p in m.parameters()) + 8


def test_unflatten_batch_axis_is_zero_copy_view():
    m = _model()
    space = ParamSpace(m)
    batch = torch.randn(3, 2, space.dim)
    params = space.unflatten(batch)
    w = params["0.weight"]
    assert w.shape == (3, 2, 4, 3, 3, 3)
    assert w.data_ptr() == batch[..., space["0.weight"].start].data_ptr()
    w[0, 0].zero_()
    assert batch[0, 0, space["0.weight"].start : space["0.weight"].stop].abs().sum() == 0


def test_load_into_and_state_dict_input():
    m = _model()
    space = ParamSpace(m)
    v = torch.randn(space.dim)
    space.load_into(m, v)
    assert torch.equal(space.flatten(m), v)
    assert torch.equal(space.flatten(m.state_dict()), v)


def test_errors_name_the_tensor():
    m = _model()
    space = ParamSpace(m)
    sd = m.state_dict()
    sd["4.weight"] = torch.zeros(5, 7)
    with pytest.raises(ValueError, match=r"4\.weight.*a\.pt"):
        space.flatten(sd, source="a.pt")
    del sd["4.weight"]
    with pytest.raises(KeyError, match=r"4\.weight"):
        space.flatten(sd)
    with pytest.raises(ValueError, match="last dimension"):
        space.unflatten(torch.zeros(3))


def test_mask_by_prefix():
    m = _model()
    space = ParamSpace(m)
    mask = space.mask("4.")
    assert int(mask.sum()) == 4 * 6 * 6 * 5 + 5
    with pytest.raises(ValueError, match="no tensor name"):
        space.mask("nope")
