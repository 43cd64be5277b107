"""The BatchNorm policy: recompute = train-mode BatchNorm over all samples at once, own =
each point's own statistics; the same rule in the Evaluator, Population and curvature."""

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossatlas import Evaluator, ParamSpace, Population
from lossatlas.batchnorm import POLICY_TEXT, resolve_policy
from lossatlas.curvature import HVP
from lossatlas.errors import InputTypeError
from lossatlas.symmetry.repair import reset_bn


def bn_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3), nn.BatchNorm1d(3))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0, self.bn0 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.bn0(self.conv0(x)))
        return self.head(torch.relu(h + self.bn1(self.conv1(h))).mean((2, 3)))


_G = torch.Generator().manual_seed(0)  # the same data whatever ran before
X = torch.randn(90, 1, 8, 8, generator=_G) * 2 + 0.5
Y = torch.randint(0, 3, (90,), generator=_G)


def trained(factory, seed: int) -> nn.Module:
    """A model whose running statistics are far from the factory's (mean 0, var 1)."""
    torch.manual_seed(seed)
    m = factory()
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(X * (1 + seed))
    return m.eval()


def train_mode_loss(model: nn.Module, x=X, y=Y) -> float:
    """The direct computation: train-mode BatchNorm over all samples in one batch."""
    m = copy.deepcopy(model).train()
    with torch.no_grad():
        return nn.functional.cross_entropy(m(x), y).item()


def eval_mode_loss(model: nn.Module) -> float:
    with torch.no_grad():
        return nn.functional.cross_entropy(model.eval()(X), Y).item()


@pytest.mark.parametrize("factory", [bn_cnn, Residual])
@pytest.mark.parametrize("backend", ["auto", "sequential"])
@pytest.mark.parametrize("batch_size", [None, 7, 32])
def test_recompute_equals_train_mode_over_all_samples(factory, backend, batch_size):
    models = [trained(factory, s) for s in range(3)]
    ev = Evaluator(models[0], (X, Y), backend=backend, batch_size=batch_size)
    assert ev.bn == "recompute"  # the default for a model with BatchNorm
    got = ev.evaluate(torch.stack([ev.space.flatten(m) for m in models]))["loss"]
    want = torch.tensor([train_mode_loss(m) for m in models])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # and not the eval-mode losses (the test can tell the two apart)
    assert not torch.allclose(got, torch.tensor([eval_mode_loss(m) for m in models]),
                              rtol=1e-3)


