"""Hessian-vector products of the mean loss over a dataset (forward-over-reverse)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from ..evaluate import _is_oom, batchable_layers, precision_context
from ._objective import LossFn, Objective

__all__ = ["HVP", "LinearOperator", "MatrixOperator"]

log = logging.getLogger(__name__)

#: Vector counts ``m`` whose CUDA graphs an :class:`HVP` keeps (each holds its memory).
MAX_GRAPHS = 4


def _no_forward_ad(err: BaseException) -> bool:
    """True for PyTorch's errors of an operation without forward-mode AD."""
    text = str(err).lower()
    return isinstance(err, (NotImplementedError, RuntimeError)) and (
        "forward ad" in text or "forward-mode" in text or "jvp" in text)


class LinearOperator(Protocol):
    """A symmetric operator on vectors of length ``dim``: ``op(V[m, dim]) -> [m, dim]``."""

    dim: int
    dtype: torch.dtype
    device: torch.device

    def __call__(self, V: Tensor) -> Tensor: ...


class MatrixOperator:
    """An explicit symmetric matrix ``A`` [n, n] as a :class:`LinearOperator` (tests, small problems)."""

    def __init__(self, A: Tensor):
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"MatrixOperator: A must be square, got shape {tuple(A.shape)}")
        self.A = A
        self.dim = A.shape[0]
        self.dtype = A.dtype
        self.device = A.device
        self.num_matvecs = 0

    def __call__(self, V: Tensor) -> Tensor:
        self.num_matvecs += V.shape[0] if V.ndim == 2 else 1
        return V @ self.A  # A symmetric: (A V^T)^T


