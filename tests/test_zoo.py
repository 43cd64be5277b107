"""The model zoo suite: every family of ``tests/zoo.py`` (parametrised over
``zoo.FAMILIES``, so a newly registered family is tested without writing a test),
trained once, written to disk as state dicts and read back through
``Population.from_checkpoints`` and the CLI. Each stage is checked against a direct
computation in plain PyTorch on the loaded state dicts:

1. evaluation under the BatchNorm policy (recompute: train-mode BatchNorm over all
   samples at once; own: eval mode with the checkpoint's statistics; else eval mode);
2. the atlas: decoded loss within 1%, a finite field, basins that never mix variants;
3. the barrier: endpoints are the models under the policy, the barrier is the largest
   excess over the linear interpolation of the curve's own values;
4. weight matching recovers a randomly permuted copy of a trained checkpoint (where a
   permutation spec exists; elsewhere the aligned copy keeps the function);
5. the top Hessian eigenvalue is that of the dense Hessian (with the point's recomputed
   statistics held fixed under recompute);
6. the LLC is finite, positive, below d/2 and is nbeta (mean draw loss - L(w*));
7. ``lossatlas atlas`` on the checkpoint folder with a Dataset-returning data factory.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from typer.testing import CliRunner

import lossatlas
from lossatlas import Evaluator, Population
from lossatlas.cli import app
from lossatlas.connectivity import barrier_curve
from lossatlas.curvature import hessian_eigen, llc
from lossatlas.symmetry import (
    SpecWarning,
    permutation_spec,
    permute_model,
    random_permutation,
    weight_matching,
)

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import zoo  # noqa: E402  (tests/ on sys.path)

FAMILIES = sorted(zoo.FAMILIES)
N_EVAL = 256     # samples the loss is measured on (the first ones of the family's data)
N_CLI = 128      # samples of the CLI's data factory
N_HESSIAN = 32   # samples of the dense Hessian
RTOL = 1e-5      # fp32 evaluation against the direct computation
#: atlas settings small enough for CPU tests; the autoencoder trains at a higher learning
#: rate for fewer epochs than the default (4000 at 1e-3), with the same faithfulness here
ATLAS = {"resolution": 10, "budget": 150}
AE = {"epochs": 1500, "lr": 1e-2}
#: families whose permutation spec finds no group (weight matching has nothing to undo)


@contextlib.contextmanager
def one_thread():
    """Tiny models run fastest (and predictably on a busy 2-core machine) on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


# ------------------------------------------------------------------ direct computations
def file_spec(name: str) -> str:
    """The factory as a ``path/to/zoo.py:function`` spec (no sys.path needed)."""
    return f"{TESTS / 'zoo.py'}:{zoo.FAMILIES[name].factory.__name__}"


def load(name: str, path) -> nn.Module:
    """The checkpoint as saved, in plain PyTorch."""
    model = zoo.FAMILIES[name].factory()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def direct_loss(model: nn.Module, x, y, policy: str) -> float:
    """recompute: BatchNorm layers in train mode over all samples in one batch (the rest
    in eval mode: no dropout); own / none: the whole network in eval mode."""
    m = copy.deepcopy(model).eval()
    if policy == "recompute":
        for mod in m.modules():
            if is_bn(mod):
                mod.train()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(m(x), y))


def with_batch_statistics(model: nn.Module, x) -> nn.Module:
    """An eval-mode copy whose BatchNorm statistics are the biased moments of each layer's
    input in one train-mode pass over ``x`` (the point's recomputed statistics)."""
    m = copy.deepcopy(model).eval()
    seen = {}
    hooks = [mod.register_forward_pre_hook(
        lambda _m, inp, n=n: seen.__setitem__(n, torch.var_mean(
            inp[0], [0, *range(2, inp[0].dim())], unbiased=False)))
        for n, mod in m.named_modules() if is_bn(mod)]
    train = copy.deepcopy(m)
    for mod in train.modules():
        if is_bn(mod):
            mod.train()
    with torch.no_grad():
        train(x)  # the hooks were copied with the modules
    for h in hooks:
        h.remove()
    for n, mod in m.named_modules():
        if is_bn(mod):
            var, mean = seen[n]
            mod.running_mean.copy_(mean)
            mod.running_var.copy_(var)
    return m


