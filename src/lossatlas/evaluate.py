"""The Evaluator: loss and metrics of many parameter points at once."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from . import batchnorm as bnp
from ._compat import renamed_argument
from .backends import BACKENDS, Backend, backend_names, get_backend
from .batches import as_tensor_data, num_samples, to_device
from .errors import InputTypeError, MissingKeyError, UnsupportedModelError
from .kernels.bnfold import FoldPlan
from .kernels.mlp import MLPPlan, mlp_logits
from .kernels.mlp_triton import fused_mlp_ce
from .kernels.mlp_triton import supports as fused_supports
from .space import ParamSpace

__all__ = ["Evaluator", "accuracy", "precision_context"]

log = logging.getLogger(__name__)

Precision = Literal["fp32", "tf32", "bf16"]
BackendName = Literal["auto", "fast", "vmap", "sequential", "fast-mlp-fused", "fast-mlp",
                      "fast-bnfold-fused", "fast-bnfold", "fast-bnrecompute-triton",
                      "fast-bnrecompute", "compiled"]
LossFn = Callable[[Tensor, Tensor], Tensor]


def accuracy(output: Tensor, target: Tensor) -> Tensor:
    """Fraction of samples whose arg-max class equals the integer target (NaN otherwise)."""
    if output.ndim < 2 or target.is_floating_point() or output.shape[:-1] != target.shape:
        return torch.full((), float("nan"), device=output.device)
    return (output.argmax(-1) == target).float().mean()


#: Targets equal to this are left out of the cross-entropy (PyTorch's convention).
IGNORE_INDEX = -100


def _cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy (nats) over every target position; ``output [..., C]``,
    integer ``target [...]``; positions equal to ``IGNORE_INDEX`` are left out."""
    return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1),
                                       ignore_index=IGNORE_INDEX)


