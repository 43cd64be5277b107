"""Many processes, one field: ``torch.distributed`` set up from ``torchrun``'s environment.

Under ``torchrun`` every process (rank) sees ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init_from_env` joins the process group
(``nccl`` on CUDA, ``gloo`` on CPU) and pins the rank to ``cuda:LOCAL_RANK``; without
``torchrun`` (``WORLD_SIZE`` unset or 1) it does nothing and every helper here
answers as for a single process (rank 0 of 1), so library code can call them
unconditionally.

:func:`~lossatlas.fields.compute_field` uses them to shard a field's chunks
across ranks: the i-th pending chunk goes to rank ``i % world_size``.

Example
-------
>>> from lossatlas import distributed
>>> distributed.init_from_env()            # False outside torchrun
>>> device = distributed.device()          # cuda:LOCAL_RANK, or cpu
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as dist

from .errors import SetupError

__all__ = [
    "init_from_env", "is_distributed", "rank", "world_size", "local_rank", "is_main", "barrier",
    "broadcast_object", "device", "shard", "shutdown",
]

log = logging.getLogger(__name__)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"distributed: environment variable {name} must be an integer, got {value!r}"
        ) from None


def init_from_env(backend: str | None = None, timeout_s: float = 6 * 3600.0) -> bool:
    """Join the process group described by ``torchrun``'s environment variables.

    Parameters
    ----------
    backend : {"nccl", "gloo"}, optional
        Default: the ``LOSSATLAS_DIST_BACKEND`` environment variable if set, else
        ``nccl`` when CUDA is available, else ``gloo`` (gloo lets several ranks share
        one GPU, which NCCL refuses).
    timeout_s : float
        Seconds a collective waits for the other ranks (the ranks that finish
        their chunks first wait at a barrier for the slowest; a rank that dies is
        noticed by torchrun, which stops the others).

    Returns True when running distributed (``WORLD_SIZE`` > 1), False otherwise
    (nothing is done then). Calling it again is harmless. On CUDA the current
    device becomes ``cuda:LOCAL_RANK``. The group is left at exit (:func:`shutdown`).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return False
    if not dist.is_available():
        raise SetupError(
            f"distributed: WORLD_SIZE={size} but this torch build has no torch.distributed"
        )
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise SetupError(
            f"distributed: WORLD_SIZE={size} but {', '.join(missing)} not set; "
            "launch with torchrun (python -m torch.distributed.run)"
        )
    cuda = torch.cuda.is_available()
    backend = backend or os.environ.get("LOSSATLAS_DIST_BACKEND") or (
        "nccl" if cuda else "gloo")
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"distributed: backend must be 'nccl' or 'gloo', got {backend!r}")
    if cuda:
        torch.cuda.set_device(device())
    dist.init_process_group(backend=backend, init_method="env://",
                            timeout=datetime.timedelta(seconds=timeout_s))
    atexit.register(shutdown)
    log.info("distributed: rank %d of %d (backend %s)", rank(), world_size(), backend)
    return dist.get_world_size() > 1


def shutdown() -> None:
    """Leave the process group (local; registered to run at exit by :func:`init_from_env`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """Rank on this node (``LOCAL_RANK``; 0 when not set)."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on rank 0 (and when not distributed)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as held by rank ``src``, on every rank (picklable objects; no-op when alone)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def device() -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def shard(items: list, rank_: int | None = None, size: int | None = None) -> list:
    """This rank's share of ``items``: the i-th item goes to rank ``i % world_size``."""
    r = rank() if rank_ is None else rank_
    n = world_size() if size is None else size
    return list(items[r::n])
