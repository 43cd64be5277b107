"""ResidualCorrection: exact at the models, zero at the points pinned to zero, and
well-behaved when such a point coincides with a model."""

import torch

from lossatlas.correction import ResidualCorrection


def test_exact_at_models_and_zero_at_pinned_points():
    gen = torch.Generator().manual_seed(0)
    codes = torch.rand(6, 2, generator=gen, dtype=torch.float64) * 4
    res = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    extra = torch.tensor([[5.0, 5.0], [-1.0, 2.0]], dtype=torch.float64)
    cor = ResidualCorrection(codes, res, zero_at=extra)
    torch.testing.assert_close(cor(codes), res, atol=1e-6, rtol=0)
    torch.testing.assert_close(cor(extra), torch.zeros(2, 3, dtype=torch.float64),
                               atol=1e-6, rtol=0)


def test_a_pinned_point_on_a_model_is_left_out():
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    res = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    plain = ResidualCorrection(codes, res)
    # a point on model 0 (e.g. a trajectory containing the checkpoint) and one far away
    cor = ResidualCorrection(codes, res, zero_at=torch.tensor([[1e-9, 0.0], [9.0, 9.0]]))
    assert len(cor.codes) == 4  # the coinciding point was dropped, the far one kept
    torch.testing.assert_close(cor(codes), res, atol=1e-6, rtol=0)
    z = torch.tensor([[0.05, 0.02], [0.5, 0.5]], dtype=torch.float64)
    # near the models the correction is the plain one (no blow-up from conflicting pins)
    torch.testing.assert_close(cor(z), plain(z), atol=1e-3, rtol=1e-3)


def test_state_round_trip_is_bit_for_bit():
    """A correction read back from its state (a resumed run) gives the fresh one's values
    exactly, in float64 too (the distance field is computed in it)."""
    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(3)
    codes = torch.rand(7, 2, generator=gen, dtype=torch.float64)
    cor = ResidualCorrection(codes, torch.randn(7, 5, generator=gen, dtype=torch.float64))
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        save_file(cor.state(), f"{d}/c.safetensors")
        back = ResidualCorrection.from_state(load_file(f"{d}/c.safetensors"))
    z = torch.rand(40, 2, generator=gen, dtype=torch.float64)
    assert torch.equal(back(z), cor(z))