def _mse(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all entries (output and target of one shape)."""
    return nn.functional.mse_loss(output.reshape(target.shape).float(), target.float())


#: Losses by name (``Evaluator(loss_fn="mse")``, ``--loss mse``).
LOSSES: dict[str, LossFn] = {"cross_entropy": _cross_entropy, "mse": _mse}


@renamed_argument("where", "who")
def resolve_loss(loss_fn: LossFn | str | None, y: Tensor, who: str = "Evaluator"
                 ) -> tuple[LossFn, str]:
    """The loss function and its name: a callable as given, a name from ``LOSSES``, or
    by default cross-entropy for integer targets and MSE for float targets."""
    if callable(loss_fn):
        return loss_fn, getattr(loss_fn, "__name__", "custom")
    if loss_fn is None:
        loss_fn = "mse" if y.is_floating_point() else "cross_entropy"
    if loss_fn not in LOSSES:
        raise ValueError(f"{who}: loss_fn must be a callable or one of {sorted(LOSSES)}, "
                         f"got {loss_fn!r}")
    return LOSSES[loss_fn], loss_fn


@renamed_argument("where", "who")
def model_output(out, output: str | int | Callable | None = None, who: str = "Evaluator"
                 ) -> Tensor:
    """The tensor the loss is computed on from what a model's forward returns.

    ``output=None``: a Tensor as is; a dict or an object with ``logits`` (Hugging Face
    style) gives its ``logits``; anything else is refused, naming what was returned.
    A string picks a key or attribute, an integer an element of a tuple, a callable
    is applied to the output."""
    if callable(output):
        return output(out)
    if output is None:
        if isinstance(out, Tensor):
            return out
        if isinstance(out, dict) and "logits" in out:
            return out["logits"]
        if hasattr(out, "logits") and isinstance(out.logits, Tensor):
            return out.logits
        kind = (f"a dict with keys {sorted(map(str, out))}" if isinstance(out, dict)
                else f"a {type(out).__name__}" + (f" of {len(out)}" if isinstance(
                    out, (tuple, list)) else ""))
        raise InputTypeError(f"{who}: the model returns {kind}, not a tensor; pass "
                             "output='<key or attribute>' (CLI --output-key) or an index")
    if isinstance(output, int):
        if not isinstance(out, (tuple, list)) or not -len(out) <= output < len(out):
            raise InputTypeError(f"{who}: output={output} but the model returns "
                                 f"{type(out).__name__}")
        return out[output]
    if isinstance(out, dict):
        if output not in out:
            raise MissingKeyError(f"{who}: output={output!r} is not a key of the model's "
                                  f"output (keys {sorted(map(str, out))})")
        return out[output]
    if not hasattr(out, output):
        raise InputTypeError(f"{who}: output={output!r}: the model's {type(out).__name__} "
                             "output has no such attribute")
    return getattr(out, output)


def call_model(model: nn.Module, params: dict[str, Tensor], x) -> object:
    """``functional_call`` with inputs as the model takes them: a dict of inputs as
    keyword arguments, a tuple as positional arguments, else one argument."""
    if isinstance(x, dict):
        return functional_call(model, params, (), x)
    if isinstance(x, tuple):
        return functional_call(model, params, x)
    return functional_call(model, params, (x,))


def fixed_tensors(model: nn.Module, names) -> dict[str, Tensor]:
    """The model's state outside ``names`` (the laid-out tensors): buffers and parameters
    not varied, without the second names of tied parameters (``functional_call`` ties
    them to the first, e.g. a language model's head to its token embedding)."""
    names = set(names)
    aliases = ({n for n, _ in model.named_parameters(remove_duplicate=False)}
               - {n for n, _ in model.named_parameters()})
    return {k: v for k, v in model.state_dict().items() if k not in names and k not in aliases}


@contextlib.contextmanager
def batchable_layers(math_attention: bool = True) -> Iterator[None]:
    """PyTorch's fused inference paths of ``nn.TransformerEncoderLayer`` and
    ``nn.MultiheadAttention`` have no ``vmap`` batching rule (a slow per-sample
    fallback) and no forward-mode AD: run them through their plain path. With
    ``math_attention``, ``scaled_dot_product_attention`` also takes its math path (the
    CPU's fused kernel has neither a batching rule nor forward-mode AD)."""
    with contextlib.ExitStack() as stack:
        mha = getattr(torch.backends, "mha", None)
        if mha is not None and hasattr(mha, "set_fastpath_enabled"):
            old = mha.get_fastpath_enabled()
            mha.set_fastpath_enabled(False)
            stack.callback(mha.set_fastpath_enabled, old)
        if math_attention:
            try:
                from torch.nn.attention import SDPBackend, sdpa_kernel
            except ImportError:  # pragma: no cover - older PyTorch
                pass
            else:
                stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        yield


@contextlib.contextmanager
def precision_context(precision: Precision, device: torch.device) -> Iterator[None]:
    """Matmul precision and autocast for ``precision`` in {"fp32", "tf32", "bf16"}."""
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"Evaluator: precision must be 'fp32', 'tf32' or 'bf16', got {precision!r}")
    old_matmul = torch.backends.cuda.matmul.allow_tf32
    old_cudnn = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    try:
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_matmul
        torch.backends.cudnn.allow_tf32 = old_cudnn


def _is_oom(err: BaseException) -> bool:
    """CUDA out-of-memory, or a failed host allocation (MemoryError, PyTorch's CPU
    allocator's ``can't allocate memory``)."""
    text = str(err).lower()
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or (
        "out of memory" in text or "can't allocate memory" in text)


#: Bytes of activations a "recompute" evaluation may use to keep all samples in one batch
#: even above the memory budget (several batches cost a pass per BatchNorm layer).
RECOMPUTE_ONE_BATCH = 2 << 30

#: ``torch.compile`` modes ``Evaluator(compile=...)`` accepts besides True/False.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class Evaluator:
    """Mean loss and metrics of a model at many parameter points.

    Parameters
    ----------
    model : nn.Module
        The architecture and the values of everything not in ``space`` (buffers
        such as BatchNorm running statistics, frozen parameters). It is copied
        once and never changed.
    data : (X, y) tensors, Dataset or DataLoader
        Evaluated in full at every point; kept on ``device`` when it fits.
    loss_fn : callable(output, target) -> scalar mean, or a name, optional
        ``"cross_entropy"`` (nats; token-level for outputs ``[n, T, C]`` with
        targets ``[n, T]``, positions equal to -100 left out) or ``"mse"``. Default:
        cross-entropy for integer targets, MSE for float targets (``self.loss_name``).
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    precision : {"fp32", "tf32", "bf16"}
        "fp32" is the reference (no TF32); "bf16" uses autocast.
    backend : {"auto", "fast", "vmap", "sequential"}
        The backends are registered in :mod:`lossatlas.backends`; each says whether it
        applies to the model and data. "auto" takes the first that applies, in the
        order ``"fast-mlp-fused"`` (on CUDA in bf16 with the default loss and metrics,
        a Linear-ReLU-Linear-ReLU-Linear MLP as one fused Triton kernel),
        ``"fast-mlp"`` (a plain chain of Linear layers and elementwise activations:
        first layer as one GEMM over all points, batched GEMMs after),
        ``"fast-bnfold-fused"`` (on CUDA in bf16: as ``"fast-bnfold"``, with each
        3x3 convolution of 16-64 channels and its bias, residual add and ReLU as one
        Triton kernel), ``"fast-bnfold"`` (eval-mode BatchNorm after convolutions,
        folded into the convolution weights per point), ``"compiled"`` (with
        ``compile=True``: the per-point forward and loss through ``torch.compile``, one
        point after another: large models such as transformers), ``"vmap"`` (``functional_call``
        vectorised over points) and ``"sequential"`` (one point after another; used
        when vmap fails on the model). Under ``bn="recompute"`` on CUDA with all
        samples in one batch, ``"fast-bnrecompute"`` comes before ``"vmap"``: one point
        after another, channels-last, train-mode BatchNorm over all samples in the
        evaluation pass itself (cuDNN autotuning; ``torch.compile`` with
        ``compile=True``), preceded in bf16 by ``"fast-bnrecompute-triton"`` (the same
        with its 3x3 convolutions of 16-64 channels as Triton kernels). "fast" takes
        the first fast path and raises when none applies; "vmap" and "sequential" are used as asked, and so is any
        other registered backend's name (an error when it does not apply). The choice is
        made once, logged (with why the faster ones did not apply), and is
        ``self.backend``, shown in ``repr``.
    space : ParamSpace, optional
        Layout of the points; default ``ParamSpace(model, buffers=True)`` under
        ``bn="own"`` (every point carries its own BatchNorm statistics), else
        ``ParamSpace(model)`` (parameters only).
    metrics : dict of name -> callable(output, target) -> scalar mean
        Extra metrics; ``accuracy`` is always computed.
    bn : {"recompute", "own"}, optional
        The BatchNorm policy (:mod:`lossatlas.batchnorm`); ignored (``"none"``) for
        a model without BatchNorm statistics. ``"recompute"`` (default): at every
        point the statistics are those of ``bn_data`` (default: ``data``) under the
        point's weights, exactly as train-mode BatchNorm over all samples at once,
        whatever the batch size (a layer-by-layer pass when the samples do not fit
        in one batch). ``"own"``: every point carries its own statistics (the
        space holds them); ``space.flatten(other_model)`` carries ``other_model``'s.
    output : str, int or callable, optional
        Which part of the model's output the loss is computed on (a dict key or
        attribute, a tuple index, or a function); default: a Tensor as is, else the
        output's ``logits``.
    chunk_size : int, optional
        Points evaluated together; default chosen from memory, halved on
        out-of-memory.
    batch_size : int, optional
        Samples per forward pass; default from memory.
    memory_budget : int, optional
        Bytes of activations a chunk may use (default: 1/3 of free GPU memory,
        or 512 MiB on CPU).
    compile : bool or str
        Run the fast paths through ``torch.compile`` (``max-autotune`` for the
        MLP path on CUDA); where none applies, the "compiled" backend. A string is
        the ``torch.compile`` mode for every path (one of ``COMPILE_MODES``, e.g.
        ``"max-autotune-no-cudagraphs"``: Triton convolution templates timed against
        cuDNN; minutes of compiling). Compiling
        takes seconds to minutes once (28 s for a 124M-parameter GPT on an H200);
        worth it for thousands of points, or for large models. A failure falls back
        to eager with a warning.
    channels_last : bool, optional
        Channels-last inputs and weights on the "fast-bnfold" / "fast-bnrecompute" paths
        (default: on CUDA in bf16; in fp32 cuDNN's channels-last convolutions failed on
        an H200 with a misaligned-address error).

    Example
    -------
    >>> ev = Evaluator(model, (X, y))
    >>> out = ev.evaluate(points)     # points: Tensor[P, D]
    >>> out["loss"], out["accuracy"]  # Tensor[P] each
    """

    def __init__(
        self,
        model: nn.Module,
        data,
        loss_fn: LossFn | None = None,
        device: str | torch.device | None = None,
        precision: Precision = "fp32",
        backend: BackendName = "auto",
        space: ParamSpace | None = None,
        metrics: dict[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
        bn: Literal["own", "recompute"] | None = None,
        bn_data=None,
        output: str | int | Callable | None = None,
        chunk_size: int | None = None,
        batch_size: int | None = None,
        memory_budget: int | None = None,
        compile: bool | str = False,
        channels_last: bool | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise InputTypeError(
                f"Evaluator: model must be an nn.Module, got {type(model).__name__}")
        if backend not in ("auto", "fast", *backend_names()):
            raise ValueError(
                "Evaluator: backend must be 'auto', 'fast' or a registered backend "
                f"({', '.join(backend_names())}), got {backend!r}"
            )
        if precision not in ("fp32", "tf32", "bf16"):
            raise ValueError(
                f"Evaluator: precision must be 'fp32', 'tf32' or 'bf16', got {precision!r}"
            )
        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.precision = precision
        self.bn = bnp.resolve_policy(model, bn, "Evaluator")
        stat_names = bnp.batchnorm_stat_names(model)
        self.space = (space if space is not None
                      else ParamSpace(model, buffers=self.bn == "own"))
        if self.bn == "own":
            missing = [n for n in stat_names if n not in self.space.buffer_names]
            if missing:
                raise ValueError(
                    f"Evaluator: bn='own' needs each point's BatchNorm statistics, but the "
                    f"space does not lay out {missing[:4]}{'...' if len(missing) > 4 else ''}; "
                    "use ParamSpace(model, buffers=True) or bn='recompute'")
        self._asked_batch_size = batch_size
        self._backend_request = backend
        self.metrics = {"accuracy": accuracy, **(metrics or {})}
        self.output = output
        if isinstance(compile, str) and compile not in COMPILE_MODES:
            raise ValueError(f"Evaluator: compile must be a bool or one of {COMPILE_MODES}, "
                             f"got {compile!r}")
        self.compile = bool(compile)
        #: torch.compile mode of the fast paths (None: each path's default)
        self.compile_mode = compile if isinstance(compile, str) else None

        self.model = copy.deepcopy(model).to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # under "recompute" every BatchNorm layer normalises with the statistics of its
        # input batch, or with statistics given per point (computed by _statistics)
        self._stat_names = set(bnp.strip_statistics(self.model)) if self.bn == "recompute" \
            else set()
        self._fixed = fixed_tensors(self.model, self.space.names)

        host = as_tensor_data(data, "Evaluator data")
        if isinstance(host.x, Tensor) and host.x.is_floating_point() \
                and host.x.dtype != self.space.dtype:
            host = type(host)(host.x.to(self.space.dtype), host.y)
        self.loss_fn, self.loss_name = resolve_loss(loss_fn, host.y)
        self.num_samples = len(host)
        self.memory_budget = memory_budget or self._default_budget()
        # Keep the data on the device when it takes at most half the budget-free memory.
        if self.device.type == "cpu" or host.nbytes <= self._free_bytes() // 4:
            self.data = host.to(self.device)
            self.resident = True
        else:
            self.data = host.pin()
            self.resident = False
        self.bn_data = as_tensor_data(bn_data, "Evaluator bn_data") if bn_data is not None else None
        if self.bn_data is not None and self.device.type != "cpu":
            self.bn_data = self.bn_data.pin()
        self._bn_order: list[str] = []
        if self.bn == "recompute":
            head = self.data.subset(min(2, self.num_samples))
            self._bn_order = bnp.execution_order(
                self.model, lambda: call_model(self.model, {}, to_device(head.x, self.device)))

        self._act_per_sample, self._act_max = self._activation_elements()
        self._mlp: MLPPlan | None = None
        self._fold: FoldPlan | None = None
        self._folded: nn.Module | None = None
        self._folded_plain: nn.Module | None = None  # without fused kernels (for vmap)
        self._recompute_model: nn.Module | None = None  # with Triton convolutions
        # channels-last only in half precision by default: in fp32 / tf32 cuDNN's
        # channels-last convolution of a 3-channel input failed on an H200 with "CUDA
        # error: misaligned address" (ResNet-56, torch 2.11; bench/bn_recompute_check.py)
        self.channels_last = (
            self.device.type == "cuda" and precision in ("bf16", "fp16")
            if channels_last is None else bool(channels_last)
        )
        self._compiled: Callable | None = None
        self._compile_failed = False
        self._backend: Backend = self._choose_backend(backend)
        self.backend = self._backend.name
        self.batch_size = batch_size or self._default_batch_size()
        self.chunk_size = chunk_size or self._default_chunk_size()
        self._fold_vmap = self.batch_size < 256
        self.points_evaluated = 0
        self.nonfinite = 0

    # ------------------------------------------------------------ backend
    def _probe(self, fast: Callable[[Tensor], Tensor]) -> str | None:
        """None if ``fast(x) [1, n, ...]`` equals the model on a few inputs, else why not."""
        x = self.data.subset(4).x.to(self.device)
        try:
            with torch.no_grad(), precision_context("fp32", self.device), batchable_layers():
                ref = model_output(self.model(x), self.output)
                got = fast(x)
        except Exception as err:  # noqa: BLE001 - a failing fast path is just not used
            return f"it fails on the model ({type(err).__name__}: {err})"
        if not isinstance(ref, Tensor) or got.shape[1:] != ref.shape:
            return "its output has another shape than the model's"
        if not torch.allclose(got[0].float(), ref.float(), rtol=1e-3, atol=1e-4 * (
                1 + float(ref.abs().max()))):
            return "its output differs from the model's"
        return None

    def _fused_applies(self) -> bool:
        assert self._mlp is not None
        return (self.device.type == "cuda" and self.precision == "bf16"
                and self.loss_fn is _cross_entropy and list(self.metrics) == ["accuracy"]
                and fused_supports(self._mlp) is None and not self.data.y.is_floating_point())

    def _fused_why_not(self) -> str | None:
        """None if the fused MLP kernel applies and agrees with the batched-GEMM path (both
        bf16) at the model's own point on up to 1,024 samples, else why not."""
        if not self._fused_applies():
            return ("it needs CUDA, precision='bf16', the default loss and metrics, integer "
                    "targets and a Linear-ReLU-Linear-ReLU-Linear the kernel supports")
        assert self._mlp is not None
        head = self.data.subset(min(self.num_samples, 1024))
        x, y = head.x.to(self.device), head.y.to(self.device)
        batched = self.space.unflatten(
            self.space.flatten(self.model).to(self.device, self.space.dtype)[None].expand(2, -1))
        with torch.no_grad():
            got = fused_mlp_ce(self._mlp, batched, self._fixed, 2, x, y)[0] / len(y)
            with precision_context(self.precision, self.device):
                out = mlp_logits(self._mlp, batched, self._fixed, 2, x)
            ref = self._batch_stats(out.float(), y)["loss"]
        if not torch.allclose(got, ref, rtol=2e-2, atol=1e-3):
            log.warning("Evaluator: the fused MLP kernel disagrees with the batched-GEMM path "
                        "(%s vs %s); using the latter", got.tolist(), ref.tolist())
            return "it disagrees with the batched-GEMM path"
        return None

    def _vmap_why_not(self) -> str | None:
        """None if ``vmap`` over points runs the model (one point, two samples), else why
        not (logged as a warning: the sequential backend is then used)."""
        head = self.data.subset(min(2, self.num_samples))
        x = to_device(head.x, self.device)
        params = self._point_params(
            self.space.flatten(self.model).to(self.device, self.space.dtype)[None])
        try:
            with torch.no_grad(), precision_context(self.precision, self.device):
                self._point_outputs(params, x, vectorise=True)
        except Exception as err:  # noqa: BLE001 - a model vmap cannot run goes sequential
            if _is_oom(err):
                return None
            log.warning("Evaluator: vmap failed on this model (%s); using the sequential "
                        "backend", err)
            return f"it fails on the model ({type(err).__name__}: {err})"
        return None

    def _choose_backend(self, backend: str) -> Backend:
        """The backend, chosen once and logged: the one asked for, or the first in
        ``BACKENDS`` order that applies ("fast": among the fast ones; an error when none
        does)."""
        if backend in ("vmap", "sequential"):
            chosen = get_backend(backend)
            log.info("Evaluator: backend %r (asked for)", chosen.name)
            return chosen
        if backend not in ("auto", "fast"):  # a specialised backend by name
            chosen = get_backend(backend)
            why = chosen.why_not(self)
            if why is not None:
                raise ValueError(f"Evaluator: backend={backend!r} does not apply to "
                                 f"{type(self.model).__name__}: {why}; use backend='auto'")
            log.info("Evaluator: backend %r (asked for)", chosen.name)
            return chosen
        reasons = []
        for candidate in BACKENDS:
            if backend == "fast" and not candidate.fast:
                continue
            why = candidate.why_not(self)
            if why is None:
                log.info("Evaluator: backend %r%s", candidate.name,
                         f" ({'; '.join(reasons)})" if reasons else "")
                return candidate
            reasons.append(f"not {candidate.name}: {why}")
        raise ValueError(
            "Evaluator: backend='fast' but no fast path applies to "
            f"{type(self.model).__name__} ({'; '.join(reasons)}); use backend='auto'"
            + (", 'vmap' or 'sequential'" if self.bn == "recompute" else "")
        )

    def use_sizes(self, chunk_size: int, batch_size: int) -> None:
        """Evaluate ``chunk_size`` points together over batches of ``batch_size`` samples
        from now on. The values depend on these (the order of float sums), so processes
        that must agree bit for bit (the ranks of a distributed field) use the same."""
        self.chunk_size, self.batch_size = max(1, int(chunk_size)), max(1, int(batch_size))
        self._fold_vmap = self.batch_size < 256

    # ------------------------------------------------------------- memory
    def _free_bytes(self) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free)
        return 8 << 30

    def _default_budget(self) -> int:
        if self.device.type == "cuda":
            return self._free_bytes() // 3
        return 512 << 20

    def _activation_elements(self) -> tuple[int, int]:
        """Elements of all module outputs, and of the largest, for one sample at one point."""
        total = 0
        largest = 1

        def hook(_m, _i, out):
            nonlocal total, largest
            if isinstance(out, Tensor):
                total += out.numel()
                largest = max(largest, out.numel())

        handles = [m.register_forward_hook(hook) for m in self.model.modules() if m is not self.model]
        # two samples: BatchNorm with batch statistics needs more than one value per channel
        n = min(2, self.num_samples)
        head = self.data.subset(n)
        try:
            with torch.no_grad(), batchable_layers():
                out = model_output(call_model(self.model, {}, to_device(head.x, self.device)),
                                   self.output)
            total += out.numel() if isinstance(out, Tensor) else 0
        except (TypeError, KeyError):
            raise
        except Exception as err:  # noqa: BLE001 - re-raised with context
            shape = tuple(head.x.shape) if isinstance(head.x, Tensor) else type(head.x).__name__
            raise UnsupportedModelError(
                f"Evaluator: the model {type(self.model).__name__} fails on {n} input(s) of the "
                f"data (shape {shape}): {type(err).__name__}: {err}"
            ) from err
        finally:
            for h in handles:
                h.remove()
        if self.loss_fn is _cross_entropy and isinstance(out, Tensor) and out.ndim >= 1:
            self._check_labels(int(out.shape[-1]))
        return max(-(-total // n), 1), max(-(-largest // n), 1)

    def _check_labels(self, classes: int) -> None:
        """Cross-entropy targets must be class indices of the model's output (one line
        naming the data's label range and the number of classes, not an IndexError or a
        CUDA assert deep in a batch)."""
        y = self.data.y
        valid = y[y != IGNORE_INDEX]
        if not valid.numel():
            return
        lo, hi = int(valid.min()), int(valid.max())
        if lo < 0 or hi >= classes:
            raise ValueError(
                f"Evaluator: the data's labels run from {lo} to {hi}, but the model outputs "
                f"{classes} classes (labels 0 to {classes - 1}); check the data (--data, "
                "--data-arg) and the model's number of classes (--model-arg)")

    def _mlp_bytes(self) -> int:
        """Bytes of activations per (point, sample) on the MLP path."""
        assert self._mlp is not None
        return 4 * 2 * sum(self._mlp.widths[1:])

    def _default_batch_size(self) -> int:
        family = self._backend.family
        if family == "mlp":
            # All samples at once where 16 points fit: the first layer's GEMM is widest then.
            fit = self.memory_budget // (16 * self._mlp_bytes())
            return int(max(1, min(self.num_samples, fit)))
        if family == "bnrecompute":
            # train-mode BatchNorm over all samples in the one forward pass of a point
            return self.num_samples
        if family == "bnfold":
            # One point at a time over a large batch: ~4 live activations of the largest size.
            fit = self.memory_budget // (4 * 4 * self._act_max)
            return int(max(1, min(self.num_samples, fit)))
        live = self._live_bytes()
        if family == "loop":
            # One point at a time: its activations over the batch.
            return int(max(1, min(self.num_samples, self.memory_budget // live)))
        if self.bn == "recompute" and live * self.num_samples <= max(self.memory_budget,
                                                                     RECOMPUTE_ONE_BATCH):
            # one pass over all samples gives the statistics too; in several batches the
            # statistics take a pass per BatchNorm layer (~L/2 forward passes more)
            return self.num_samples
        return int(max(1, min(self.num_samples, self.memory_budget // (8 * live))))

    def _live_bytes(self) -> int:
        """Bytes of activations alive at once for one sample at one point, without autograd:
        a few of the largest module output (the sum of all outputs, counting every
        container's too, overstates it many times for deep models), at most that sum."""
        return 4 * 2 * min(self._act_per_sample, 6 * self._act_max)

    def _default_chunk_size(self) -> int:
        cap = 1024 if self.device.type == "cuda" else 64
        # every point of a chunk also brings its parameters (and a working copy)
        weights = 4 * 2 * self.space.dim
        family = self._backend.family
        if family == "mlp":
            per_point = self._mlp_bytes() * self.batch_size + weights
        elif family in ("bnfold", "bnrecompute", "loop"):
            # Folded weights of every point of the chunk; activations of one point at a time
            # (on the CPU 16 folded points a chunk; a plain loop keeps 64: fewer chunks for
            # the field's decoding and storing)
            per_point = weights
            cap = 64 if self.device.type == "cuda" or family == "loop" else 16
        else:
            per_point = self._live_bytes() * self.batch_size + weights
        return int(max(1, min(cap, self.memory_budget // per_point)))

    # ------------------------------------------------------------ forward
    def _point_params(self, chunk: Tensor) -> dict[str, Tensor]:
        """The tensors of every point ``{name: Tensor[P, *shape]}``; under "recompute" the
        statistics a space may lay out are left out (they are recomputed)."""
        params = self.space.unflatten(chunk)
        if self._stat_names:
            params = {k: v for k, v in params.items() if k not in self._stat_names}
        return params

    def _map(self, fn: Callable, params: dict[str, Tensor], vectorise: bool | None = None):
        """``fn`` applied to every point's tensors ``params {name: [P, ...]}``: vectorised
        with ``vmap``, or one point after another (the sequential backend, or
        ``vectorise=False``); outputs (a tensor or a tuple of tensors) stacked on a
        leading point axis."""
        if vectorise if vectorise is not None else self.backend != "sequential":
            # the CPU's fused attention kernel has no batching rule: the math path
            with batchable_layers(self.device.type == "cpu"):
                return vmap(fn, in_dims=(0,), randomness="different")(params)
        n = next(iter(params.values())).shape[0]
        with batchable_layers(math_attention=False):  # one point: the fused kernels
            outs = [fn({k: v[i] for k, v in params.items()}) for i in range(n)]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(parts) for parts in zip(*outs, strict=True))
        return torch.stack(outs)

    def _point_outputs(self, params: dict[str, Tensor], x, vectorise: bool | None = None
                       ) -> Tensor:
        """Model outputs ``[P, n, ...]`` of every point on inputs ``x``."""

        def one(p: dict[str, Tensor]) -> Tensor:
            return model_output(call_model(self.model, {**p, **self._fixed}, x), self.output)

        return self._map(one, params, vectorise)

    def _statistics(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Recomputed BatchNorm statistics of every point, ``{name: Tensor[P, C]}``:
        the mean and biased variance of each layer's input over all samples of
        ``bn_data`` (default ``data``), exactly as train-mode BatchNorm over one batch of
        all of them. One pass when they fit in one batch, else one pass per layer in
        execution order, each stopping at its layer (float64 sums across batches)."""
        data = self.bn_data if self.bn_data is not None else self.data
        modules = dict(self.model.named_modules())
        stats: dict[str, Tensor] = {}

        def key(name: str, what: str) -> str:
            return f"{name}.{what}" if name else what

        if len(data) <= self.batch_size:
            x = to_device(data.x, self.device, non_blocking=True)

            def all_layers(p: dict[str, Tensor]) -> tuple[Tensor, ...]:
                sink: dict[str, tuple[Tensor, Tensor]] = {}
                handles = bnp.record_inputs([(n, modules[n]) for n in self._bn_order], sink)
                try:
                    call_model(self.model, {**p, **self._fixed}, x)
                finally:
                    for h in handles:
                        h.remove()
                return tuple(t for n in self._bn_order for t in sink[n])

            with precision_context(self.precision, self.device):
                flat = self._map(all_layers, params)
            for i, name in enumerate(self._bn_order):
                stats[key(name, "running_mean")] = flat[2 * i].to(self.space.dtype)
                stats[key(name, "running_var")] = flat[2 * i + 1].to(self.space.dtype)
            return stats

        for name in self._bn_order:
            acc = None
            handle = bnp.stop_at(modules[name])
            try:
                for xb, _ in data.batches(self.batch_size):
                    xb = to_device(xb, self.device, non_blocking=True)

                    def upto(p: dict[str, Tensor], xb=xb, name=name) -> tuple[Tensor, Tensor]:
                        try:
                            call_model(self.model, {**p, **self._fixed}, xb)
                        except bnp.Reached as stop:
                            return bnp.moments(stop.x)
                        raise UnsupportedModelError(
                            f"Evaluator: BatchNorm layer {name!r} not reached")

                    with precision_context(self.precision, self.device):
                        mean, var = self._map(upto, {**params, **stats})
                    acc = bnp.combine_moments(acc, mean, var, num_samples(xb))
            finally:
                handle.remove()
            assert acc is not None
            stats[key(name, "running_mean")] = acc[0].to(self.space.dtype)
            stats[key(name, "running_var")] = acc[1].to(self.space.dtype)
        return stats

    def statistics(self, points: Tensor) -> dict[str, Tensor]:
        """The BatchNorm statistics each point is evaluated with, ``{buffer name:
        Tensor[P, C]}`` on the CPU: recomputed ones under "recompute", the points' own
        under "own", none (``{}``) for a model without BatchNorm statistics."""
        points = points[None] if points.ndim == 1 else points
        if self.bn == "none":
            return {}
        if self.bn == "own":
            vals = self.space.unflatten(points)
            return {k: vals[k].clone() for k in bnp.batchnorm_stat_names(self.model)}
        with torch.no_grad():
            out = self._statistics(self._point_params(points.to(self.device, self.space.dtype)))
        return {k: v.cpu() for k, v in out.items()}

    def _compile_fn(self, fn: Callable, mode: str | None) -> Callable:
        """``torch.compile(fn)`` that falls back to ``fn`` (with a warning) if compiling fails."""
        compiled = torch.compile(fn, mode=mode, dynamic=False)

        def run(*args):
            if not self._compile_failed:
                try:
                    return compiled(*args)
                except Exception as err:
                    if _is_oom(err):
                        raise
                    self._compile_failed = True
                    log.warning("Evaluator: torch.compile failed (%s: %s); running eagerly",
                                type(err).__name__, err)
            return fn(*args)

        return run

    def _mlp_forward(self, chunk: Tensor, x: Tensor) -> Tensor:
        assert self._mlp is not None
        return mlp_logits(self._mlp, self.space.unflatten(chunk), self._fixed, len(chunk), x)

    def _point_outputs_mlp(self, chunk: Tensor, x: Tensor) -> Tensor:
        if self.compile and self._compiled is None:
            mode = "max-autotune-no-cudagraphs" if self.device.type == "cuda" else None
            self._compiled = self._compile_fn(self._mlp_forward, self.compile_mode or mode)
        fn = self._compiled if self.compile else self._mlp_forward
        assert fn is not None
        return fn(chunk, x)

    def _folded_forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        assert self._folded is not None
        return functional_call(self._folded, params, (x,))

    def _point_outputs_folded(self, chunk: Tensor, x: Tensor) -> Tensor:
        assert self._fold is not None and self._folded is not None
        batched, fixed = self._fold.apply(self.space.unflatten(chunk), self._fixed)
        if self._fold_vmap:
            plain = self._folded_plain or self._folded  # the fused kernels have no vmap rule

            def one(p: dict[str, Tensor]) -> Tensor:
                return functional_call(plain, {**p, **fixed}, (x,))

            return vmap(one, in_dims=(0,), randomness="different")(batched)
        return self._point_loop(self._folded_forward, batched, fixed, x)

    def _recompute_forward(self, params: dict[str, Tensor], x: Tensor,
                           model: nn.Module | None = None) -> Tensor:
        """One point's outputs on all samples ``x``: every BatchNorm layer (its running
        statistics stripped) normalises with the statistics of this whole batch. The
        model is ``model``, else the one the backend prepared, else ``self.model``."""
        model = model or self._recompute_model or self.model
        return model_output(call_model(model, params, x), self.output)

    def _point_outputs_recompute(self, chunk: Tensor, x: Tensor) -> Tensor:
        """Outputs ``[P, n, ...]`` under "recompute" with all ``n`` samples in ``x``: the
        statistics come from the same pass (no separate statistics pass)."""
        return self._point_loop(self._recompute_forward, self._point_params(chunk),
                                self._fixed, x)

    def _point_loop(self, forward: Callable, batched: dict[str, Tensor],
                    fixed: dict[str, Tensor], x: Tensor) -> Tensor:
        """``forward({**fixed, **point}, x)`` for one point after another (``batched``:
        ``{name: Tensor[P, ...]}``), stacked ``[P, n, ...]``: channels-last 4-D inputs and
        weights where asked, through ``torch.compile`` with ``compile=True``."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
            cl = {k for k, v in {**batched, **fixed}.items() if v.dim() - (k in batched) == 4}
            fixed = {k: v.contiguous(memory_format=torch.channels_last) if k in cl else v
                     for k, v in fixed.items()}
        else:
            cl = set()
        if self.compile and self._compiled is None:
            self._compiled = self._compile_fn(forward, self.compile_mode)
        fn = self._compiled if self.compile else forward
        assert fn is not None
        outs = []
        for i in range(next(iter(batched.values())).shape[0]):
            # clone, not contiguous: a [C, C', 1, 1] weight sliced out of the flat point
            # is already "channels-last contiguous", and contiguous() would hand cuDNN that
            # view at its (misaligned) offset in the vector: CUDA "misaligned address"
            own = {k: v[i].clone(memory_format=torch.channels_last) if k in cl else v[i]
                   for k, v in batched.items()}
            outs.append(fn({**fixed, **own}, x))
        return torch.stack(outs)

    def _evaluate_fused(self, chunk: Tensor) -> dict[str, Tensor]:
        """The fused Triton kernel: sums of loss and correct predictions, no activations stored."""
        assert self._mlp is not None
        batched = self.space.unflatten(chunk)
        loss = torch.zeros(len(chunk), device=self.device)
        correct = torch.zeros(len(chunk), device=self.device)
        for x, y in self.data.batches(self.batch_size):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            l_sum, c_sum = fused_mlp_ce(self._mlp, batched, self._fixed, len(chunk), x, y)
            loss += l_sum
            correct += c_sum
        return {"loss": loss / self.num_samples, "accuracy": correct / self.num_samples}

    def _point_stats(self, w: Tensor, x, y: Tensor) -> dict[str, Tensor]:
        """Mean loss and metrics of one batch at the point ``w`` [D], each Tensor[1] (the
        function the "compiled" backend compiles; called under the precision context)."""
        params = {k: v[0] for k, v in self._point_params(w[None]).items()}
        out = model_output(call_model(self.model, {**params, **self._fixed}, x), self.output)
        out = out.float()
        res = {"loss": self.loss_fn(out, y)[None]}
        for name, fn in self.metrics.items():
            res[name] = fn(out, y)[None]
        return res

    def _evaluate_compiled(self, chunk: Tensor) -> dict[str, Tensor]:
        """The "compiled" backend: ``torch.compile`` of :meth:`_point_stats`, one point
        after another (each copied into one buffer, so the compiled graph sees one layout)."""
        if self._compiled is None:
            self._compiled = self._compile_fn(self._point_stats, self.compile_mode)
        fn = self._compiled
        w = torch.empty_like(chunk[0])

        def stats(x, y: Tensor) -> dict[str, Tensor]:
            per_point = []
            with precision_context(self.precision, self.device):
                for i in range(len(chunk)):
                    w.copy_(chunk[i])
                    per_point.append(fn(w, x, y))
            return {k: torch.cat([r[k] for r in per_point]) for k in per_point[0]}

        return self._accumulate(None, len(chunk), stats_fn=stats)

    def _batch_stats(self, out: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Mean loss and metrics per point of one batch: ``out [P, n, ...]`` -> Tensor[P] each."""
        res: dict[str, Tensor] = {}
        P, n = out.shape[0], y.shape[0]
        classes = out.dim() == 3 and not y.is_floating_point() and y.shape == out.shape[1:2]
        if classes and self.loss_fn is _cross_entropy:
            t = out.transpose(1, 2)  # [P, C, n]; contiguous on the MLP path
            if t.is_contiguous():
                loss = F.cross_entropy(t, y.expand(P, n), reduction="none")
            else:
                loss = F.cross_entropy(out.reshape(P * n, -1), y.repeat(P), reduction="none")
            res["loss"] = loss.view(P, n).mean(1)
        else:
            res["loss"] = vmap(self.loss_fn, in_dims=(0, None))(out, y)
        for name, fn in self.metrics.items():
            if classes and fn is accuracy:
                res[name] = (out.argmax(-1) == y).float().mean(1)
            else:
                res[name] = vmap(fn, in_dims=(0, None))(out, y)
        return res

    def _accumulate(self, outputs_fn: Callable | None, n_points: int,
                    stats_fn: Callable | None = None) -> dict[str, Tensor]:
        """Means over all samples of the per-batch means, weighted by the samples (for
        the default cross-entropy: by the target positions not ignored);
        ``outputs_fn(x) -> [P, n, ...]``, or ``stats_fn(x, y) -> {name: Tensor[P]}`` (the
        per-point batch means directly)."""
        sums = {k: torch.zeros(n_points, device=self.device) for k in ["loss", *self.metrics]}
        loss_weight = torch.zeros((), device=self.device)
        for x, y in self.data.batches(self.batch_size):
            x = to_device(x, self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if stats_fn is not None:
                stats = stats_fn(x, y)
            else:
                assert outputs_fn is not None
                with precision_context(self.precision, self.device):
                    out = outputs_fn(x)
                stats = self._batch_stats(out.float(), y)
            n = y.shape[0]
            # loss weight: the target positions not ignored (a device tensor, no host sync),
            # or the batch size
            w = ((y != IGNORE_INDEX).sum() if self.loss_fn is _cross_entropy
                 and not y.is_floating_point() else n)
            for k, v in stats.items():
                sums[k] += v * (w if k == "loss" else n)
            loss_weight += w
        res = {k: v / self.num_samples for k, v in sums.items()}
        res["loss"] = sums["loss"] / loss_weight
        return res

    def _evaluate_generic(self, chunk: Tensor) -> dict[str, Tensor]:
        """The vmap and sequential backends (``functional_call`` per point)."""
        params = self._point_params(chunk)
        if self.recompute_in_pass:
            # all samples in one batch: each BatchNorm layer normalises with the statistics
            # of the whole data under the point's weights, in the evaluation pass
            pass
        elif self.bn == "recompute":
            params = {**params, **self._statistics(params)}
        return self._accumulate(lambda x: self._point_outputs(params, x), len(chunk))

    @property
    def recompute_in_pass(self) -> bool:
        """True under "recompute" when the statistics come from the evaluation pass itself:
        all samples in one batch and no separate ``bn_data``."""
        return (self.bn == "recompute" and self.bn_data is None
                and self.batch_size >= self.num_samples)

    def _evaluate_chunk(self, chunk: Tensor) -> dict[str, Tensor]:
        return self._backend.run(self, chunk)

    # ------------------------------------------------------------- public
    def evaluate(self, points: Tensor) -> dict[str, Tensor]:
        """Mean loss and metrics at every point.

        Parameters
        ----------
        points : Tensor[P, D] (or [D] for one point)

        Returns
        -------
        dict with ``"loss"`` (Tensor[P], mean loss over all samples, nats for
        cross-entropy), ``"accuracy"`` (Tensor[P], fraction in [0, 1]) and any
        extra metrics, on the CPU. Non-finite losses are kept (a diverged point
        is data) and counted in ``self.nonfinite``.
        """
        if not isinstance(points, Tensor):
            points = torch.as_tensor(points)
        single = points.ndim == 1
        if single:
            points = points[None]
        if points.ndim != 2 or points.shape[1] != self.space.dim:
            raise ValueError(
                f"Evaluator.evaluate: points must have shape [P, {self.space.dim}], "
                f"got {tuple(points.shape)}"
            )
        out: dict[str, list[Tensor]] = {}
        i = 0
        while i < len(points):
            chunk = points[i : i + self.chunk_size].to(self.device, self.space.dtype, non_blocking=True)
            m = len(chunk)
            if self.compile and self.backend == "fast-mlp" and m < self.chunk_size:
                # One shape for the compiled function: pad with copies of the first point.
                pad = chunk[:1].expand(self.chunk_size - m, -1)
                chunk = torch.cat([chunk, pad])
            try:
                res = self._evaluate_chunk(chunk)
                res = {k: v[:m] for k, v in res.items()}
            except Exception as err:
                if not _is_oom(err) or self.chunk_size == 1 and self.batch_size == 1:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.chunk_size > 1:
                    self.chunk_size = max(1, self.chunk_size // 2)
                else:
                    self.batch_size = max(1, self.batch_size // 2)
                log.info(
                    "Evaluator: out of memory; chunk_size=%d batch_size=%d",
                    self.chunk_size,
                    self.batch_size,
                )
                continue
            for k, v in res.items():
                out.setdefault(k, []).append(v.detach())  # stays on the device: no sync
            i += m
        result = {k: torch.cat(v).cpu() for k, v in out.items()}
        self.points_evaluated += len(points)
        self.nonfinite += int((~torch.isfinite(result["loss"])).sum())
        if single:
            return {k: v[0] for k, v in result.items()}
        return result

    def evaluate_models(self, models: list[nn.Module]) -> dict[str, Tensor]:
        """Loss and metrics of whole models (their laid-out tensors), Tensor[len(models)] each."""
        return self.evaluate(torch.stack([self.space.flatten(m) for m in models]))

    @property
    def bn_text(self) -> str:
        """One line stating the BatchNorm policy in force (for summaries and reports)."""
        return f"{self.bn}: {bnp.POLICY_TEXT[self.bn]}"

    def __repr__(self) -> str:
        return (
            f"Evaluator(device={self.device}, precision={self.precision!r}, backend={self.backend!r}, "
            f"bn={self.bn!r}, loss={self.loss_name!r}, samples={self.num_samples}, "
            f"chunk_size={self.chunk_size}, batch_size={self.batch_size})"
        )
