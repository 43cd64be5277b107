"""The flat parameter space of a model: ordered tensors <-> one vector."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import InputTypeError, MissingKeyError

__all__ = ["ParamSpace", "Segment", "batchnorm_modules", "batchnorm_stat_names"]


@dataclass(frozen=True)
class Segment:
    """One tensor's place in the flat vector: ``vec[..., start:stop].view(shape)``."""

    name: str
    shape: tuple[int, ...]
    start: int
    stop: int
    is_buffer: bool
    log: bool = False  # stored as log(value): BatchNorm running variances


    @property
    def numel(self) -> int:
        return self.stop - self.start


#: Variances below this are stored as log(VAR_FLOOR) (a dead channel's 0 would be -inf).
VAR_FLOOR = 1e-12


def batchnorm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every BatchNorm layer (1-D/2-D/3-D, SyncBatchNorm) of ``model``."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batchnorm_stat_names(model: nn.Module) -> list[str]:
    """Names of the BatchNorm running-statistics buffers (``running_mean``/``running_var``)
    of ``model``, in module order; empty for a model without tracked statistics."""
    names = []
    for n, m in batchnorm_modules(model):
        if m.track_running_stats and m.running_mean is not None:
            prefix = f"{n}." if n else ""
            names += [prefix + "running_mean", prefix + "running_var"]
    return names


