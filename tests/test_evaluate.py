import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossatlas import Evaluator, ParamSpace
from lossatlas.errors import UnsupportedModelError
from lossatlas.models import create


def _bn_warm(model, x):
    """Give BatchNorm layers non-trivial running statistics."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x + 0.1 * torch.randn_like(x))
    return model.eval()


CASES = {
    "mlp": (lambda: create("mlp", in_features=40, hidden=(32, 32), num_classes=10),
            lambda n: torch.randn(n, 40)),
    "cnn": (lambda: create("cnn"), lambda n: torch.randn(n, 40)),
    "resnet20": (lambda: create("resnet20", num_classes=10), lambda n: torch.randn(n, 3, 32, 32)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("buffers", [False, True])
def test_vmap_and_sequential_agree(name, buffers):
    make, inputs = CASES[name]
    torch.manual_seed(0)
    model = make()
    n = 24 if name == "resnet20" else 200
    x, y = inputs(n), torch.randint(0, 10, (n,))
    if name == "resnet20":
        _bn_warm(model, x)
    space = ParamSpace(model, buffers=buffers)
    w = space.flatten(model)
    pts = w[None] + 0.05 * w.abs().mean() * torch.randn(4, space.dim)
    if buffers:  # keep variances positive
        for seg in space.segments:
            if seg.name.endswith("running_var"):
                pts[:, seg.start:seg.stop] = pts[:, seg.start:seg.stop].abs() + 0.1
    a = Evaluator(model, (x, y), space=space, backend="vmap", batch_size=n // 3).evaluate(pts)
    b = Evaluator(model, (x, y), space=space, backend="sequential", batch_size=n // 2).evaluate(pts)
    torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a["accuracy"], b["accuracy"])


def test_matches_plain_forward_and_leaves_model_unchanged():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x, y = torch.randn(50, 5), torch.randint(0, 3, (50,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ev = Evaluator(model, (x, y), batch_size=16)
    out = ev.evaluate(ev.space.flatten(model))
    with torch.no_grad():
        logits = model(x)
    assert math.isclose(float(out["loss"]), float(nn.functional.cross_entropy(logits, y)),
                        rel_tol=1e-6)
    assert float(out["accuracy"]) == float((logits.argmax(1) == y).float().mean())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_data_forms_agree():
    torch.manual_seed(2)
    model = nn.Linear(4, 3)
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    pts = torch.randn(3, ParamSpace(model).dim)
    ref = Evaluator(model, (x, y)).evaluate(pts)["loss"]
    ds = TensorDataset(x, y)
    for data in (ds, DataLoader(ds, batch_size=7)):
        torch.testing.assert_close(Evaluator(model, data).evaluate(pts)["loss"], ref)


def test_custom_loss_and_metric():
    model = nn.Linear(3, 1)
    x = torch.randn(20, 3)
    y = x.sum(1, keepdim=True)
    ev = Evaluator(model, (x, y), loss_fn=nn.functional.mse_loss,
                   metrics={"mae": lambda o, t: (o - t).abs().mean()})
    out = ev.evaluate(ev.space.flatten(model))
    with torch.no_grad():
        pred = model(x)
    assert math.isclose(float(out["loss"]), float(((pred - y) ** 2).mean()), rel_tol=1e-5)
    assert math.isclose(float(out["mae"]), float((pred - y).abs().mean()), rel_tol=1e-5)
    assert math.isnan(float(out["accuracy"]))


def test_nonfinite_points_are_data_not_errors():
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    ev = Evaluator(model, (x, y))
    pts = torch.randn(3, ev.space.dim)
    pts[1, 0] = float("nan")
    pts[2] *= 1e30
    out = ev.evaluate(pts)
    assert math.isfinite(float(out["loss"][0]))
    assert not math.isfinite(float(out["loss"][1]))
    assert ev.nonfinite >= 1


def test_oom_halves_chunk_and_retries(monkeypatch):
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    ev = Evaluator(model, (x, y), chunk_size=8)
    real = ev._evaluate_chunk
    calls = []

    def flaky(chunk):
        calls.append(len(chunk))
        if len(chunk) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(chunk)

    monkeypatch.setattr(ev, "_evaluate_chunk", flaky)
    pts = torch.randn(7, ev.space.dim)
    out = ev.evaluate(pts)
    assert ev.chunk_size == 2 and calls[:3] == [7, 4, 2]
    ref = Evaluator(model, (x, y)).evaluate(pts)
    torch.testing.assert_close(out["loss"], ref["loss"])


OOM_CHILD = """
import json, resource, torch
torch.set_num_threads(1)
from torch import nn
from lossatlas import Evaluator
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(40, 512), nn.ReLU(), nn.Linear(512, 10))
X, y = torch.randn(2000, 40), torch.randint(0, 10, (2000,))
ref_ev = Evaluator(model, (X, y), device=\"cpu\", chunk_size=4, batch_size=2000)
D = ref_ev.space.dim
pts = ref_ev.space.flatten(model) + 0.01 * torch.randn(512, D)
ref = ref_ev.evaluate(pts)[\"loss\"]
ev = Evaluator(model, (X, y), device=\"cpu\", chunk_size=512, batch_size=2000)
vm = int(open(\"/proc/self/statm\").read().split()[0]) * 4096
resource.setrlimit(resource.RLIMIT_AS, (vm + 200 * 2**20, resource.RLIM_INFINITY))
out = ev.evaluate(pts)[\"loss\"]
print(json.dumps({\"backend\": ev.backend, \"chunk\": ev.chunk_size, \"batch\": ev.batch_size, \"maxdiff\": float((out - ref).abs().max())}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="needs RLIMIT_AS and /proc")
def test_real_out_of_memory_on_the_cpu_backs_off():
    """A child process caps its address space 200 MB above set-up; 512 points at once need
    far more (2.1 GB for one activation), the CPU allocator fails for real, the evaluator
    halves the chunk until it fits and the values equal a run with small chunks. (Where
    it stops depends on how much freed memory the allocator still holds mapped: 32-256.)"""
    out = subprocess.run([sys.executable, "-c", OOM_CHILD], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["chunk"] < 512 and res["maxdiff"] == 0.0


def test_bn_recompute_uses_data_statistics():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x, y = torch.randn(64, 4) * 3 + 1, torch.randint(0, 2, (64,))
    ev = Evaluator(model, (x, y), bn="recompute", batch_size=64)
    out = ev.evaluate(ev.space.flatten(model))
    # train-mode BatchNorm over all samples at once (biased variance)
    ref = __import__("copy").deepcopy(model).train()
    with torch.no_grad():
        expect = nn.functional.cross_entropy(ref(x), y)
    assert math.isclose(float(out["loss"]), float(expect), rel_tol=1e-5)
    # the user's model statistics are untouched
    assert torch.equal(model[1].running_mean, torch.zeros(8))


def test_bad_input_errors():
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    with pytest.raises(ValueError, match="precision"):
        Evaluator(model, (x, y), precision="fp8")
    ev = Evaluator(model, (x, y))
    with pytest.raises(ValueError, match=r"\[P, 8\]"):
        ev.evaluate(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="samples"):
        Evaluator(model, (x, y[:5]))
    with pytest.raises(UnsupportedModelError, match="fails on"):
        Evaluator(model, (torch.randn(10, 4), y))


class _TiedLM(nn.Module):
    """Embedding -> Linear+GELU -> LM head tied to the embedding: ``[n, T] -> [n, T, V]``."""

    def __init__(self, vocab: int = 11, width: int = 8):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx):
        return self.head(nn.functional.gelu(self.mix(self.tok(idx))))


def _lm_case(n: int = 12, t: int = 5, vocab: int = 11):
    torch.manual_seed(7)
    model = _TiedLM(vocab).eval()
    g = torch.Generator().manual_seed(8)
    x = torch.randint(0, vocab, (n, t), generator=g)
    y = torch.randint(0, vocab, (n, t), generator=g)
    y[0, :2] = -100  # ignored positions
    space = ParamSpace(model)
    pts = space.flatten(model) + 0.1 * torch.randn(3, space.dim, generator=g)
    return model, x, y, space, pts


def _lm_reference(model, space, pts, x, y):
    """Token-level cross-entropy (ignore index -100) of each point with the head tied."""
    out = []
    for p in pts:
        m = _TiedLM(model.tok.num_embeddings, model.tok.embedding_dim)
        space.load_into(m, p)
        logits = m(x)
        out.append(nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               y.reshape(-1), ignore_index=-100))
    return torch.stack(out).detach()


def test_tied_parameters_evaluate_like_the_model():
    model, x, y, space, pts = _lm_case()
    assert "head.weight" not in space.names  # one tensor, laid out once
    ref = _lm_reference(model, space, pts, x, y)
    for backend in ("vmap", "sequential"):
        out = Evaluator(model, (x, y), backend=backend, device="cpu").evaluate(pts)
        torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-6)


def test_compiled_backend_equals_the_reference(monkeypatch, caplog):
    """The "compiled" backend (per-point forward + loss; torch.compile replaced by the
    identity so the test needs no compiler) gives the token-level losses of the model."""
    model, x, y, space, pts = _lm_case()
    monkeypatch.setattr(torch, "compile", lambda fn, **_kw: fn)
    with caplog.at_level(logging.INFO, logger="lossatlas.evaluate"):
        ev = Evaluator(model, (x, y), compile=True, device="cpu", batch_size=5)
    assert ev.backend == "compiled"
    assert "backend 'compiled'" in caplog.text and "not fast-mlp:" in caplog.text
    out = ev.evaluate(pts)
    torch.testing.assert_close(out["loss"], _lm_reference(model, space, pts, x, y),
                               rtol=1e-5, atol=1e-6)
    acc = Evaluator(model, (x, y), backend="vmap", device="cpu").evaluate(pts)["accuracy"]
    torch.testing.assert_close(out["accuracy"], acc)
    assert Evaluator(model, (x, y), device="cpu").backend == "vmap"  # compile=False


class _ItemModel(nn.Module):
    """A model vmap cannot run (a Python number from a tensor)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x) * float(self.lin.bias.sum() > -1e9)


def test_vmap_failure_chooses_sequential_once(caplog):
    torch.manual_seed(9)
    model = _ItemModel()
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    with caplog.at_level(logging.INFO, logger="lossatlas.evaluate"):
        ev = Evaluator(model, (x, y), device="cpu")
    assert ev.backend == "sequential"
    assert "vmap failed on this model" in caplog.text and "backend 'sequential'" in caplog.text
    space = ev.space
    pts = space.flatten(model) + 0.1 * torch.randn(2, space.dim)
    out = ev.evaluate(pts)
    assert ev.backend == "sequential"
    ref = []
    for p in pts:
        space.load_into(model, p)
        ref.append(nn.functional.cross_entropy(model(x), y))
    torch.testing.assert_close(out["loss"], torch.stack(ref).detach(), rtol=1e-6, atol=1e-7)
    with pytest.raises(Exception):  # noqa: B017 - asked for vmap: no fallback
        Evaluator(model, (x, y), device="cpu", backend="vmap").evaluate(pts)


def test_backend_registry_names_and_errors():
    from lossatlas.backends import BACKENDS, backend_names, get_backend

    assert backend_names() == ["fast-mlp-fused", "fast-mlp", "fast-bnfold-fused", "fast-bnfold",
                               "fast-bnrecompute-triton", "fast-bnrecompute", "compiled", "vmap",
                               "sequential"]
    assert len({b.name for b in BACKENDS}) == len(BACKENDS)
    assert get_backend("vmap").name == "vmap"
    with pytest.raises(ValueError, match="no backend 'nope'; registered"):
        get_backend("nope")


class _SdpaLM(nn.Module):
    """A one-layer causal attention language model through scaled_dot_product_attention."""

    def __init__(self, vocab: int = 11, d: int = 8) -> None:
        super().__init__()
        self.tok, self.qkv, self.head = nn.Embedding(vocab, d), nn.Linear(d, 3 * d), nn.Linear(d, vocab)

    def forward(self, x):
        h = self.tok(x)
        q, k, v = self.qkv(h).unflatten(-1, (3, 2, -1)).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(h + a.transpose(1, 2).flatten(-2))


def test_cpu_attention_and_conv_models_run_one_point_at_a_time(caplog):
    """On the CPU, auto takes "sequential" for a model calling scaled_dot_product_attention
    (the fused CPU kernel has no vmap rule), for nn.MultiheadAttention and for
    convolutions, with the values of vmap and of the model itself; a model without them
    keeps vmap."""
    torch.manual_seed(0)
    model = _SdpaLM().eval()
    x, y = torch.randint(0, 11, (6, 5)), torch.randint(0, 11, (6, 5))
    ev = Evaluator(model, (x, y), device="cpu")
    assert ev.backend == "sequential"
    space = ev.space
    pts = space.flatten(model) + 0.05 * torch.randn(3, space.dim)
    vm = Evaluator(model, (x, y), device="cpu", backend="vmap")
    torch.testing.assert_close(ev.evaluate(pts)["loss"], vm.evaluate(pts)["loss"],
                               rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        want = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
    torch.testing.assert_close(ev.evaluate(space.flatten(model)[None])["loss"][0], want,
                               rtol=1e-5, atol=1e-6)
    mha = nn.Sequential(nn.Embedding(11, 8), _MHA(), nn.Linear(8, 11)).eval()
    assert Evaluator(mha, (x, y), device="cpu").backend == "sequential"
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 3)).eval()
    xi, yi = torch.randn(6, 1, 6, 6), torch.randint(0, 3, (6,))
    with caplog.at_level(logging.INFO, logger="lossatlas.evaluate"):
        ev = Evaluator(cnn, (xi, yi), device="cpu")
    assert ev.backend == "sequential" and "with convolutions runs one point" in caplog.text
    pts = ev.space.flatten(cnn) + 0.05 * torch.randn(3, ev.space.dim)
    torch.testing.assert_close(ev.evaluate(pts)["loss"], Evaluator(
        cnn, (xi, yi), device="cpu", backend="vmap").evaluate(pts)["loss"], rtol=1e-5, atol=1e-6)
    model, x, y, _, _ = _lm_case()  # no attention
    assert Evaluator(model, (x, y), device="cpu").backend == "vmap"


class _MHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, h):
        return self.attn(h, h, h, need_weights=False)[0]