def final_path(fam: SimpleNamespace, variant: str) -> Path:
    return fam.dir / f"{variant}_seed0_epoch{fam.spec.epochs}.pt"


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", params=FAMILIES)
def fam(request, tmp_path_factory) -> SimpleNamespace:
    """One family: its checkpoints on disk (3 variants x 3 checkpoints), the data subset,
    the expected policy and the population read back from disk."""
    name = request.param
    spec = zoo.FAMILIES[name]
    with one_thread():
        folder = zoo.population_dir(name, tmp_path_factory.mktemp(f"zoo_{name}") / "ckpt")
        x, y = spec.data()
        pop = Population.from_checkpoints(folder, file_spec(name))
    return SimpleNamespace(
        name=name, spec=spec, dir=folder, x=x[:N_EVAL], y=y[:N_EVAL], pop=pop,
        policy="recompute" if spec.batchnorm else "none",
        variants=sorted({f"lr{v}" for v in range(len(spec.lrs))}),
        tmp=tmp_path_factory.mktemp(f"zoo_{name}_runs"))


@pytest.fixture(scope="module")
def atlas(fam):
    with one_thread():
        a = lossatlas.Atlas(fam.pop, (fam.x, fam.y), fam.tmp / "atlas")
        a.embed("ae", dim=2, **AE)
        a.field(**ATLAS)
        a.topology()
        faith = a.faithfulness()
    return SimpleNamespace(atlas=a, faith=faith, summary=a.summary())


# --------------------------------------------------------------------------- 1. evaluation
def test_evaluation_equals_the_direct_computation_under_the_policy(fam):
    pop = fam.pop
    assert pop.bn == fam.policy
    assert len(pop) == len(fam.variants) * 3
    assert sorted({lab["variant"] for lab in pop.labels}) == fam.variants
    models = [load(fam.name, p) for p in pop.paths]
    ev = Evaluator(pop.model(0), (fam.x, fam.y), space=pop.space, bn=pop.bn)
    if fam.name in ("gn_cnn", "transformer"):  # convolutions / attention: one point at a time
        assert ev.backend == "sequential"
    got = ev.evaluate(pop.as_points())["loss"].double()
    want = torch.tensor([direct_loss(m, fam.x, fam.y, fam.policy) for m in models],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-7)
    if not fam.spec.batchnorm:
        return
    # the direct computation tells the policies apart
    eval_mode = torch.tensor([direct_loss(m, fam.x, fam.y, "own") for m in models],
                             dtype=torch.float64)
    assert not torch.allclose(got, eval_mode, rtol=1e-3)
    own = Population.from_checkpoints(fam.dir, file_spec(fam.name), bn="own")
    assert own.bn == "own" and own.space.buffer_names
    ev = Evaluator(own.model(0), (fam.x, fam.y), space=own.space, bn="own")
    torch.testing.assert_close(ev.evaluate(own.as_points())["loss"].double(), eval_mode,
                               rtol=RTOL, atol=1e-7)


# ------------------------------------------------------------------------------- 2. atlas
def test_atlas_is_faithful_and_its_basins_hold_one_variant_each(fam, atlas):
    a, faith, summary = atlas.atlas, atlas.faith, atlas.summary
    assert summary["bn"] == fam.policy
    # the atlas's losses at the models are the direct computation's
    want = [direct_loss(load(fam.name, p), fam.x, fam.y, fam.policy) for p in fam.pop.paths]
    np.testing.assert_allclose(faith["per_model"]["true_loss"], want, rtol=RTOL)
    assert faith["decoded_loss_relative_error_median"] <= 0.01, faith["per_model"]
    loss = np.asarray(a.field_.values["loss"])
    assert np.mean(~np.isfinite(loss)) <= 0.10
    basins = summary["basins"]
    assert basins["num_variants"] == len(fam.variants)
    mixing = [b for b in basins["variants_per_basin"] if len(b) != 1]
    assert not mixing, basins["variants_per_basin"]
    # the same from the models' basins and their labels, independently of the summary
    labels = [lab["variant"] for lab in fam.pop.labels]
    for b in set(a.basins_.tolist()):
        assert len({labels[i] for i in np.flatnonzero(a.basins_ == b)}) == 1
    n = len(fam.variants)
    assert n <= basins["num_model_basins"] <= n + 3, basins