class HVP(Objective):
    """Hessian-vector products ``H V`` of the mean loss over ``data`` at one point.

    ``H`` is the Hessian (in loss per squared parameter, e.g. nats) of the mean
    loss over all ``N`` samples, with respect to the flat parameters
    (``ParamSpace(model)`` layout) or to a group of them. Computed with
    ``torch.func`` as a jvp of the gradient (forward-over-reverse), vectorised
    over probe vectors with ``vmap``, accumulated over mini-batches as
    ``sum_b |b| H_b V / N``.

    Parameters
    ----------
    model, data, loss_fn, params, group, train, batch_size, device, bn, output
        See :class:`~lossatlas.curvature._objective.Objective`: the loss, the
        point, the parameter group (name prefixes), eval (default) or train mode,
        the BatchNorm policy in eval mode, the model output the loss uses.
    chunk_size : int, optional
        Probe vectors pushed through ``vmap`` together (memory grows linearly with
        it; activations of ``batch_size`` samples per vector). Default: all.
    precision : {"fp32", "tf32"}
        Matmuls and convolutions of the products in full float32 (default) or with
        TF32 tensor cores on CUDA (eigenvalues to ~1e-3 relative, traces unchanged
        within their sampling error; ResNet-20's top-5 + trace 1.3x faster on an H200).
    graphs : bool, optional
        On CUDA (the default there), after the first (eager) product the product for
        ``m`` vectors is captured as a CUDA graph when ``m`` is first asked for, and
        replayed after: one launch instead of the Python and kernel-launch cost of the whole
        forward-over-reverse pass (which bounds small models). Up to
        ``MAX_GRAPHS`` shapes are kept (each holds its own activation memory); a
        capture that fails falls back to eager products, logged once.

    Attributes
    ----------
    dim : int
        Size of the operator: ``D`` or the group's ``Dg``.
    num_hvp : int
        Hessian-vector products computed so far (one per probe vector).
    num_replays : int
        Calls answered by replaying a captured CUDA graph.

    Example
    -------
    >>> H = HVP(model, (X, y))
    >>> HV = H(V)               # V: Tensor[m, H.dim] -> Tensor[m, H.dim]
    >>> H.embed(HV)             # Tensor[m, D], zero outside the group
    """

    def __init__(
        self,
        model: nn.Module,
        data,
        *,
        loss_fn: LossFn | None = None,
        params: Tensor | None = None,
        group: str | Sequence[str] | None = None,
        train: bool = False,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        chunk_size: int | None = None,
        bn: str | None = None,
        output=None,
        precision: str = "fp32",
        graphs: bool | None = None,
    ):
        super().__init__(
            model,
            data,
            loss_fn=loss_fn,
            params=params,
            group=group,
            train=train,
            batch_size=batch_size,
            device=device,
            bn=bn,
            output=output,
            who="HVP",
        )
        self.chunk_size = chunk_size
        self.num_hvp = 0
        self.num_replays = 0
        self.ad_mode = "forward-over-reverse"
        if precision not in ("fp32", "tf32"):
            raise ValueError(f"HVP: precision must be 'fp32' or 'tf32', got {precision!r}")
        self.precision = precision
        self.graphs = self.device.type == "cuda" if graphs is None else bool(graphs)
        if self.graphs and self.device.type != "cuda":
            raise ValueError(f"HVP: graphs=True needs a CUDA device, got {self.device}")
        # m -> (graph, static input [m, dim], static output [m, dim]); cleared when the
        # point moves. Captures start once an eager product has warmed up the kernels.
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}
        self._warm = False

    def move_to(self, w: Tensor) -> None:
        """Make ``w`` [D] the point (captured products are for the old one: dropped)."""
        super().move_to(w)
        if getattr(self, "_graphs", None):
            self._graphs.clear()

    def _batch_hvp(self, V: Tensor, x: Tensor, y: Tensor) -> Tensor:
        w = self.origin
        g = grad(self.group_loss)

        def forward(v: Tensor) -> Tensor:
            return jvp(lambda p: g(p, x, y), (w,), (v,))[1]

        def reverse(v: Tensor) -> Tensor:
            return grad(lambda p: torch.dot(g(p, x, y), v))(w)

        if self.ad_mode == "forward-over-reverse":
            try:
                with batchable_layers(math_attention=True):
                    return vmap(forward, chunk_size=self.chunk_size, randomness="same")(V)
            except Exception as err:
                if not _no_forward_ad(err):
                    raise
                # once per operator: an operation of the model has no forward-mode AD
                log.warning("HVP: %s; using reverse-over-reverse products (slower)",
                            str(err).splitlines()[0])
                self.ad_mode = "reverse-over-reverse"
        return vmap(reverse, chunk_size=self.chunk_size, randomness="same")(V)

    def _products(self, V: Tensor) -> Tensor:
        """``H V`` [m, dim] for ``V`` [m, dim] on the device: the sum over batches."""
        out = torch.zeros_like(V)
        with precision_context(self.precision, self.device):
            for x, y in self.batches():
                out = out + self._batch_hvp(V, x, y).detach() * y.shape[0]
        return out / self.num_samples

    def _graphed(self, V: Tensor) -> Tensor | None:
        """``H V`` by replaying the CUDA graph for ``m = len(V)`` vectors (captured now if
        new), or None: compute eagerly (the operator's first product, which warms up its
        kernels, more than ``MAX_GRAPHS`` shapes, or a capture that failed)."""
        m = V.shape[0]
        entry = self._graphs.get(m)
        if entry is None:
            if not self._warm or len(self._graphs) >= MAX_GRAPHS:
                return None
            entry = self._capture(V)
            if entry is None:
                return None
        graph, v_in, v_out = entry
        v_in.copy_(V)
        graph.replay()
        self.num_replays += 1
        return v_out.clone()

    def _capture(self, V: Tensor) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor] | None:
        """A CUDA graph of :meth:`_products` for vectors of ``V``'s shape (the operator's
        first, eager product was the warm-up), or None (with a log line; the operator
        stays eager) when the model cannot be captured or its memory is not there."""
        v_in = V.clone()
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                v_out = self._products(v_in)
        except Exception as err:  # noqa: BLE001 - any capture failure means eager products
            torch.cuda.synchronize(self.device)
            self.graphs = False
            self._graphs.clear()
            torch.cuda.empty_cache()
            (log.info if _is_oom(err) else log.warning)(
                "HVP: no CUDA graph (%s: %s); eager products", type(err).__name__,
                str(err).splitlines()[0] if str(err) else "")
            return None
        entry = (graph, v_in, v_out)
        self._graphs[V.shape[0]] = entry
        return entry

    def __call__(self, V: Tensor) -> Tensor:
        """``H V`` for ``V`` of shape [m, dim] or [dim] (or [m, D] / [D] in the full
        layout when a group is set: entries outside the group are ignored and the
        result is zero there)."""
        V = torch.as_tensor(V)
        single = V.ndim == 1
        Vb = V[None] if single else V
        full = self.index is not None and Vb.shape[-1] == self.space.dim
        if Vb.ndim != 2 or (Vb.shape[-1] != self.dim and not full):
            raise ValueError(
                f"HVP: vectors must have shape [m, {self.dim}]"
                + (f" or [m, {self.space.dim}]" if self.index is not None else "")
                + f", got {tuple(V.shape)}"
            )
        Vg = self.restrict(Vb) if full else Vb
        Vg = Vg.to(self.device, self.dtype)
        out = self._graphed(Vg) if self.graphs else None
        if out is None:
            out = self._products(Vg)
            self._warm = True
        self.num_hvp += Vg.shape[0]
        if full:
            out = self.embed(out)
        return out[0] if single else out

    def __repr__(self) -> str:
        return (
            f"HVP(dim={self.dim}, mode={self.mode!r}, group={self.group}, "
            f"samples={self.num_samples}, batch_size={self.batch_size}, device={self.device})"
        )