@pytest.mark.parametrize("factory", [bn_cnn, Residual])
@pytest.mark.parametrize("channels_last", [False, True])
def test_recompute_in_the_evaluation_pass_equals_the_sequential_backend(factory, channels_last):
    models = [trained(factory, s) for s in range(3)]
    ev = Evaluator(models[0], (X, Y), backend="fast-bnrecompute", channels_last=channels_last)
    assert ev.backend == "fast-bnrecompute" and ev.batch_size == len(X)
    assert ev.recompute_in_pass
    pts = torch.stack([ev.space.flatten(m) for m in models])
    got = ev.evaluate(pts)
    seq = Evaluator(models[0], (X, Y), backend="sequential").evaluate(pts)
    torch.testing.assert_close(got["loss"], seq["loss"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got["accuracy"], seq["accuracy"])
    want = torch.tensor([train_mode_loss(m) for m in models])
    torch.testing.assert_close(got["loss"], want, rtol=1e-5, atol=1e-6)
    # a batch split later (out of memory, use_sizes): statistics from the generic pass
    ev.use_sizes(2, 32)
    assert not ev.recompute_in_pass
    torch.testing.assert_close(ev.evaluate(pts)["loss"], want, rtol=1e-5, atol=1e-6)


def test_recompute_fast_path_is_chosen_only_where_it_applies():
    model = trained(Residual, 0)
    # the CPU keeps the sequential backend under "auto" (its results stay as they were)
    assert Evaluator(model, (X, Y)).backend == "sequential"
    with pytest.raises(ValueError, match="batch_size=30 < 90"):
        Evaluator(model, (X, Y), backend="fast-bnrecompute", batch_size=30)
    with pytest.raises(ValueError, match="bn_data is given"):
        Evaluator(model, (X, Y), backend="fast-bnrecompute", bn_data=(X[:10], Y[:10]))
    with pytest.raises(ValueError, match="bn='own'"):
        Evaluator(model, (X, Y), backend="fast-bnrecompute", bn="own")
    with pytest.raises(ValueError, match="registered backend"):
        Evaluator(model, (X, Y), backend="no-such-backend")
    with pytest.raises(ValueError, match="compile must be"):
        Evaluator(model, (X, Y), compile="fastest")


def test_recompute_with_a_dataloader_of_small_batches():
    model = trained(bn_cnn, 1)
    loader = DataLoader(TensorDataset(X, Y), batch_size=8)
    for bs in (None, 5):
        ev = Evaluator(model, loader, bn="recompute", batch_size=bs)
        loss = float(ev.evaluate(ev.space.flatten(model))["loss"])
        assert loss == pytest.approx(train_mode_loss(model), rel=1e-5)


def test_statistics_are_the_batch_moments_of_each_layer():
    model = trained(Residual, 2)
    seen = {}
    hooks = [m.register_forward_pre_hook(
        lambda _m, inp, n=n: seen.__setitem__(n, torch.var_mean(inp[0], (0, 2, 3), unbiased=False)))
        for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        copy.deepcopy(model).train()(X)  # hooks are copied with the model
    for h in hooks:
        h.remove()
    for bs in (None, 11):
        stats = Evaluator(model, (X, Y), batch_size=bs).statistics(ParamSpace(model).flatten(model))
        for name, (var, mean) in seen.items():
            torch.testing.assert_close(stats[f"{name}.running_mean"][0], mean, rtol=1e-5,
                                       atol=1e-6)
            torch.testing.assert_close(stats[f"{name}.running_var"][0], var, rtol=1e-5,
                                       atol=1e-6)
    # reset_bn writes the same statistics into a model (one rule for both)
    reset = reset_bn(model, (X, Y), batch_size=13)
    assert eval_mode_loss(reset) == pytest.approx(train_mode_loss(model), rel=1e-5)


def test_own_carries_each_models_statistics():
    a, b = trained(bn_cnn, 0), trained(bn_cnn, 2)
    ev = Evaluator(a, (X, Y), bn="own")
    assert ev.space.buffer_names  # the statistics are part of every point
    loss_b = float(ev.evaluate(ev.space.flatten(b))["loss"])
    assert loss_b == pytest.approx(eval_mode_loss(b), rel=1e-5)
    # not b's weights with the first model's statistics (the old silent default)
    mixed = copy.deepcopy(b)
    with torch.no_grad():
        for name, buf in a.named_buffers():
            dict(mixed.named_buffers())[name].copy_(buf)
    assert abs(loss_b - eval_mode_loss(mixed)) > 1e-3  # deterministic data: 0.0107 here
    # between the models the variances stay positive (log layout) and the loss finite
    mid = 0.5 * (ev.space.flatten(a) + ev.space.flatten(b))
    values = ev.space.unflatten(mid)
    for name in ev.space.buffer_names:
        if name.endswith("running_var"):
            va, vb = dict(a.named_buffers())[name], dict(b.named_buffers())[name]
            torch.testing.assert_close(values[name], (va * vb).sqrt(), rtol=1e-5, atol=1e-7)
    assert torch.isfinite(ev.evaluate(mid)["loss"])


def test_log_variance_layout_round_trips_and_survives_a_negative_step():
    model = trained(bn_cnn, 1)
    space = ParamSpace(model, buffers=True)
    w = space.flatten(model)
    back = space.unflatten(w)
    for name, t in model.state_dict().items():
        if name in back:
            torch.testing.assert_close(back[name], t, rtol=1e-6, atol=1e-7)
    seg = space["1.running_var"]
    assert seg.log and torch.allclose(w[seg.start:seg.stop], model[1].running_var.log())
    w2 = w.clone()
    w2[seg.start:seg.stop] -= 50.0  # far below zero on the variance scale
    assert (space.unflatten(w2)["1.running_var"] > 0).all()


def test_policy_errors_and_resolution():
    mlp = nn.Sequential(nn.Linear(4, 3))
    assert resolve_policy(mlp, None, "t") == "none"
    assert resolve_policy(bn_cnn(), None, "t") == "recompute"
    with pytest.raises(ValueError, match="bn must be"):
        resolve_policy(bn_cnn(), "eval", "t")
    with pytest.raises(ValueError, match="has BatchNorm"):
        resolve_policy(bn_cnn(), "none", "t")
    with pytest.raises(ValueError, match=r"bn='own' needs .*running_mean"):
        Evaluator(bn_cnn(), (X, Y), bn="own", space=ParamSpace(bn_cnn()))
    assert set(POLICY_TEXT) == {"own", "recompute", "none"}


def test_population_default_is_recompute_and_keeps_each_checkpoints_statistics(tmp_path):
    models = [trained(bn_cnn, s) for s in range(3)]
    for i, m in enumerate(models):
        torch.save(m.state_dict(), tmp_path / f"A_seed{i}_epoch1.pt")
    factory = bn_cnn
    pop = Population.from_checkpoints(str(tmp_path / "*.pt"), factory)
    assert pop.bn == "recompute" and not pop.space.buffer_names
    for i, m in enumerate(models):
        # model(i) is the checkpoint as saved, statistics included
        assert eval_mode_loss(pop.model(i)) == pytest.approx(eval_mode_loss(m), rel=1e-6)
    ev = Evaluator(pop.model(0), (X, Y), space=pop.space, bn=pop.bn)
    got = ev.evaluate(pop.as_points())["loss"]
    torch.testing.assert_close(got, torch.tensor([train_mode_loss(m) for m in models]),
                               rtol=1e-5, atol=1e-6)
    own = Population.from_checkpoints(str(tmp_path / "*.pt"), factory, bn="own")
    ev = Evaluator(own.model(0), (X, Y), space=own.space, bn="own")
    torch.testing.assert_close(ev.evaluate(own.as_points())["loss"],
                               torch.tensor([eval_mode_loss(m) for m in models]),
                               rtol=1e-5, atol=1e-6)


class WithConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.register_buffer("scale", torch.ones(3))

    def forward(self, x):
        return self.lin(x) * self.scale


def test_a_float_buffer_outside_the_vectors_that_differs_is_refused(tmp_path):
    m = WithConstant()
    torch.save(m.state_dict(), tmp_path / "a.pt")
    Population.from_checkpoints(str(tmp_path / "a.pt"), WithConstant)  # same constant: fine
    m.scale.fill_(2.0)
    torch.save(m.state_dict(), tmp_path / "b.pt")
    with pytest.raises(ValueError, match=r"buffer 'scale' of .*b\.pt differs"):
        Population.from_checkpoints(str(tmp_path / "*.pt"), WithConstant)


def test_hessian_recompute_holds_the_points_statistics():
    """HVP under "recompute" = the dense Hessian of the eval-mode network whose statistics
    are the point's recomputed ones (computed independently with reset_bn)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    model.eval()
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    H = HVP(model, (x, y))
    dense_from_hvp = H(torch.eye(H.dim))
    ref = reset_bn(model, (x, y))
    space = ParamSpace(ref)
    fixed = {k: v for k, v in ref.state_dict().items() if k not in space.names}

    def loss(w):
        out = torch.func.functional_call(ref, {**space.unflatten(w), **fixed}, (x,))
        return nn.functional.cross_entropy(out, y)

    dense = torch.autograd.functional.hessian(loss, space.flatten(ref))
    torch.testing.assert_close(dense_from_hvp, dense, rtol=1e-4, atol=1e-5)
    assert float(H.value()) == pytest.approx(train_mode_loss(model, x, y), rel=1e-5)


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return {"logits": self.lin(x), "hidden": x}


class TupleOut(DictOut):
    def forward(self, x):
        return self.lin(x), x


def test_outputs_losses_and_inputs_of_other_shapes():
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    m = DictOut()
    ev = Evaluator(m, (x, y))
    want = nn.functional.cross_entropy(m.lin(x), y)
    assert float(ev.evaluate(ev.space.flatten(m))["loss"]) == pytest.approx(float(want), rel=1e-6)
    with pytest.raises(InputTypeError, match="returns a tuple of 2.*output="):
        Evaluator(TupleOut(), (x, y))
    t = TupleOut()
    ev = Evaluator(t, (x, y), output=0)
    assert float(ev.evaluate(ev.space.flatten(t))["loss"]) == pytest.approx(
        float(nn.functional.cross_entropy(t.lin(x), y)), rel=1e-6)
    # regression: float targets -> MSE by default
    reg = nn.Linear(4, 2)
    yr = torch.randn(30, 2)
    ev = Evaluator(reg, (x, yr))
    assert ev.loss_name == "mse"
    assert float(ev.evaluate(ev.space.flatten(reg))["loss"]) == pytest.approx(
        float(nn.functional.mse_loss(reg(x), yr)), rel=1e-6)


class TinyLM(nn.Module):
    def __init__(self, vocab=7):
        super().__init__()
        self.emb, self.out = nn.Embedding(vocab, 8), nn.Linear(8, vocab)

    def forward(self, x):
        return self.out(torch.tanh(self.emb(x)))


def test_token_level_loss_ignores_padding_across_batches():
    torch.manual_seed(0)
    x = torch.randint(0, 7, (20, 6))
    y = torch.randint(0, 7, (20, 6))
    y[torch.rand(20, 6) < 0.4] = -100  # padding, unevenly spread over batches
    lm = TinyLM()
    with torch.no_grad():
        want = nn.functional.cross_entropy(lm(x).reshape(-1, 7), y.reshape(-1),
                                           ignore_index=-100)
    for bs in (None, 3):
        ev = Evaluator(lm, (x, y), batch_size=bs)
        got = float(ev.evaluate(ev.space.flatten(lm))["loss"])
        assert got == pytest.approx(float(want), rel=1e-5)


class EncoderModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.layer(self.emb(x)).mean(1))


def test_transformer_encoder_layer_batches_under_vmap_and_has_a_hessian():
    torch.manual_seed(0)
    models = [EncoderModel().eval() for _ in range(3)]
    x, y = torch.randint(0, 10, (24, 5)), torch.randint(0, 3, (24,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no per-sample fallback warning
        ev = Evaluator(models[0], (x, y), backend="vmap")  # auto: one point at a time
        got = ev.evaluate(torch.stack([ev.space.flatten(m) for m in models]))["loss"]
    assert ev.backend == "vmap"
    with torch.no_grad():
        want = torch.tensor([float(nn.functional.cross_entropy(m(x), y)) for m in models])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # Hessian-vector products run (forward-mode AD through the attention's math path)
    small = (x[:6], y[:6])
    H = HVP(models[0], small, group="head")
    space = ParamSpace(models[0])
    mask = space.mask("head", buffers=False)
    w0 = space.flatten(models[0])

    def loss(wg):
        w = w0.clone()
        w[mask] = wg
        out = torch.func.functional_call(models[0], space.unflatten(w), (small[0],))
        return nn.functional.cross_entropy(out, small[1])

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):  # the fused CPU kernel has no double backward
        dense = torch.autograd.functional.hessian(loss, w0[mask])
    torch.testing.assert_close(H(torch.eye(H.dim)), dense, rtol=1e-4, atol=1e-5)
    full = HVP(models[0], small)  # every parameter, attention included
    v = torch.randn(full.dim)
    with sdpa_kernel([SDPBackend.MATH]):
        _, hv = torch.autograd.functional.hvp(
            lambda w: nn.functional.cross_entropy(torch.func.functional_call(
                models[0], space.unflatten(w), (small[0],)), small[1]), w0, v)
    torch.testing.assert_close(full(v), hv, rtol=1e-4, atol=1e-5)
