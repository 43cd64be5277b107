"""The Evaluator's backends: how a chunk of parameter points is evaluated.

Each backend says whether it applies to an evaluator's model and data
(:meth:`Backend.why_not`: ``None``, or the reason it does not) and evaluates one chunk
(:meth:`Backend.run`: ``Tensor[P, D] -> {"loss": Tensor[P], ...}``). The Evaluator
tries them once, when it is built, in the order of ``BACKENDS`` (``backend="auto"``;
``"fast"`` tries the fast ones only), keeps the first that applies and logs the
choice with the reasons the ones before it were passed over. To add a backend: a
subclass with a unique ``name``, registered in ``BACKENDS`` at its place in the order.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, fx
from torch.func import functional_call

from .kernels import bn_triton, conv_triton
from .kernels.bnfold import fold_batchnorm
from .kernels.mlp import detect_mlp, mlp_logits
from .vmap_ops import slow_under_vmap_on_cpu

if TYPE_CHECKING:  # pragma: no cover
    from .evaluate import Evaluator

__all__ = ["BACKENDS", "Backend", "backend_names", "get_backend"]

log = logging.getLogger("lossatlas.evaluate")


class Backend:
    """One way of evaluating a chunk of points (stateless; what it prepares lives on the
    Evaluator).

    Attributes
    ----------
    name : str
        Shown as ``Evaluator.backend`` and in ``repr``.
    fast : bool
        A specialised path (``backend="fast"`` chooses among these only).
    family : str
        How the Evaluator sizes its chunks and batches for it: ``"mlp"``, ``"bnfold"``,
        ``"bnrecompute"`` (one point at a time over all samples), ``"loop"`` (one point at
        a time over large batches) or ``"generic"``.
    """

    name: ClassVar[str] = ""
    fast: ClassVar[bool] = False
    family: ClassVar[str] = "generic"

    def why_not(self, ev: Evaluator) -> str | None:
        """None when this backend applies to ``ev``'s model and data (what it needs is
        then prepared on ``ev``), else why it does not."""
        raise NotImplementedError

    def run(self, ev: Evaluator, chunk: Tensor) -> dict[str, Tensor]:
        """Mean loss and metrics, ``{name: Tensor[P]}`` on the device, of the points
        ``chunk`` [P, D]."""
        raise NotImplementedError


def _plain_tensor_inputs(ev: Evaluator) -> str | None:
    """Why a specialised path cannot be used: BatchNorm statistics recomputed at every
    point, or inputs that are not one tensor."""
    if ev.bn == "recompute":
        return "bn='recompute' (statistics of every point's batch)"
    if not isinstance(ev.data.x, Tensor):
        return "the inputs are not one tensor"
    return None


class FusedMLP(Backend):
    """Linear-ReLU-Linear-ReLU-Linear as one fused Triton kernel (CUDA, bf16, default loss
    and metrics): sums of loss and correct predictions, no activations stored."""

    name, fast, family = "fast-mlp-fused", True, "mlp"

    def why_not(self, ev: Evaluator) -> str | None:
        why = FastMLP().why_not(ev)
        if why is not None:
            return why
        why = ev._fused_why_not()
        if why is not None:
            ev._mlp = None
        return why

    def run(self, ev: Evaluator, chunk: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return ev._evaluate_fused(chunk)


class FastMLP(Backend):
    """A plain chain of Linear layers and elementwise activations: the first layer as one
    GEMM over all points, batched GEMMs after (:mod:`lossatlas.kernels.mlp`)."""

    name, fast, family = "fast-mlp", True, "mlp"

    def why_not(self, ev: Evaluator) -> str | None:
        why = _plain_tensor_inputs(ev)
        if why is not None:
            return why
        plan, why = detect_mlp(ev.model)
        if plan is None:
            return why
        x0 = ev.data.subset(1).x
        if not x0.is_floating_point() or (x0.dim() != 2 and not plan.flatten):
            return "the inputs are not float vectors [n, features]"
        state = ev.model.state_dict()
        why = ev._probe(lambda x: mlp_logits(plan, {}, state, 1, x))
        if why is None:
            ev._mlp = plan
        return why

    def run(self, ev: Evaluator, chunk: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return ev._accumulate(lambda x: ev._point_outputs_mlp(chunk, x), len(chunk))


class FoldedBN(Backend):
    """Eval-mode BatchNorm folded into the preceding convolutions per point
    (:mod:`lossatlas.kernels.bnfold`), one point at a time over a large batch."""

    name, fast, family = "fast-bnfold", True, "bnfold"

    def why_not(self, ev: Evaluator) -> str | None:
        why = _plain_tensor_inputs(ev)
        if why is not None:
            return why
        gm, fold, why = fold_batchnorm(ev.model)
        if gm is None or fold is None:
            return why
        gm = gm.to(ev.device)
        _, fixed = fold.apply({}, ev.model.state_dict())
        why = ev._probe(lambda x: functional_call(gm, fixed, (x,))[None])
        if why is None:
            ev._folded, ev._fold = gm, fold
        return why

    def run(self, ev: Evaluator, chunk: Tensor) -> dict[str, Tensor]:
        with _autotune(ev), torch.no_grad():
            return ev._accumulate(lambda x: ev._point_outputs_folded(chunk, x), len(chunk))


def _triton_conv_why_not(ev: Evaluator) -> str | None:
    """Why the Triton convolution kernel cannot serve ``ev``: it needs CUDA, bf16,
    channels-last activations and Triton (its start-up check comes after the model's)."""
    if ev.device.type != "cuda" or ev.precision != "bf16" or not ev.channels_last:
        return "it needs CUDA, precision='bf16' and channels-last activations"
    if conv_triton.triton is None:
        return "Triton is not installed"
    return None


class FusedConvBN(FoldedBN):
    """:class:`FoldedBN` with each 3x3 convolution of 16-64 channels and the bias,
    residual add and ReLU after it as one Triton kernel
    (:mod:`lossatlas.kernels.conv_triton`): CUDA, bf16, channels-last. The other layers
    run as in :class:`FoldedBN`; small batches (evaluated with vmap) use the plain
    folded model."""

    name = "fast-bnfold-fused"

    def why_not(self, ev: Evaluator) -> str | None:
        why = (_triton_conv_why_not(ev) or super().why_not(ev)
               or conv_triton.check_kernel(ev.device))
        if why is not None:
            ev._folded = ev._fold = None
            return why
        assert ev._folded is not None and ev._fold is not None
        plain, fused = ev._folded, copy.deepcopy(ev._folded)
        n = conv_triton.fuse_conv_epilogues(fused)
        if n == 0:
            why = "no 3x3 stride-1 convolution of 16, 32 or 64 channels"
        else:
            _, fixed = ev._fold.apply({}, ev.model.state_dict())
            why = ev._probe(lambda x: functional_call(fused, fixed, (x,))[None])
        if why is not None:
            ev._folded = ev._fold = None
            return why
        ev._folded, ev._folded_plain = fused, plain
        log.info("Evaluator: %d convolutions with their bias / residual / ReLU fused", n)
        return None


@contextlib.contextmanager
def _autotune(ev: Evaluator) -> Iterator[None]:
    """cuDNN times its algorithms once for the fixed shapes of many points (CUDA), unless
    deterministic results were asked for (the timing picks per process)."""
    old = torch.backends.cudnn.benchmark
    deterministic = (torch.backends.cudnn.deterministic
                     or torch.are_deterministic_algorithms_enabled())
    torch.backends.cudnn.benchmark = (ev.device.type == "cuda" and not deterministic) or old
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


class RecomputeBN(Backend):
    """``bn="recompute"`` with all samples in one batch, on CUDA: one point after another
    over all samples, channels-last, each BatchNorm layer normalising with the statistics
    of the whole batch in the evaluation pass itself (no separate statistics pass);
    ``compile=True`` adds ``torch.compile`` of the per-point forward. When the batch is
    later split (out of memory, ``use_sizes``), the chunk goes the generic way."""

    name, fast, family = "fast-bnrecompute", True, "bnrecompute"

    def why_not(self, ev: Evaluator) -> str | None:
        if ev.bn != "recompute":
            return f"bn={ev.bn!r} (this path recomputes BatchNorm statistics)"
        if ev.device.type != "cuda" and ev._backend_request != self.name:
            # on the CPU "auto" keeps the sequential backend (bench/bn_policy*.py); this
            # path runs there only when asked for by name
            return "not on CUDA"
        if ev.bn_data is not None:
            return "bn_data is given (the statistics come from other samples)"
        if not isinstance(ev.data.x, Tensor):
            return "the inputs are not one tensor"
        asked = ev._asked_batch_size
        if asked is not None and asked < ev.num_samples:
            return f"batch_size={asked} < {ev.num_samples} samples (statistics need them all)"
        from .evaluate import RECOMPUTE_ONE_BATCH

        need = ev._live_bytes() * ev.num_samples
        if need > max(ev.memory_budget, RECOMPUTE_ONE_BATCH):
            return (f"all {ev.num_samples} samples in one batch need ~{need >> 20} MiB of "
                    "activations, above the memory budget")
        return None

    def run(self, ev: Evaluator, chunk: Tensor) -> dict[str, Tensor]:
        if not ev.recompute_in_pass:
            return ev._evaluate_generic(chunk)
        with _autotune(ev), torch.no_grad():
            return ev._accumulate(lambda x: ev._point_outputs_recompute(chunk, x), len(chunk))


class TritonConvRecompute(RecomputeBN):
    """:class:`RecomputeBN` with each 3x3 convolution of 16-64 channels as the Triton
    kernel of :mod:`lossatlas.kernels.conv_triton` (CUDA, bf16, channels-last). Eagerly,
    where a BatchNorm follows the convolution, the kernel also returns the statistics of
    its output and one elementwise kernel normalises it, adds the residual and applies
    the ReLU (:mod:`lossatlas.kernels.bn_triton`); with ``compile=True`` the BatchNorm
    layers are left to ``torch.compile``. The other layers run as in
    :class:`RecomputeBN`."""

    name = "fast-bnrecompute-triton"

    def why_not(self, ev: Evaluator) -> str | None:
        why = (_triton_conv_why_not(ev) or super().why_not(ev)
               or conv_triton.check_kernel(ev.device))
        if why is not None:
            return why
        try:
            gm = fx.symbolic_trace(copy.deepcopy(ev.model))
        except Exception as err:  # noqa: BLE001 - an untraceable model takes another path
            return f"torch.fx cannot trace the model ({type(err).__name__}: {err})"
        n = conv_triton.fuse_conv_epilogues(gm)
        if n == 0:
            return "no 3x3 stride-1 convolution of 16, 32 or 64 channels"
        # with compile=True inductor's own fusion of each BatchNorm around the kernel is
        # the faster (ResNet-56 on an H200: 44.0 against 38.7 points/s; eagerly the
        # statistics from the kernel: 33.4 against ~13): BENCHMARKS.md
        n_bn = 0 if ev.compile else bn_triton.fuse_batchnorm_statistics(gm)
        why = ev._probe(lambda x: ev._recompute_forward({}, x, gm)[None])
        if why is None:
            ev._recompute_model = gm
            log.info("Evaluator: %d convolutions run as Triton kernels, %d of them with the "
                     "statistics of the BatchNorm after them", n, n_bn)
        return why


class Compiled(Backend):
    """One point after another through ``torch.compile`` of the per-point forward with the
    loss and metrics (``compile=True``): for large models (a transformer), whose points
    each fill the device, the compiled graph fuses the elementwise work and the loss
    (no ``[n, T, vocab]`` float32 logits)."""

    name, family = "compiled", "loop"

    def why_not(self, ev: Evaluator) -> str | None:
        if not ev.compile:
            return "compile=False"
        return _plain_tensor_inputs(ev)

    def run(self, ev: Evaluator, chunk: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return ev._evaluate_compiled(chunk)


class Vmap(Backend):
    """``torch.func.functional_call`` vectorised over the points with ``vmap`` (any
    model whose operations have batching rules); BatchNorm statistics recomputed."""

    name = "vmap"

    def why_not(self, ev: Evaluator) -> str | None:
        if ev.device.type == "cpu" and ev.bn == "recompute":
            # measured on 2 shared cores (bench/bn_policy_interleaved.py): one point at a
            # time 0.87-1.24x vmap's speed (faster in 5 of 6 runs: CNN, ResNet-20/56),
            # with one point's activations in memory instead of a chunk's
            return "on the CPU with bn='recompute' one point at a time is faster"
        slow = (slow_under_vmap_on_cpu(ev.model, ev.data.subset(2).x)
                if ev.device.type == "cpu" else [])
        if slow:
            # measured on 2 cores: one point at a time 2-4x vmap's speed for a GroupNorm
            # CNN and a 2-layer GPT (bench/transformer_slice.py --tiny): under vmap the
            # convolutions are grouped over points and attention takes its math path
            return f"on the CPU a model with {' and '.join(slow)} runs one point at a time faster"
        return ev._vmap_why_not()

    def run(self, ev: Evaluator, chunk: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return ev._evaluate_generic(chunk)


class Sequential(Vmap):
    """Each point's tensors through ``functional_call`` one point after another (any
    model; the CPU's choice under ``bn="recompute"``)."""

    name, family = "sequential", "loop"  # one point's activations at a time

    def why_not(self, ev: Evaluator) -> str | None:
        return None


#: Every backend, in the order ``backend="auto"`` tries them.
BACKENDS: tuple[Backend, ...] = (FusedMLP(), FastMLP(), FusedConvBN(), FoldedBN(),
                                 TritonConvRecompute(), RecomputeBN(), Compiled(), Vmap(),
                                 Sequential())


def backend_names() -> list[str]:
    """Names of the registered backends, in the order ``"auto"`` tries them."""
    return [b.name for b in BACKENDS]


def get_backend(name: str) -> Backend:
    """The registered backend called ``name`` (ValueError naming the known ones)."""
    for b in BACKENDS:
        if b.name == name:
            return b
    raise ValueError(f"Evaluator: no backend {name!r}; registered: {backend_names()}")
