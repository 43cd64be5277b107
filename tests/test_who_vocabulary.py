"""Issue 16 vocabulary: the caller named in error messages is ``who=``. The old keyword
``where=`` of the public helpers still works for one release (DeprecationWarning, same
result), and the errors of the renamed private checks still start with the public
function's name."""

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas.batches import as_tensor_data, concat_inputs, stack_inputs
from lossatlas.batchnorm import resolve_policy
from lossatlas.connectivity import barrier_from_values, curve_points
from lossatlas.curvature._objective import Objective, resolve_points
from lossatlas.data import digits
from lossatlas.evaluate import model_output, resolve_loss
from lossatlas.recorder import linear_steps
from lossatlas.surfaces.directions import as_directions, flat_params
from lossatlas.symmetry import weight_matching
from lossatlas.symmetry._inputs import infer_example_input, resolve_example_input
from lossatlas.topology import merge_tree
from lossatlas.topology._inputs import clean_values, csr_from_edges

DEPRECATED = "where= is deprecated; use who="


def _old_and_new(f, *args, **kwargs):
    """``f(..., where="caller")`` (must warn) and ``f(..., who="caller")``."""
    with pytest.warns(DeprecationWarning, match=DEPRECATED):
        old = f(*args, where="caller", **kwargs)
    return old, f(*args, who="caller", **kwargs)


def _message(f, *args, **kwargs) -> str:
    """The error message of ``f(..., where="caller")`` (which must also warn)."""
    with pytest.warns(DeprecationWarning, match=DEPRECATED), pytest.raises(Exception) as err:
        f(*args, where="caller", **kwargs)
    with pytest.raises(type(err.value)) as err_new:
        f(*args, who="caller", **kwargs)
    assert str(err_new.value) == str(err.value)
    return str(err.value)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_where_is_a_deprecated_name_of_who_with_the_same_result(net):
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    assert _old_and_new(resolve_policy, net, None) == ("none", "none")
    (f_old, n_old), (f_new, n_new) = _old_and_new(resolve_loss, "mse", y.float())
    assert f_old is f_new and n_old == n_new == "mse"
    old, new = _old_and_new(model_output, {"logits": x}, "logits")
    assert old is x and new is x
    old, new = _old_and_new(flat_params, net)
    assert torch.equal(old, new) and old.numel() == 3 * 4 + 4 + 4 * 2 + 2
    old, new = _old_and_new(as_directions, torch.ones(4), 4)
    assert old.shape == new.shape == (1, 4)
    old, new = _old_and_new(infer_example_input, net, (x, y))
    assert torch.equal(old, new) and old.shape == (2, 3)
    old, new = _old_and_new(resolve_example_input, net, None, (x, y))
    assert torch.equal(old, new)
    old, new = _old_and_new(Objective, net, (x, y))
    assert old.who == new.who == "caller" and torch.equal(old.value(), new.value())
    old, new = _old_and_new(resolve_points, [net, net], net)
    assert torch.equal(old, new) and old.shape == (2, flat_params(net).numel())
    old, new = _old_and_new(clean_values, [3.0, 1.0], ndims=(1,))
    assert np.array_equal(old, new)
    old, new = _old_and_new(csr_from_edges, [[0, 1], [1, 2]], 3)
    assert all(np.array_equal(a, b) for a, b in zip(old, new, strict=True))
    old, new = _old_and_new(concat_inputs, [x[:2], x[2:]])
    assert torch.equal(old, x) and torch.equal(new, x)
    old, new = _old_and_new(stack_inputs, list(x))
    assert torch.equal(old, x) and torch.equal(new, x)
    old, new = _old_and_new(as_tensor_data, (x, y))
    assert torch.equal(old.x, new.x) and torch.equal(old.y, new.y)


def test_errors_start_with_the_caller_given_as_who(net):
    x = torch.randn(5, 3)
    assert _message(resolve_policy, net, "bad").startswith("caller: bn must be")
    assert _message(resolve_loss, "nope", x).startswith("caller: loss_fn must be")
    assert _message(model_output, (x, x)).startswith("caller: the model returns")
    assert _message(flat_params, "nope").startswith("caller: expected an nn.Module")
    assert _message(as_directions, torch.ones(2, 2, 2)).startswith("caller: directions must")
    assert _message(infer_example_input, "nope").startswith("caller: expected an nn.Module")
    assert _message(Objective, "nope", (x, x)).startswith("caller: model must be an nn.Module")
    assert _message(resolve_points, [], net).startswith("caller: the population is empty")
    assert _message(clean_values, [], ndims=(1,)).startswith("caller: values must not be empty")
    assert _message(csr_from_edges, [[0, 5]], 3).startswith("caller: edges refer to vertex 5")
    assert _message(as_tensor_data, "nope").startswith("caller: expected an (X, y)")
    msg = _message(concat_inputs, [x, {"a": x}])
    assert msg.startswith("caller: input") and "in batch 1 but a tensor in batch 0" in msg


def test_renamed_private_checks_name_the_public_function():
    with pytest.raises(ValueError, match="^barrier_from_values: definition must be one of"):
        barrier_from_values(np.zeros(3), np.linspace(0, 1, 3), definition="nope")
    with pytest.raises(ValueError, match="^curve_points: kind must be 'bezier' or 'polychain'"):
        curve_points(torch.zeros(1, 2), torch.zeros(2), torch.ones(2), 0.5, kind="nope")
    with pytest.raises(ValueError, match="^linear_steps: total_steps must be a non-negative"):
        linear_steps(-1, 3)
    with pytest.raises(ValueError, match=r"^data\.digits: test_fraction must be in \(0, 1\)"):
        digits(test_fraction=1.5)
    with pytest.raises(ValueError, match="^merge_tree: threshold must be >= 0"):
        merge_tree(np.array([0.0, 1.0, 0.0]), threshold=-1.0)
    with pytest.raises(Exception, match="^weight_matching: model_b must be an nn.Module"):
        weight_matching(nn.Linear(2, 2), "nope")
