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
import dataclasses
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import distributed
from .errors import LossatlasError
from .points import PointSource

__all__ = [
    "Run", "RunInUseError", "StaleResultError", "atomic_write_bytes", "atomic_write_text",
    "atomic_write_json", "package_versions", "field_chunks", "hold_locks", "release_locks",
]


class StaleResultError(ValueError, LossatlasError):
    """A stored result was computed from other inputs or settings than those asked for."""


class RunInUseError(RuntimeError, LossatlasError):
    """Another process holds the run directory's lock."""


# run directories this process holds the lock of: resolved path -> [open file descriptor,
# depth] (a flock belongs to the open file, so a second open in this process would
# conflict; the lock dies with the process, a SIGKILLed one included)
_LOCKS: dict[str, list[int]] = {}
_HOLD = [False]  # True while a CLI command runs: its locks last until release_locks()
LOCK_FILE = ".lock"


def _acquire_lock(path: Path) -> None:
    """Hold ``path/.lock`` (``fcntl.flock``, non-blocking) for this process, re-entrantly;
    raise :class:`RunInUseError` naming the holder when another process has it."""
    key = str(path.resolve())
    if key in _LOCKS:
        _LOCKS[key][1] += 1
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunInUseError(
            f"run directory {path} is in use by another lossatlas process (pid {holder}); wait "
            "for it to finish or choose another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS[key] = [fd, 1]


def _unlock(key: str) -> None:
    import fcntl

    fd = _LOCKS.pop(key)[0]
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def _release_lock(path: Path) -> None:
    key = str(path.resolve())
    if key not in _LOCKS:
        return
    _LOCKS[key][1] -= 1
    if _LOCKS[key][1] <= 0 and not _HOLD[0]:
        _unlock(key)


def hold_locks() -> None:
    """Keep every run directory lock taken from now on until :func:`release_locks` (a CLI
    command holds its run for its whole length)."""
    _HOLD[0] = True


def release_locks() -> None:
    """Let go of every run directory lock this process holds and stop holding them (the
    CLI does at the end of each command)."""
    _HOLD[0] = False
    for key in list(_LOCKS):
        _unlock(key)


def _point_phrases(stored: dict, fingerprint: str, shape: tuple[int, ...]) -> list[str]:
    if stored.get("fingerprint") == fingerprint:
        return []
    old = stored.get("shape")
    if old is not None and list(old) != list(shape):
        return [f"a different grid ({'x'.join(map(str, old))}, now {'x'.join(map(str, shape))})"]
    return ["different points (checkpoints, directions, span or grid)"]


def _vlen_strings(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with fixed-width string arrays (numpy ``<U``/``S``: no Zarr v3
    specification, a warning on every write) stored as variable-length strings."""
    fixed = [k for k, v in ds.variables.items() if v.dtype.kind in "US"]
    if not fixed:
        return ds
    return ds.assign({k: ds[k].astype(object) for k in fixed if k in ds.data_vars}) \
        .assign_coords({k: ds[k].astype(object) for k in fixed if k in ds.coords})


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
    """Atomically write ``data`` as indented JSON (through :func:`jsonable`: NaN/inf
    written as null)."""
    atomic_write_text(path, json.dumps(jsonable(data), indent=2, default=_json_default) + "\n")


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values, recursively: NaN/inf as None, tensors and numpy
    arrays as (nested) lists, numpy scalars as Python numbers, paths as strings,
    mappings as dicts with string keys, tuples as lists, dataclass results as the dict
    of their ``to_dict()`` (else of their fields); anything else as it is.
    lossatlas's one JSON cleaner."""
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_dict = getattr(obj, "to_dict", None)
        if callable(to_dict):
            return jsonable(to_dict())
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "detach"):  # a tensor, wherever it lives
        obj = obj.detach().cpu()
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
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
        before = json.dumps(meta, sort_keys=True)
        if not meta:
            meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": package_versions()}
        if config:
            meta.setdefault("config", {}).update(config)
        meta.setdefault("stages", {})
        if json.dumps(meta, sort_keys=True, default=str) != before:
            self._write(meta)  # a Run opened only to read its results takes no lock

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

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory's lock (``RUN/.lock``, re-entrant within a process) while
        the block writes; another process holding it raises :class:`RunInUseError`. Under
        torchrun only rank 0 locks (the other ranks write their field chunks into the run
        rank 0 holds)."""
        # RANK too: a torchrun rank may write before it joins the process group
        mine = distributed.is_main() and os.environ.get("RANK", "0") in ("", "0")
        if mine:
            _acquire_lock(self.path)
        try:
            yield
        finally:
            if mine:
                _release_lock(self.path)

    def _write(self, meta: dict) -> None:
        # under torchrun only rank 0 writes: concurrent read-modify-writes would lose updates
        if distributed.is_main():
            with self.locked():
                atomic_write_json(self.json_path, meta)

    # ------------------------------------------------------ one population
    def claim_population(self, fingerprint: str, info: dict | None = None,
                         overwrite: bool = False) -> None:
        """Record that this run holds results of the population ``fingerprint``
        (``run.json["population"]``); a run of another population raises
        :class:`StaleResultError`, or with ``overwrite`` is emptied of its results and
        started afresh (:meth:`clear_results`)."""
        with self.locked():
            self._claim(fingerprint, dict(info or {}), overwrite)

    def _claim(self, fingerprint: str, info: dict, overwrite: bool) -> None:
        meta = self.read()
        stored = meta.get("population")
        if isinstance(stored, dict) and stored.get("fingerprint") != fingerprint:
            if not overwrite:
                def text(d: dict) -> str:
                    return ", ".join(f"{k} {d[k]}" for k in ("models", "dim", "bn", "source")
                                     if d.get(k) is not None)
                raise StaleResultError(
                    f"run directory {self.path} holds results of another population "
                    f"({text(stored)}; now {text(info)}); pass --overwrite to start it afresh "
                    "or choose another --out")
            self.clear_results()
            meta = self.read()
        if not isinstance(stored, dict) or stored.get("fingerprint") != fingerprint:
            meta["population"] = {"fingerprint": fingerprint, **info}
            meta.setdefault("stages", {})
            self._write(meta)

    #: what :meth:`clear_results` removes: results written by lossatlas's verbs
    RESULT_DIRS = ("fields", "embedding", "overlays")
    RESULT_SUFFIXES = (".json", ".png", ".html", ".safetensors")

    def clear_results(self) -> None:
        """Remove the results stored in the run (``fields/``, ``embedding/``,
        ``overlays/`` and the top-level JSON, PNG, HTML and safetensors files but the
        population file) and start ``run.json`` afresh; sub-folders such as ``train/``
        and ``slices/`` are kept."""
        if not distributed.is_main():
            return
        with self.locked():
            for d in self.RESULT_DIRS:
                shutil.rmtree(self.path / d, ignore_errors=True)
            for p in self.path.iterdir():
                # population.safetensors is a cache checked by content (and may be the file
                # the population being claimed is mapped from)
                if (p.is_file() and p.suffix in self.RESULT_SUFFIXES
                        and p.name not in (LOCK_FILE, "population.safetensors")):
                    p.unlink(missing_ok=True)
            atomic_write_json(self.json_path, {
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "versions": package_versions(), "stages": {}})

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

    def field_fingerprint(self, name: str) -> dict:
        """What the stored field ``name`` was computed from (``{}`` if not recorded):
        ``fingerprint`` of its points, ``shape``, ``evaluator`` (see
        :func:`lossatlas.fingerprint.evaluator_fingerprint`)."""
        meta = self.field_path(name).with_suffix(".progress") / "meta.json"
        try:
            return json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def check_field(self, name: str, source: PointSource, evaluator_fp: dict | None) -> None:
        """Raise :class:`StaleResultError` naming what changed when the stored field
        ``name`` was computed from other points or another evaluator (data, samples,
        BatchNorm policy, loss, model, precision) than ``source`` and ``evaluator_fp``."""
        _check_meta(self.field_fingerprint(name), name, self.path, source, evaluator_fp)

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
        with self.locked():
            tmp = path.with_name(f".{path.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            _vlen_strings(ds).to_zarr(tmp, mode="w", consolidated=False)
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
        evaluator_fp: dict | None = None,
    ) -> FieldWriter:
        """Create (or reopen, to resume) the zarr store of a field; returns its writer.
        ``evaluator_fp`` is stored with it and must match to resume. (Hold
        :meth:`locked` around the writes that follow, as ``compute_field`` does.)"""
        with self.locked():
            return FieldWriter(self, name, source, variables, chunk_points, attrs or {},
                               overwrite, evaluator_fp)


def _check_meta(meta: dict, name: str, where: Path, source: PointSource,
                evaluator_fp: dict | None) -> None:
    from .fingerprint import differences

    phrases = _point_phrases(meta, source.fingerprint(), source.shape)
    # "evaluator": null is a field begun without one (Run.begin_field from Python): its
    # first compute_field adopts the evaluator's; a field stored by a lossatlas older
    # than fingerprints lacks the key and is refused (its data are unknown)
    if evaluator_fp is not None and (meta.get("evaluator") is not None
                                     or "evaluator" not in meta):
        phrases += differences(meta.get("evaluator"), evaluator_fp)
    if phrases:
        raise StaleResultError(
            f"field {name!r} in {where} was computed with {'; '.join(phrases)}; pass "
            "--overwrite (Python: overwrite=True) to recompute it, or choose another --out")


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
        evaluator_fp: dict | None = None,
    ):
        self.path = run.field_path(name)
        self.evaluator_fp = evaluator_fp
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
            _check_meta(meta, name, run.path, source, evaluator_fp)
            if meta.get("rows") != self.rows:
                raise ValueError(
                    f"field {name!r} in {run.path} was started with different points or settings; "
                    f"pass overwrite=True (CLI: --overwrite) or choose another name"
                )
            if meta.get("evaluator") is None and evaluator_fp is not None \
                    and distributed.is_main():
                atomic_write_json(meta_file, {**meta, "evaluator": evaluator_fp})
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
            self.progress / "meta.json",
            {"fingerprint": fingerprint, "rows": self.rows, "shape": list(src.shape),
             "evaluator": self.evaluator_fp},
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
