"""Fingerprints of what a stored result depends on: file contents, data, evaluator, population.

A stored result (a field, an embedding, a population file) keeps the fingerprint of
everything it was computed from and is reused only when a new request has the same
one; :func:`differences` names what changed for the one-line error. Everything is
hashed by content (``blake2b``): checkpoint files by their bytes (never size and
modification time), data by the bytes of its tensors, a model by its architecture and
the tensors outside the evaluated points.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "claim_run", "differences", "evaluator_fingerprint", "file_digest", "population_fingerprint",
    "tensor_digest",
]

_BLOCK = 2**20  # bytes read at a time when hashing a file
_DIGEST = 16  # bytes of a blake2b digest (32 hex characters)


def file_digest(path: str | os.PathLike) -> str:
    """blake2b of a file's bytes, read in 1 MiB blocks (hex)."""
    h = hashlib.blake2b(digest_size=_DIGEST)
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _update_tensor(h, name: str, t: Tensor) -> None:
    t = t.detach()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel() == 0:
        return
    flat = t.reshape(-1)
    # a slice of at most 64 MiB copied to the host at a time (the data may live on a GPU)
    step = max(1, (64 * 2**20) // max(1, t.element_size()))
    for start in range(0, flat.numel(), step):
        part = flat[start:start + step].cpu().contiguous()
        if part.dtype == torch.bfloat16:
            part = part.view(torch.int16)
        h.update(part.numpy().tobytes())


def tensor_digest(tensors: Iterable[tuple[str, Tensor]]) -> str:
    """blake2b of named tensors (names, dtypes, shapes and values) (hex)."""
    h = hashlib.blake2b(digest_size=_DIGEST)
    for name, t in tensors:
        _update_tensor(h, name, t)
    return h.hexdigest()


def _data_digest(data) -> str:
    """Digest of a :class:`~lossatlas.batches.TensorData` (inputs, tree or tensor, and
    targets)."""
    from .batches import input_leaves

    return tensor_digest([*input_leaves(data.x), ("y", data.y)])


def _callable_name(obj: Any) -> str:
    if obj is None or isinstance(obj, (str, int)):
        return repr(obj)
    module = getattr(obj, "__module__", "") or ""
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}:{name}"


def evaluator_fingerprint(evaluator) -> dict[str, Any]:
    """What a loss computed by ``evaluator`` depends on besides the points (computed once
    per evaluator and cached on it).

    Keys: ``data`` (digest of the evaluation tensors: so the data factory, its
    arguments, the split and the sample count), ``samples``, ``loss`` and ``metrics``
    (names), ``bn`` (the BatchNorm policy), ``output``, ``precision`` and ``model``
    (digest of the architecture's text and of every tensor outside the points).
    """
    cached = evaluator.__dict__.get("_lossatlas_fingerprint")
    if cached is not None:
        return dict(cached)
    data = _data_digest(evaluator.data)
    bn_data = getattr(evaluator, "bn_data", None)
    if bn_data is not None:
        data = hashlib.blake2b(f"{data}|{_data_digest(bn_data)}".encode(),
                               digest_size=_DIGEST).hexdigest()
    model = hashlib.blake2b(repr(evaluator.model).encode(), digest_size=_DIGEST)
    model.update(repr([[s.name, list(s.shape), s.is_buffer] for s in evaluator.space]).encode())
    fixed = getattr(evaluator, "_fixed", {}) or {}
    # BatchNorm step counters differ between checkpoints and never change a loss
    model.update(tensor_digest(sorted(
        (k, v) for k, v in fixed.items()
        if isinstance(v, Tensor) and not k.endswith("num_batches_tracked"))).encode())
    fp = {
        "data": data,
        "samples": int(evaluator.num_samples),
        "loss": str(evaluator.loss_name),
        "metrics": sorted(evaluator.metrics),
        "bn": str(evaluator.bn),
        "output": _callable_name(evaluator.output),
        "precision": str(evaluator.precision),
        "model": model.hexdigest(),
    }
    evaluator.__dict__["_lossatlas_fingerprint"] = fp
    return dict(fp)


def population_fingerprint(population) -> str:
    """Digest of a population's vectors (by content), layout and BatchNorm policy (cached
    on the population)."""
    cached = population.__dict__.get("_lossatlas_fingerprint")
    if cached is not None:
        return cached
    h = hashlib.blake2b(digest_size=_DIGEST)
    h.update(repr([[s.name, list(s.shape), s.is_buffer] for s in population.space]).encode())
    h.update(f"|bn={getattr(population, 'bn', None)}|".encode())
    # row by row, as float32: the same digest for a population in memory or mapped
    n, d = population.matrix.shape
    h.update(f"{n}x{d}|".encode())
    step = max(1, (4 * 2**20) // (4 * max(1, d)))  # 4 MiB of rows at a time
    if getattr(population, "is_mapped", False):
        chunks = (rows for _, rows in population.matrix.row_chunks(step))
    else:
        pts = population.as_points()
        chunks = (pts[i:i + step] for i in range(0, n, step))
    for rows in chunks:
        h.update(rows.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    fp = h.hexdigest()
    population.__dict__["_lossatlas_fingerprint"] = fp
    return fp


_WHAT = {
    "data": "the data (factory, arguments, split or samples)",
    "samples": "the sample count",
    "loss": "the loss",
    "metrics": "the metrics",
    "bn": "the BatchNorm policy (--bn)",
    "output": "the model output (--output-key)",
    "precision": "the precision",
    "model": "the model (factory, arguments or fixed tensors)",
}


def differences(stored: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """What differs between a stored evaluator fingerprint and the current one, as short
    phrases (``"the sample count (2000, now 500)"``); ``["no fingerprint stored"]`` when
    the result predates fingerprints."""
    if not isinstance(stored, Mapping):
        return ["no record of its data (stored by an older lossatlas)"]
    out = []
    for k, v in now.items():
        old = stored.get(k)
        if old == v:
            continue
        what = _WHAT.get(k, k)
        if k in ("samples", "loss", "bn", "precision", "output"):
            out.append(f"{what} ({old}, now {v})")
        elif k != "data" or stored.get("samples") == now.get("samples"):
            out.append(what)
    return out


def claim_run(run, population, overwrite: bool = False) -> None:
    """One run directory, one population: record ``population``'s fingerprint in
    ``run.json`` (:meth:`~lossatlas.store.Run.claim_population`), refusing a run that holds
    another population's results; ``overwrite`` empties the run first (start afresh)."""
    if overwrite:
        run.clear_results()
    run.claim_population(population_fingerprint(population), {
        "models": len(population), "dim": int(population.space.dim),
        "bn": getattr(population, "bn", None)})
