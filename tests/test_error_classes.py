"""Errors lossatlas raises on purpose are LossatlasErrors and keep their built-in class.

One case per converted raise in the space / surfaces / connectivity / curvature /
dynamics / refine / scale / vectors modules (issue 16): the error is a
``LossatlasError``, still the ``TypeError`` / ``KeyError`` / ``RuntimeError`` callers
catch, and its message starts with the public function's name.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from lossatlas.errors import InputTypeError, LossatlasError, MissingKeyError, NotComputedError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)


def _check(info: pytest.ExceptionInfo, builtin: type, cls: type, prefix: str) -> None:
    err = info.value
    assert isinstance(err, LossatlasError)
    assert isinstance(err, builtin)
    assert type(err) is cls
    assert str(err).startswith(prefix), str(err)


def test_space_errors():
    from lossatlas.space import ParamSpace

    with pytest.raises(TypeError) as info:
        ParamSpace(torch.zeros(3))
    _check(info, TypeError, InputTypeError, "ParamSpace:")
    space = ParamSpace(_net())
    with pytest.raises(KeyError) as info:
        space["nope"]
    _check(info, KeyError, MissingKeyError, "ParamSpace: no tensor named 'nope'")
    with pytest.raises(KeyError) as info:
        space.flatten({"0.weight": torch.zeros(4, 3)}, source="ckpt.pt")
    _check(info, KeyError, MissingKeyError, "ParamSpace.flatten: tensor '0.bias' missing in ckpt.pt")
    with pytest.raises(TypeError) as info:
        space.flatten(3.0)
    _check(info, TypeError, InputTypeError, "ParamSpace:")


def test_surfaces_errors():
    from lossatlas.surfaces import random_direction
    from lossatlas.surfaces.directions import hessian_directions
    from lossatlas.surfaces.plot import plot_contour
    from lossatlas.surfaces.slices import random_slice, slice_field

    with pytest.raises(TypeError) as info:
        random_direction(torch.zeros(5))
    _check(info, TypeError, InputTypeError, "random_direction:")
    with pytest.raises(TypeError) as info:
        random_direction({"w": torch.zeros(2)})
    _check(info, TypeError, InputTypeError, "random_direction: a state dict was given")
    with pytest.raises(TypeError) as info:
        hessian_directions(torch.zeros(5), _data())
    _check(info, TypeError, InputTypeError, "hessian_directions:")
    with pytest.raises(TypeError) as info:
        random_slice(torch.zeros(5))
    _check(info, TypeError, InputTypeError, "random_slice:")
    with pytest.raises(TypeError) as info:
        slice_field(types.SimpleNamespace(), "not a slice")
    _check(info, TypeError, InputTypeError, "slice_field:")
    ds = xr.Dataset({"acc": (("a", "b"), np.zeros((3, 3)))})
    with pytest.raises(KeyError) as info:
        plot_contour(ds, var="loss")
    _check(info, KeyError, MissingKeyError, "plot_contour: the field has no variable 'loss'")


def test_connectivity_and_curvature_errors():
    from lossatlas.connectivity import barrier
    from lossatlas.connectivity.barriers import barrier_curve
    from lossatlas.connectivity.layerwise import layer_noise_tolerance
    from lossatlas.curvature import llc
    from lossatlas.curvature.saddles import atlas_saddles

    net, data = _net(), _data()
    with pytest.raises(TypeError) as info:
        barrier(net, "b.pt", data)
    _check(info, TypeError, InputTypeError, "barrier: model_b")
    with pytest.raises(TypeError) as info:
        barrier_curve(torch.zeros(5), net, data)
    _check(info, TypeError, InputTypeError, "barrier_curve: model_a")
    with pytest.raises(TypeError) as info:
        layer_noise_tolerance(torch.zeros(5), data)
    _check(info, TypeError, InputTypeError, "layer_noise_tolerance:")
    with pytest.raises(TypeError) as info:
        llc(torch.zeros(5), data)
    _check(info, TypeError, InputTypeError, "llc: model")
    with pytest.raises(RuntimeError) as info:
        atlas_saddles(types.SimpleNamespace())
    _check(info, RuntimeError, NotComputedError, "atlas_saddles: call Atlas.embed() first")


def test_dynamics_errors():
    from lossatlas.dynamics.branches import representations
    from lossatlas.dynamics.commutator import commutator_defect, defect_along
    from lossatlas.dynamics.plot import plot_trajectory_transitions

    net, data = _net(), _data()
    with pytest.raises(KeyError) as info:
        representations(net, data[0], layers=["9"])
    _check(info, KeyError, MissingKeyError, "representations: no module named '9'")
    with pytest.raises(KeyError) as info:
        commutator_defect(net, data, params={"0.weight": torch.zeros(4, 3)})
    _check(info, KeyError, MissingKeyError, "commutator_defect: params lacks tensors")
    with pytest.raises(KeyError) as info:
        defect_along(net, [{"0.weight": torch.zeros(4, 3)}], data)
    _check(info, KeyError, MissingKeyError, "defect_along: state 0 lacks tensors")
    atlas = types.SimpleNamespace(
        codes_=np.zeros((2, 2)),
        population=types.SimpleNamespace(trajectories=lambda: {"run0": [0, 1]}),
    )
    with pytest.raises(KeyError) as info:
        plot_trajectory_transitions(atlas, {"run9": []})
    _check(info, KeyError, MissingKeyError, "plot_trajectory_transitions: unknown run 'run9'")


def test_refine_scale_vectors_errors(tmp_path):
    from lossatlas.refine import Refinement
    from lossatlas.scale import log10_loss
    from lossatlas.vectors import VectorFileWriter

    ref = Refinement(np.zeros(2), np.ones(2), resolution=4, budget=64)
    with pytest.raises(RuntimeError) as info:
        ref.result()
    _check(info, RuntimeError, NotComputedError, "Refinement.result:")
    with pytest.raises(KeyError) as info:
        ref.tell({"acc": np.zeros(len(ref.pending()))})
    _check(info, KeyError, MissingKeyError, "refine_field: evaluate() did not return 'loss'")
    with pytest.raises(KeyError) as info:
        log10_loss(xr.Dataset({"acc": ("p", np.zeros(3))}))
    _check(info, KeyError, MissingKeyError, "log10_loss: the dataset has no 'loss' variable")
    with pytest.raises(TypeError) as info:
        VectorFileWriter(tmp_path / "v.bin", (2, 3), dtype=torch.int32)
    _check(info, TypeError, InputTypeError, "VectorFileWriter: dtype")


def test_plot_file_given_twice():
    from lossatlas.curvature.plot import plot_llc_trace

    llc = {"loss_trace": torch.ones(2, 3), "init_loss": 1.0, "llc_mean": 0.0, "llc_std": 0.0}
    with pytest.raises(TypeError) as info:
        plot_llc_trace(llc, "a.png", path="b.png")
    _check(info, TypeError, InputTypeError, "plot_llc_trace: ax='a.png' is a file name")
