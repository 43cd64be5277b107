"""Hessian-vector products of the mean loss over a dataset (forward-over-reverse)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from ..evaluate import batchable_layers
from ._objective import LossFn, Objective

__all__ = ["HVP", "LinearOperator", "MatrixOperator"]

log = logging.getLogger(__name__)


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

    Attributes
    ----------
    dim : int
        Size of the operator: ``D`` or the group's ``Dg``.
    num_hvp : int
        Hessian-vector products computed so far (one per probe vector).

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
            where="HVP",
        )
        self.chunk_size = chunk_size
        self.num_hvp = 0
        self.ad_mode = "forward-over-reverse"

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
        out = torch.zeros_like(Vg)
        for x, y in self.batches():
            out = out + self._batch_hvp(Vg, x, y).detach() * y.shape[0]
        out = out / self.num_samples
        self.num_hvp += Vg.shape[0]
        if full:
            out = self.embed(out)
        return out[0] if single else out

    def __repr__(self) -> str:
        return (
            f"HVP(dim={self.dim}, mode={self.mode!r}, group={self.group}, "
            f"samples={self.num_samples}, batch_size={self.batch_size}, device={self.device})"
        )
