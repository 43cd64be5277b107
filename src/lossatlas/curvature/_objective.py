"""The loss of a model as a pure function of a flat parameter vector (shared setup)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, replace_all_batch_norm_modules_

from .._compat import renamed_argument
from ..batches import TensorData, as_tensor_data
from ..batchnorm import resolve_policy
from ..errors import InputTypeError
from ..evaluate import _cross_entropy, batchable_layers, call_model, fixed_tensors, model_output
from ..space import ParamSpace

__all__ = ["LossFn", "Objective", "model_device", "resolve_points"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class Objective:
    """Mean loss over a dataset as a function of (a group of) the flat parameters.

    Parameters
    ----------
    model : nn.Module
        Architecture and values of everything not varied. Copied once (moved to
        ``device``, put in eval or train mode); the user's module is never changed.
    data : (X, y) tensors, Dataset, DataLoader or TensorData
        Kept in memory on ``device``. Floating inputs are cast to the model's dtype.
    loss_fn : callable(output, target) -> scalar batch mean
        Default: mean cross-entropy (nats), as in :class:`~lossatlas.Evaluator`.
    params : Tensor[D], optional
        The point ``w`` (``ParamSpace(model)`` layout); default: the model's own values.
    group : str or list of str, optional
        Vary only the tensors whose name starts with one of these prefixes; the
        others stay at ``params``. ``dim`` is then the group's size ``Dg``.
    train : bool
        Evaluate the model in train mode (BatchNorm uses batch statistics, which
        then depend on ``batch_size``; running statistics are never updated).
        Default: eval mode, with BatchNorm statistics chosen by ``bn``.
    bn : {"recompute", "own"}, optional
        The BatchNorm policy in eval mode (:mod:`lossatlas.batchnorm`).
        ``"recompute"`` (default for a model with BatchNorm): the statistics are
        re-estimated at the point from ``data`` (train-mode BatchNorm over all
        samples, as the Evaluator does) and then held fixed, so the loss equals the
        Evaluator's and its derivatives are those of the eval-mode network with
        those statistics (PyHessian's convention, with statistics that belong to the
        point). ``"own"``: the model's stored statistics.
    output : str, int or callable, optional
        Which part of a non-tensor model output the loss uses (see Evaluator).
    batch_size : int, optional
        Samples per forward pass; the loss is the mean over all ``N`` samples
        (sum of batch mean x batch size / N). Default: all at once.
    device : str or torch.device, optional
        Default: the model's device.
    """

    @renamed_argument("where", "who")
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
        bn: str | None = None,
        output=None,
        who: str = "curvature",
    ):
        if not isinstance(model, nn.Module):
            raise InputTypeError(f"{who}: model must be an nn.Module, got {type(model).__name__}")
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"{who}: batch_size must be >= 1, got {batch_size}")
        self.who = who
        self.device = torch.device(device) if device is not None else model_device(model)
        self.space = ParamSpace(model)
        self.dtype = self.space.dtype
        self.train = bool(train)
        self.mode = "train" if train else "eval"
        self.loss_fn = loss_fn or _cross_entropy
        self.batch_size = None if batch_size is None else int(batch_size)
        self.output = output
        self.bn = "batch" if train else resolve_policy(model, bn, who)

        net = copy.deepcopy(model).to(self.device)
        if train:
            net.train()
            replace_all_batch_norm_modules_(net)  # batch statistics, no running-stat writes
        else:
            net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
            p.grad = None
        self.net = net
        self.fixed = fixed_tensors(net, self.space.names)

        if params is None:
            w = self.space.flatten(model)
        else:
            w = torch.as_tensor(params)
            if w.shape != (self.space.dim,):
                raise ValueError(
                    f"{who}: params must be a flat vector of shape [{self.space.dim}] "
                    f"(ParamSpace(model) layout), got {tuple(w.shape)}"
                )
        self._stats_evaluator = None
        if self.bn == "recompute":
            from ..evaluate import Evaluator

            self._stats_evaluator = Evaluator(net, data, loss_fn=self.loss_fn,
                                              device=self.device, bn="recompute", output=output,
                                              batch_size=batch_size)
        self.move_to(w)

        if group is None:
            self.group = None
            self.index = None
            self.dim = self.space.dim
        else:
            self.group = [group] if isinstance(group, str) else list(group)
            try:
                mask = self.space.mask(self.group, buffers=False)
            except ValueError as err:
                raise ValueError(
                    f"{who}: group {self.group!r} matches no tensor: {err}"
                ) from None
            self.index = mask.nonzero().squeeze(1).to(self.device)
            self.dim = int(self.index.numel())

        td = as_tensor_data(data, f"{who} data")
        x = td.x.to(self.dtype) if isinstance(td.x, Tensor) and td.x.is_floating_point() \
            else td.x
        self.data = TensorData(x, td.y).to(self.device)
        self.num_samples = len(self.data)
        self._check()

    def move_to(self, w: Tensor) -> None:
        """Make ``w`` [D] the point; under ``bn="recompute"`` its BatchNorm statistics
        are recomputed there (and held fixed while differentiating)."""
        self.point = torch.as_tensor(w).detach().to(self.device, self.dtype).clone()
        if self._stats_evaluator is not None:
            stats = self._stats_evaluator.statistics(self.point)
            self.fixed.update({k: v[0].to(self.device, self.dtype) for k, v in stats.items()})

    # ----------------------------------------------------------------- layout
    def restrict(self, vec: Tensor) -> Tensor:
        """Group entries ``[..., Dg]`` of full-layout vectors ``[..., D]``."""
        return vec if self.index is None else vec[..., self.index]

    def embed(self, vec: Tensor) -> Tensor:
        """Full-layout vectors ``[..., D]`` (zero outside the group) from ``[..., Dg]``."""
        if self.index is None:
            return vec
        out = vec.new_zeros(*vec.shape[:-1], self.space.dim)
        out[..., self.index] = vec
        return out

    def full(self, wg: Tensor) -> Tensor:
        """The full point ``[D]`` with the group's entries replaced by ``wg`` ``[Dg]``."""
        if self.index is None:
            return wg
        return self.point.index_put((self.index,), wg)

    @property
    def origin(self) -> Tensor:
        """The group's entries of the point, Tensor[Dg]."""
        return self.restrict(self.point)

    # ----------------------------------------------------------------- losses
    def batch_loss(self, w: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Mean loss of one batch at the full point ``w`` [D] (pure, differentiable)."""
        with batchable_layers():
            out = call_model(self.net, {**self.space.unflatten(w), **self.fixed}, x)
        return self.loss_fn(model_output(out, self.output, self.who), y)

    def group_loss(self, wg: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Mean loss of one batch as a function of the group's entries ``wg`` [Dg]."""
        return self.batch_loss(self.full(wg), x, y)

    def batches(self):
        return self.data.batches(self.batch_size)

    def _check(self) -> None:
        head = self.data.subset(2)
        x, y = head.x, head.y
        try:
            with torch.no_grad():
                loss = self.batch_loss(self.point, x, y)
        except Exception as err:  # noqa: BLE001 - re-raised with context
            shape = f"{tuple(x.shape)} ({x.dtype})" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{self.who}: the model and loss fail on inputs of shape {shape} "
                f"with targets of shape {tuple(y.shape)} ({y.dtype}): {err}"
            ) from err
        if loss.ndim != 0:
            raise ValueError(
                f"{self.who}: loss_fn must return a scalar batch mean, got shape "
                f"{tuple(loss.shape)}"
            )

    @torch.no_grad()
    def value(self, wg: Tensor | None = None) -> Tensor:
        """Mean loss over all samples at ``wg`` [Dg] (default: the point)."""
        wg = self.origin if wg is None else wg
        w = self.full(wg)
        total = torch.zeros((), device=self.device, dtype=self.dtype)
        for x, y in self.batches():
            total = total + self.batch_loss(w, x, y) * y.shape[0]
        return total / self.num_samples

    def value_and_grad(self, wg: Tensor) -> tuple[Tensor, Tensor]:
        """Mean loss (scalar) and its gradient [Dg] over all samples at ``wg`` [Dg]."""
        fn = grad_and_value(self.group_loss)
        g_sum = torch.zeros_like(wg)
        v_sum = torch.zeros((), device=self.device, dtype=self.dtype)
        for x, y in self.batches():
            g, v = fn(wg, x, y)
            g_sum = g_sum + g * y.shape[0]
            v_sum = v_sum + v.detach() * y.shape[0]
        return v_sum / self.num_samples, g_sum / self.num_samples


@renamed_argument("where", "who")
def resolve_points(models_or_points, model: nn.Module, who: str) -> Tensor:
    """A population as flat points Tensor[P, D] (``ParamSpace(model)`` layout)."""
    space = ParamSpace(model)
    if isinstance(models_or_points, nn.Module):
        models_or_points = [models_or_points]
    if isinstance(models_or_points, Tensor):
        pts = models_or_points[None] if models_or_points.ndim == 1 else models_or_points
    else:
        items = list(models_or_points)
        if not items:
            raise ValueError(f"{who}: the population is empty")
        pts = torch.stack(
            [space.flatten(m) if isinstance(m, nn.Module) else torch.as_tensor(m) for m in items]
        )
    if pts.ndim != 2 or pts.shape[1] != space.dim:
        raise ValueError(
            f"{who}: points must have shape [P, {space.dim}] (ParamSpace(model) layout), "
            f"got {tuple(pts.shape)}"
        )
    return pts
