"""A run directory: ``run.json`` plus fields in zarr, written chunk by chunk and resumable.

Layout::

    RUN/run.json                  configuration, versions, seeds, stages done
    RUN/fields/NAME.zarr          one xarray Dataset per field (loss, accuracy, ...)
    RUN/fields/NAME.progress/     one empty marker file per finished chunk

Nothing is written in place: JSON is written to a temporary file and renamed;
a field's chunk is marked done only after its values are on disk, so a killed
run loses at most the chunks in flight and a re-run computes only those.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import distributed
from .points import PointSource

__all__ = [
    "Run", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "package_versions",
    "field_chunks",
]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory."""
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block
    ends, removed if it raises (so ``path`` is never left half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomically write ``data`` as indented JSON (NaN/inf written as null)."""
    atomic_write_text(path, json.dumps(_sanitize(data), indent=2, default=_json_default) + "\n")


def _sanitize(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return obj


def package_versions() -> dict[str, str]:
    """Versions of python, torch, numpy and lossatlas (for ``run.json``)."""
    import torch

    from . import __version__  # noqa: PLC0415

    return {
        "lossatlas": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "xarray": xr.__version__,
    }


def field_chunks(shape: tuple[int, ...], target_points: int) -> int:
    """Rows of the first axis per stored chunk, so a chunk holds about ``target_points``."""
    row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return max(1, min(shape[0], target_points // max(row, 1)))


class Run:
    """A run directory holding ``run.json`` and stored results.

    Parameters
    ----------
    path : directory (created if missing)
    config : dict, optional
        Merged into ``run.json["config"]`` on creation.
    """

    def __init__(self, path: str | os.PathLike, config: dict | None = None):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.read()
        if not meta:
            meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": package_versions()}
        if config:
            meta.setdefault("config", {}).update(config)
        meta.setdefault("stages", {})
        self._write(meta)

    # ----------------------------------------------------------- run.json
    @property
    def json_path(self) -> Path:
        return self.path / "run.json"

    def read(self) -> dict:
        """The contents of ``run.json`` ({} if absent)."""
        if not self.json_path.exists():
            return {}
        try:
            return json.loads(self.json_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"run directory {self.path}: run.json is not valid JSON ({err})") from err

    def _write(self, meta: dict) -> None:
        # under torchrun only rank 0 writes: concurrent read-modify-writes would lose updates
        if distributed.is_main():
            atomic_write_json(self.json_path, meta)

    def update(self, key: str, value: Any) -> None:
        """Set ``run.json[key] = value`` atomically."""
        meta = self.read()
        meta[key] = value
        self._write(meta)

    def record_stage(self, stage: str, seconds: float, **info: Any) -> None:
        """Record that ``stage`` finished, with its wall time in seconds and details."""
        meta = self.read()
        meta.setdefault("stages", {})[stage] = {"seconds": round(seconds, 3), **info}
        self._write(meta)

    # -------------------------------------------------------------- fields
    def field_path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"Run: invalid field name {name!r}")
        return self.path / "fields" / f"{name}.zarr"

    def has_field(self, name: str) -> bool:
        return (self.field_path(name).with_suffix(".progress") / "complete").exists()

    def open_field(self, name: str) -> xr.Dataset:
        """The stored field ``name`` as a labelled ``xarray.Dataset`` (loaded in memory)."""
        path = self.field_path(name)
        if not path.exists():
            raise FileNotFoundError(f"run {self.path}: no field named {name!r}")
        with xr.open_zarr(path, consolidated=False) as ds:
            return ds.load()

    def fields(self) -> list[str]:
        d = self.path / "fields"
        return sorted(p.stem for p in d.glob("*.zarr")) if d.exists() else []

    def save_dataset(self, name: str, ds: xr.Dataset) -> Path:
        """Store a finished Dataset under ``fields/NAME.zarr`` (write to a temp dir, rename;
        under torchrun rank 0 writes, the other ranks hold the same dataset)."""
        path = self.field_path(name)
        if not distributed.is_main():
            return path
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        ds.to_zarr(tmp, mode="w", consolidated=False)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        progress = path.with_suffix(".progress")
        progress.mkdir(parents=True, exist_ok=True)
        (progress / "complete").touch()
        return path

    def begin_field(
        self,
        name: str,
        source: PointSource,
        variables: list[str],
        chunk_points: int,
        attrs: dict | None = None,
        overwrite: bool = False,
    ) -> FieldWriter:
        """Create (or reopen, to resume) the zarr store of a field; returns its writer."""
        return FieldWriter(self, name, source, variables, chunk_points, attrs or {}, overwrite)


class FieldWriter:
    """Writes a field chunk by chunk; remembers which chunks are done."""

    def __init__(
        self,
        run: Run,
        name: str,
        source: PointSource,
        variables: list[str],
        chunk_points: int,
        attrs: dict,
        overwrite: bool,
    ):
        self.path = run.field_path(name)
        self.progress = self.path.with_suffix(".progress")
        self.source = source
        self.variables = variables
        self.rows = field_chunks(source.shape, chunk_points)
        self.row_points = int(np.prod(source.shape[1:])) if len(source.shape) > 1 else 1
        fp = source.fingerprint()
        meta_file = self.progress / "meta.json"
        if overwrite:
            shutil.rmtree(self.path, ignore_errors=True)
            shutil.rmtree(self.progress, ignore_errors=True)
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            if meta.get("fingerprint") != fp or meta.get("rows") != self.rows:
                raise ValueError(
                    f"field {name!r} in {run.path} was started with different points or settings; "
                    f"pass overwrite=True (CLI: --overwrite) or choose another name"
                )
        else:
            self._create(fp, attrs, name)

    def _create(self, fingerprint: str, attrs: dict, name: str) -> None:
        src = self.source
        data = {
            v: (src.dims, np.full(src.shape, np.nan, dtype=np.float32)) for v in self.variables
        }
        ds = xr.Dataset(data, coords={d: src.coords[d] for d in src.dims})
        ds.attrs.update({"name": name, "source": json.dumps(src.describe()), **attrs})
        if "loss" in ds:
            ds["loss"].attrs["units"] = "mean loss per sample (nats for cross-entropy)"
        if "accuracy" in ds:
            ds["accuracy"].attrs["units"] = "fraction correct"
        encoding = {v: {"chunks": (self.rows, *src.shape[1:])} for v in self.variables}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(self.progress, ignore_errors=True)
        ds.to_zarr(tmp, mode="w", encoding=encoding, consolidated=False)
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(tmp, self.path)
        self.progress.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.progress / "meta.json", {"fingerprint": fingerprint, "rows": self.rows}
        )

    @property
    def num_chunks(self) -> int:
        return math.ceil(self.source.shape[0] / self.rows)

    def chunk_range(self, k: int) -> tuple[int, int]:
        """Flat point range ``[start, stop)`` of stored chunk ``k``."""
        r0 = k * self.rows
        r1 = min(self.source.shape[0], r0 + self.rows)
        return r0 * self.row_points, r1 * self.row_points

    def done(self, k: int) -> bool:
        return (self.progress / f"chunk-{k:06d}").exists()

    def pending(self) -> list[int]:
        return [k for k in range(self.num_chunks) if not self.done(k)]

    def write(self, k: int, values: dict[str, np.ndarray]) -> None:
        """Store chunk ``k`` (flat arrays of its points) and mark it done."""
        r0 = k * self.rows
        r1 = min(self.source.shape[0], r0 + self.rows)
        shape = (r1 - r0, *self.source.shape[1:])
        ds = xr.Dataset(
            {v: (self.source.dims, np.asarray(values[v], dtype=np.float32).reshape(shape))
             for v in self.variables}
        )
        region = {self.source.dims[0]: slice(r0, r1)}
        ds.to_zarr(self.path, region=region, consolidated=False)
        (self.progress / f"chunk-{k:06d}").touch()

    def finish(self) -> None:
        (self.progress / "complete").touch()