# ----------------------------------------------------------------------------- 3. barrier
def test_barrier_endpoints_are_the_models_under_the_policy(fam):
    a, b = load(fam.name, final_path(fam, "lr0")), load(fam.name, final_path(fam, "lr1"))
    policies = [fam.policy] + (["own"] if fam.spec.batchnorm else [])
    for policy in policies:
        ds = barrier_curve(a, b, (fam.x, fam.y), points=5,
                           bn=None if policy == "none" else policy)
        assert ds.attrs["bn"] == policy
        loss = ds["loss"].values.astype(np.float64)
        assert loss[0] == pytest.approx(direct_loss(a, fam.x, fam.y, policy), rel=RTOL)
        assert loss[-1] == pytest.approx(direct_loss(b, fam.x, fam.y, policy), rel=RTOL)
        t = ds["t"].values
        assert np.allclose(t, np.linspace(0, 1, 5))
        excess = loss - ((1 - t) * loss[0] + t * loss[-1])
        assert ds.attrs["barrier"] == pytest.approx(float(excess.max()), rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------- 4. weight matching
def test_weight_matching_recovers_a_permuted_copy(fam):
    name = fam.name
    model = load(name, final_path(fam, "lr2"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)  # nothing of a zoo model left out
        spec = permutation_spec(model)
    assert spec.groups, f"{name}: the permutation spec finds no group"
    perms = random_permutation(spec, torch.Generator().manual_seed(1))
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    permuted = permute_model(model, spec, perms)
    ref = model.state_dict()
    assert any(not torch.equal(ref[k], v) for k, v in permuted.state_dict().items())
    aligned, found = weight_matching(model, permuted, return_perms=True)  # no example input
    for k, v in aligned.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)
    for g, p in perms.items():
        assert torch.equal(found[g], torch.argsort(p))


def _hand_permuted_ffn(model: nn.Module) -> nn.Module:
    """A copy of a zoo transformer with the FFN's hidden units permuted by hand (not
    through the spec): same function, other weights."""
    new = copy.deepcopy(model)
    layer = new.layer
    p = torch.randperm(layer.linear1.out_features, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        layer.linear1.weight.copy_(layer.linear1.weight[p])
        layer.linear1.bias.copy_(layer.linear1.bias[p])
        layer.linear2.weight.copy_(layer.linear2.weight[:, p])
    return new


def test_weight_matching_undoes_a_hand_permuted_ffn(fam):
    """The transformer's FFN units permuted by hand are matched back exactly (the spec's
    rule for nn.TransformerEncoderLayer, checked without the spec's own permute)."""
    if fam.name != "transformer":
        pytest.skip("the transformer family's FFN")
    model = load(fam.name, final_path(fam, "lr2"))
    permuted = _hand_permuted_ffn(model)
    x = fam.x[:64]
    with torch.no_grad():
        torch.testing.assert_close(permuted.eval()(x), model.eval()(x), rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aligned = weight_matching(model, permuted)
    for k, v in aligned.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k], rtol=0, atol=0, msg=k)


def test_weight_matching_keeps_the_function(fam):
    """The aligned copy computes the permuted model's function, which is the model's."""
    model = load(fam.name, final_path(fam, "lr2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = permutation_spec(model)
        permuted = permute_model(model, spec, random_permutation(
            spec, torch.Generator().manual_seed(1)))
        aligned = weight_matching(model, permuted)
    x = fam.x[:64]
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(permuted.eval()(x), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(aligned.eval()(x), ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- 5. Hessian
def hessian_group(model: nn.Module, most: int = 600) -> str:
    """The last Linear/Conv layer with at most ``most`` parameters (a dense Hessian)."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, (nn.Linear, nn.Conv2d)) and n
             and sum(p.numel() for p in m.parameters()) <= most]
    return names[-1]


def test_top_hessian_eigenvalue_equals_the_dense_hessians(fam):
    model = load(fam.name, final_path(fam, "lr1"))
    x, y = fam.x[:N_HESSIAN], fam.y[:N_HESSIAN]
    group = hessian_group(model)
    got = hessian_eigen(model, (x, y), k=1, group=group)
    ref = with_batch_statistics(model, x) if fam.spec.batchnorm else model
    params = dict(ref.named_parameters())
    names = [n for n in params if n.startswith(group + ".")]
    sizes = [params[n].numel() for n in names]
    assert got.eigenvectors.shape[1] == sum(p.numel() for p in params.values())

    def dense_top(net: nn.Module) -> float:
        buffers = dict(net.named_buffers())

        def loss(w):
            values = dict(zip(names, (c.view_as(params[n]) for n, c in
                                      zip(names, w.split(sizes), strict=True)), strict=True))
            out = torch.func.functional_call(net, {**params, **buffers, **values}, (x,))
            return nn.functional.cross_entropy(out, y)

        w0 = torch.cat([params[n].detach().reshape(-1) for n in names])
        with sdpa_kernel([SDPBackend.MATH]):  # the fused CPU attention has no double backward
            try:
                H = torch.autograd.functional.hessian(loss, w0, vectorize=True)
            except RuntimeError:  # no batching rule (GroupNorm): one backward per row
                H = torch.autograd.functional.hessian(loss, w0)
        return float(torch.linalg.eigvalsh(H.double()).max())

    top = dense_top(ref)
    assert float(got.eigenvalues[0]) == pytest.approx(top, rel=1e-4, abs=1e-6)
    if fam.spec.batchnorm:  # the checkpoint's own statistics give another Hessian
        assert abs(dense_top(model) - top) > 1e-3 * abs(top)


# -------------------------------------------------------------------------------- 6. LLC
def test_llc_is_finite_positive_and_below_half_the_dimension(fam):
    """At the final model of the smallest learning rate. (At the largest one, mlp,
    mlp_dropout and bn_cnn give negative estimates: w* is not a local minimum.)"""
    model = load(fam.name, final_path(fam, "lr0"))
    d = sum(p.numel() for p in model.parameters())
    res = llc(model, (fam.x, fam.y), num_chains=2, num_draws=40, seed=0)
    est = res.llc_mean
    assert np.isfinite(est) and not res.diverged
    assert 0 < est < d / 2
    # L(w*) is the direct computation under the policy, and every chain's estimate is
    # nbeta (mean draw loss - L(w*)) of its own loss trace
    assert res.init_loss == pytest.approx(direct_loss(model, fam.x, fam.y, fam.policy),
                                             rel=RTOL)
    per_chain = res.nbeta * (res.loss_trace.double().mean(1) - res.init_loss)
    torch.testing.assert_close(torch.as_tensor(res.llc_per_chain).double(), per_chain,
                               rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------------------------- 7. CLI
DATA_FACTORY = '''\
from pathlib import Path

import torch
from torch.utils.data import TensorDataset


def make():
    x, y = torch.load(Path(__file__).with_name("xy.pt"), weights_only=True)
    return TensorDataset(x, y)
'''


def test_cli_atlas_on_the_checkpoint_folder(fam):
    work = fam.tmp / "cli"
    work.mkdir()
    x, y = fam.x[:N_CLI], fam.y[:N_CLI]
    torch.save((x, y), work / "xy.pt")
    (work / "zoo_data.py").write_text(DATA_FACTORY)
    out = work / "atlas"
    res = CliRunner().invoke(app, [
        "atlas", "--population", str(fam.dir), "--model", file_spec(fam.name),
        "--data", f"{work / 'zoo_data.py'}:make", "--method", "pca", "--resolution", "6",
        "--budget", "50", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "atlas_summary.json").read_text())
    assert summary["bn"] == fam.policy
    assert summary["models"] == len(fam.variants) * 3
    assert summary["variants"] == len(fam.variants)
    assert json.loads(res.stdout.strip().splitlines()[-1])["bn"] == fam.policy
    # the CLI measured the loss on the factory's samples, under the policy
    faith = json.loads((out / "faithfulness.json").read_text())
    want = [direct_loss(load(fam.name, p), x, y, fam.policy) for p in fam.pop.paths]
    np.testing.assert_allclose(faith["per_model"]["true_loss"], want, rtol=RTOL)
