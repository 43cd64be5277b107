import pytest
import torch
from conftest import full_hessian, tiny_data, tiny_mlp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossatlas.curvature import HVP
from lossatlas.space import ParamSpace


def test_hvp_equals_hessian_times_vectors(problem):
    model, x, y, H = problem
    op = HVP(model, (x, y))
    assert op.dim == H.shape[0] and op.mode == "eval"
    V = torch.randn(5, op.dim, dtype=torch.float64)
    torch.testing.assert_close(op(V), V @ H, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op(V[0]), H @ V[0], rtol=1e-10, atol=1e-12)
    assert op.num_hvp == 6


def test_batching_and_chunking_give_the_same_hvp(problem):
    model, x, y, H = problem
    V = torch.randn(4, H.shape[0], dtype=torch.float64)
    one = HVP(model, (x, y))(V)
    batched = HVP(model, (x, y), batch_size=10, chunk_size=3)(V)  # uneven last batch
    loader = DataLoader(TensorDataset(x, y), batch_size=7)
    from_loader = HVP(model, loader, batch_size=25)(V)
    torch.testing.assert_close(batched, one, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(from_loader, one, rtol=1e-10, atol=1e-12)


def test_group_hvp_is_the_sub_block(problem):
    model, x, y, H = problem
    space = ParamSpace(model)
    mask = space.mask("2.")
    idx = mask.nonzero().squeeze(1)
    op = HVP(model, (x, y), group="2.")
    assert op.dim == int(mask.sum()) == 6 * 3 + 3
    V = torch.randn(3, op.dim, dtype=torch.float64)
    torch.testing.assert_close(op(V), V @ H[idx][:, idx], rtol=1e-10, atol=1e-12)
    # full-layout vectors: entries outside the group ignored, result zero there
    Vf = torch.randn(3, space.dim, dtype=torch.float64)
    out = op(Vf)
    assert out.shape == (3, space.dim)
    torch.testing.assert_close(out[:, idx], Vf[:, idx] @ H[idx][:, idx], rtol=1e-10, atol=1e-12)
    assert bool((out[:, ~mask] == 0).all())


def test_hvp_at_other_params_and_model_untouched(problem):
    model, x, y, _ = problem
    space = ParamSpace(model)
    before = space.flatten(model)
    other = tiny_mlp(seed=5)
    op = HVP(model, (x, y), params=space.flatten(other))
    H2 = full_hessian(other, x, y)
    V = torch.randn(2, space.dim, dtype=torch.float64)
    torch.testing.assert_close(op(V), V @ H2, rtol=1e-10, atol=1e-12)
    assert torch.equal(space.flatten(model), before)


def test_batchnorm_eval_and_train_modes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()
    model.train()
    x, y = tiny_data(32)
    with torch.no_grad():
        model(x)  # non-trivial running statistics
    state = {k: v.clone() for k, v in model.state_dict().items()}
    space = ParamSpace(model)
    V = torch.randn(2, space.dim, dtype=torch.float64)
    ev = HVP(model, (x, y), bn="own")  # the model's stored statistics
    tr = HVP(model, (x, y), train=True)
    assert (ev.mode, tr.mode) == ("eval", "train")
    model.eval()
    H_eval = full_hessian(model, x, y)
    torch.testing.assert_close(ev(V), V @ H_eval, rtol=1e-9, atol=1e-11)
    model.train()
    H_train = full_hessian(model, x, y)  # batch statistics (running ones updated: restore)
    model.load_state_dict(state)
    torch.testing.assert_close(tr(V), V @ H_train, rtol=1e-9, atol=1e-11)
    assert not torch.allclose(H_eval, H_train)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_bad_inputs_raise_clear_errors(problem):
    model, x, y, _ = problem
    with pytest.raises(ValueError, match="HVP: the model and loss fail on inputs of shape"):
        HVP(model, (x[:, :3], y))
    with pytest.raises(ValueError, match="inputs have 64 samples but targets have 10"):
        HVP(model, (x, y[:10]))
    with pytest.raises(ValueError, match="group"):
        HVP(model, (x, y), group="nope.")
    with pytest.raises(ValueError, match="params must be a flat vector"):
        HVP(model, (x, y), params=torch.zeros(3))
    op = HVP(model, (x, y))
    with pytest.raises(ValueError, match=r"HVP: vectors must have shape \[m, 51\]"):
        op(torch.zeros(2, 7))


def test_graphs_need_cuda_and_precision_is_checked(problem):
    model, x, y, _ = problem
    with pytest.raises(ValueError, match="graphs=True needs a CUDA device"):
        HVP(model, (x, y), graphs=True)
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'tf32', got 'bf16'"):
        HVP(model, (x, y), precision="bf16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 needs a GPU")
def test_tf32_products_are_close_and_flags_restored(problem):
    model, x, y, H = problem
    dev = torch.device("cuda")
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 256), nn.Tanh(), nn.Linear(256, 3)).to(dev)
    xs, ys = x.float().to(dev), y.to(dev)
    V = torch.randn(4, ParamSpace(m).dim, device=dev)
    ref = HVP(m, (xs, ys), graphs=False)(V)
    before = torch.backends.cuda.matmul.allow_tf32
    got = HVP(m, (xs, ys), precision="tf32")(V)
    assert torch.backends.cuda.matmul.allow_tf32 == before
    assert float((got - ref).norm() / ref.norm()) < 2e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_products_equal_eager_ones(problem):
    model, x, y, H = problem
    dev = torch.device("cuda")
    m = model.float().to(dev)
    xs, ys = x.float().to(dev), y.to(dev)
    eager = HVP(m, (xs, ys), graphs=False)
    op = HVP(m, (xs, ys))
    assert op.graphs
    V = torch.randn(3, op.dim, device=dev)
    ref = eager(V)
    outs = [op(V * (i + 1)) for i in range(4)]  # eager (warm-up), capture + replay, replays
    assert op.num_replays == 3 and op.num_hvp == 12
    for i, out in enumerate(outs):
        torch.testing.assert_close(out, ref * (i + 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(op(V[0]), ref[0], rtol=1e-5, atol=1e-6)  # m = 1: captured now
    assert op.num_replays == 4
    # a new point drops the captured graphs: products of the new Hessian
    other = tiny_mlp(seed=5).float().to(dev)
    op.move_to(ParamSpace(other).flatten(other).to(dev))
    H2 = full_hessian(other.double().cpu(), x, y).float().to(dev)
    for _ in range(3):
        torch.testing.assert_close(op(V), V @ H2, rtol=1e-4, atol=1e-5)