def _state_of(obj: nn.Module | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict(keep_vars=True)
    if isinstance(obj, Mapping):
        return obj
    raise InputTypeError(
        f"ParamSpace: expected an nn.Module or a state dict, got {type(obj).__name__}"
    )


class ParamSpace:
    """The ordered layout of a model's parameters (and, optionally, float buffers).

    Parameters
    ----------
    model : nn.Module
        The architecture; its values are not kept.
    buffers : bool
        Also include floating-point buffers (BatchNorm ``running_mean`` /
        ``running_var``). ``num_batches_tracked`` and other integer buffers are
        never included. BatchNorm running variances are laid out as their natural
        logarithm, so that any point of the space (an interpolated, decoded or
        perturbed vector) holds positive variances; :meth:`flatten` takes the log
        and :meth:`unflatten` / :meth:`load_into` give the variances back.
    trainable_only : bool
        Only parameters with ``requires_grad`` (frozen ones stay fixed at the
        model's values during evaluation).

    Attributes
    ----------
    segments : list[Segment]
        Name, shape and offsets of every tensor, in ``named_parameters`` order
        followed by buffers.
    dim : int
        Length ``D`` of the flat vector.

    Example
    -------
    >>> space = ParamSpace(model)
    >>> w = space.flatten(model)           # Tensor[D]
    >>> params = space.unflatten(w[None])  # dict of Tensor[1, *shape] views
    """

    def __init__(self, model: nn.Module, buffers: bool = False, trainable_only: bool = False):
        if not isinstance(model, nn.Module):
            raise InputTypeError(f"ParamSpace: expected an nn.Module, got {type(model).__name__}")
        self.buffers = buffers
        self.trainable_only = trainable_only
        segments: list[Segment] = []
        offset = 0
        dtype = None
        for name, p in model.named_parameters():
            if trainable_only and not p.requires_grad:
                continue
            segments.append(Segment(name, tuple(p.shape), offset, offset + p.numel(), False))
            offset += p.numel()
            dtype = dtype or p.dtype
        if buffers:
            log_names = {n for n in batchnorm_stat_names(model) if n.endswith("running_var")}
            for name, b in model.named_buffers():
                if not b.is_floating_point():
                    continue
                segments.append(Segment(name, tuple(b.shape), offset, offset + b.numel(), True,
                                        log=name in log_names))
                offset += b.numel()
        if not segments:
            raise ValueError("ParamSpace: the model has no parameters to lay out")
        self.segments = segments
        self.dim = offset
        self.dtype = dtype or torch.float32
        self._by_name = {s.name: s for s in segments}
        self._sizes = [s.stop - s.start for s in segments]  # consecutive, from 0 to dim

    # ------------------------------------------------------------------ layout
    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    @property
    def param_names(self) -> list[str]:
        return [s.name for s in self.segments if not s.is_buffer]

    @property
    def buffer_names(self) -> list[str]:
        return [s.name for s in self.segments if s.is_buffer]

    def __getitem__(self, name: str) -> Segment:
        try:
            return self._by_name[name]
        except KeyError:
            raise MissingKeyError(f"ParamSpace: no tensor named {name!r}") from None

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self.segments)

    def __repr__(self) -> str:
        nb = sum(s.is_buffer for s in self.segments)
        return f"ParamSpace(dim={self.dim}, tensors={len(self) - nb}, buffers={nb})"

    def mask(self, prefixes: str | list[str] | None = None, buffers: bool = True) -> Tensor:
        """Bool mask [D] of the entries whose tensor name starts with one of ``prefixes``."""
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        m = torch.zeros(self.dim, dtype=torch.bool)
        hit = False
        for s in self.segments:
            if s.is_buffer and not buffers:
                continue
            if prefixes is None or any(s.name.startswith(p) for p in prefixes):
                m[s.start : s.stop] = True
                hit = True
        if not hit:
            raise ValueError(
                f"ParamSpace.mask: no tensor name starts with {prefixes}; names are "
                f"{self.names[:6]}{'...' if len(self) > 6 else ''}"
            )
        return m

    # ------------------------------------------------------------ conversions
    def flatten(self, obj: nn.Module | Mapping[str, Tensor], source: str | None = None) -> Tensor:
        """Flat vector Tensor[D] (a copy) of a model or state dict with this layout.

        ``source`` names where the values came from (a checkpoint path) for errors.
        """
        state = _state_of(obj)
        where = f" in {source}" if source else ""
        parts = []
        for s in self.segments:
            if s.name not in state:
                raise MissingKeyError(
                    f"ParamSpace.flatten: tensor {s.name!r} missing{where} "
                    f"(architecture mismatch?)"
                )
            t = state[s.name].detach()
            if tuple(t.shape) != s.shape:
                raise ValueError(
                    f"ParamSpace.flatten: tensor {s.name!r}{where} has shape {tuple(t.shape)}, "
                    f"the model expects {s.shape}"
                )
            t = t.reshape(-1).to(self.dtype)
            if s.log:
                t = t.clamp_min(VAR_FLOOR).log()
            parts.append(t)
        return torch.cat(parts)

    def unflatten(self, vec: Tensor, values: bool = True) -> dict[str, Tensor]:
        """The tensors of ``vec`` [..., D] as ``{name: Tensor[..., *shape]}``: zero-copy
        views. With ``values=True`` (a point) log-laid-out BatchNorm variances are
        returned as ``exp`` of their entries (new tensors); ``values=False`` gives the
        coordinates as laid out (for directions and differences)."""
        if vec.shape[-1] != self.dim:
            raise ValueError(
                f"ParamSpace.unflatten: expected last dimension {self.dim}, got shape "
                f"{tuple(vec.shape)}"
            )
        lead = vec.shape[:-1]
        out = {}
        # one split, not a slice per tensor: its gradient is one concatenation, where
        # slices' gradients are a zero-filled [..., D] tensor each, summed (a third of an
        # MLP's gradient time on the CPU)
        for s, part in zip(self.segments, vec.split(self._sizes, dim=-1), strict=True):
            view = part.view(*lead, *s.shape)
            out[s.name] = view.exp() if s.log and values else view
        return out

    def load_into(self, model: nn.Module, vec: Tensor) -> None:
        """Write ``vec`` [D] into ``model``'s tensors in place (no autograd)."""
        state = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, t in self.unflatten(vec).items():
                state[name].copy_(t)

    def random_like(self, generator: torch.Generator | None = None) -> Tensor:
        """A standard normal vector Tensor[D]."""
        return torch.randn(self.dim, generator=generator, dtype=self.dtype)
