"""Flat vectors on disk: a ``[N, D]`` matrix in a one-tensor safetensors file, read and
written by blocks, so populations and span bases larger than memory never sit in it whole.

A :class:`VectorFile` memory-maps only the rows or columns asked for, copies them out and
unmaps them again, so the process's resident memory holds the copy alone::

    vf = VectorFile("runs/big/population.safetensors", "vectors")
    vf.shape                          # (N, D)
    vf.row(3)                         # Tensor[D]
    for block in vf.blocks(2**20):    # Tensor[N, b] column blocks, left to right
        ...

Files are ordinary safetensors files (``safetensors.safe_open`` reads them too). They are
written with :class:`VectorFileWriter` into ``.NAME.rankR.partial`` beside the target,
renamed on :meth:`commit`, so an interrupted write never leaves a partial file under the
target's name; the next writer of the same target reuses (overwrites) the partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import InputTypeError, LossatlasError

__all__ = ["VectorFile", "VectorFileWriter", "parse_bytes", "return_freed_memory"]

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}
# spare header bytes so commit() can rewrite a smaller shape in place
_HEADER_SLACK = 64
# bytes read at a time by whole-file passes (to_tensor, digest)
_PASS_BYTES = 8 * 2**20


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_bytes(value: int | float | str, what: str = "memory budget") -> int:
    """Bytes from an int or a string such as ``"512MB"``, ``"4GiB"``, ``"1.5e9"``."""
    if isinstance(value, bool):
        raise InputTypeError(f"{what}: expected bytes or a size such as '4GB', got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{what}: cannot read {value!r} as a size (e.g. 512MB, 4GiB)")
        number, unit = float(m.group(1)), m.group(2).lower()
    out = int(number * _UNITS[unit])
    if out <= 0:
        raise ValueError(f"{what}: must be positive, got {value!r}")
    return out


def return_freed_memory() -> bool:
    """Make the C allocator hand freed blocks back to the system (glibc only).

    glibc raises its mmap threshold each time a large block is freed, after which blocks
    of that size come from the heap and freed ones stay resident: reading a population by
    64 MB blocks then leaves hundreds of MB held. Fixing the threshold at 1 MiB (blocks
    above it are mapped and unmapped) and trimming now keeps resident memory to what is
    in use. Returns False where there is no glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt(-3, 2**20)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


class VectorFileError(ValueError, LossatlasError):
    """A vector file that is missing, not safetensors, or lacks the tensor asked for."""


def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise VectorFileError(f"vector file {path}: truncated (no safetensors header)")
            (n,) = struct.unpack("<Q", head)
            if n > 100 * 2**20:
                raise VectorFileError(f"vector file {path}: not a safetensors file")
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VectorFileError(f"vector file {path}: could not be read ({err})") from err
    return 8 + n, header


class VectorFile:
    """A read-only ``[N, D]`` matrix stored as tensor ``name`` of a safetensors file.

    Parameters
    ----------
    path : the ``.safetensors`` file.
    name : the tensor's name (default: the file's only tensor).
    rows : optional row indices: the view holds those rows, in that order.
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None,
                 rows: Sequence[int] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"vector file {self.path} not found")
        start, header = _read_header(self.path)
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        if name is None:
            if len(header) != 1:
                raise VectorFileError(
                    f"vector file {self.path}: holds {len(header)} tensors; name the one to read"
                )
            name = next(iter(header))
        if name not in header:
            raise VectorFileError(f"vector file {self.path}: no tensor {name!r}")
        info = header[name]
        if info["dtype"] not in _DTYPES or len(info["shape"]) != 2:
            raise VectorFileError(
                f"vector file {self.path}: tensor {name!r} is {info['dtype']} of shape "
                f"{info['shape']}; expected a 2-D float32/float64/float16 matrix"
            )
        self.name = name
        self._np_dtype = np.dtype(_DTYPES[info["dtype"]])
        self._shape = tuple(int(s) for s in info["shape"])
        self._offset = start + int(info["data_offsets"][0])
        expected = self._offset + self._shape[0] * self._shape[1] * self._np_dtype.itemsize
        if self.path.stat().st_size < expected:
            raise VectorFileError(
                f"vector file {self.path}: truncated ({self.path.stat().st_size} bytes, "
                f"expected {expected})"
            )
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        if self._rows is not None and len(self._rows) and (
                self._rows.min() < -self._shape[0] or self._rows.max() >= self._shape[0]):
            raise IndexError(f"vector file {self.path}: row index out of range")

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of this view."""
        n = self._shape[0] if self._rows is None else len(self._rows)
        return (n, self._shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return torch.from_numpy(np.zeros(0, self._np_dtype)).dtype

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nbytes(self) -> int:
        """Bytes of this view's values."""
        return self.shape[0] * self.shape[1] * self._np_dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"VectorFile({str(self.path)!r}, {self.name!r}, shape={self.shape})"

    def take(self, rows: Sequence[int]) -> VectorFile:
        """A view of the given rows (indices into this view)."""
        rows = np.asarray(rows, dtype=np.int64)
        base = rows if self._rows is None else self._rows[rows]
        return VectorFile(self.path, self.name, base)

    # ------------------------------------------------------------------ reads
    def _map(self) -> np.memmap:
        return np.memmap(self.path, dtype=self._np_dtype, mode="r", offset=self._offset,
                         shape=self._shape)

    def _copy(self, cols: slice, rows: slice | np.ndarray = slice(None)) -> Tensor:
        """A copy of ``[rows, cols]`` of this view (rows: a slice or an index array)."""
        if self._rows is not None:
            rows = self._rows[rows]
        m = self._map()
        try:
            if isinstance(rows, slice):
                part = np.array(m[rows, cols])  # one copy out of the mapping
            else:
                part = np.asarray(m[rows, cols])  # fancy indexing copies already
            out = torch.from_numpy(part)
        finally:
            m._mmap.close()  # unmap now: the pages leave this process's resident memory
            del m
        return out

    def rows(self, index: Any) -> Tensor:
        """Rows ``index`` (int array, list or slice) as a Tensor[n, D] copy."""
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step == 1:
                return self._copy(slice(None), slice(start, max(start, stop)))
            index = np.arange(start, stop, step)
        return self._copy(slice(None), np.atleast_1d(np.asarray(index, dtype=np.int64)))

    def row(self, i: int) -> Tensor:
        """Row ``i`` as a Tensor[D] copy."""
        n = self.shape[0]
        if not -n <= i < n:
            raise IndexError(f"vector file {self.path}: row {i} out of range for {n} rows")
        return self.rows([i % n])[0]

    def block(self, start: int, stop: int) -> Tensor:
        """Columns ``start:stop`` of every row, Tensor[N, stop - start] (a copy)."""
        return self._copy(slice(start, stop))

    def blocks(self, block_size: int) -> Iterator[Tensor]:
        """Column blocks Tensor[N, b] of at most ``block_size`` columns, left to right."""
        D = self.shape[1]
        for start in range(0, D, max(1, int(block_size))):
            yield self.block(start, min(D, start + block_size))

    def row_chunks(self, chunk: int) -> Iterator[tuple[int, Tensor]]:
        """``(first row, Tensor[n, D])`` for consecutive chunks of ``chunk`` rows."""
        n = self.shape[0]
        for start in range(0, n, max(1, int(chunk))):
            yield start, self.rows(slice(start, min(n, start + chunk)))

    def to_tensor(self, device: torch.device | str = "cpu") -> Tensor:
        """The whole view as one Tensor[N, D] on ``device`` (filled by column blocks, so the
        host holds one block at a time when the device is a GPU)."""
        N, D = self.shape
        out = torch.empty(N, D, dtype=self.dtype, device=device)
        step = max(1, _PASS_BYTES // max(1, N * self._np_dtype.itemsize))
        for start in range(0, D, step):
            out[:, start:start + step] = self.block(start, min(D, start + step))
        return out

    def digest(self) -> str:
        """A short SHA-256 of the view's values (read by blocks)."""
        h = hashlib.sha256()
        N = max(1, self.shape[0])
        for block in self.blocks(max(1, _PASS_BYTES // (N * self._np_dtype.itemsize))):
            h.update(block.numpy().tobytes())
        return h.hexdigest()[:16]


class VectorFileWriter:
    """Writes an ``[N, D]`` matrix into a new safetensors file by rows or column blocks.

    Use as a context manager, or call :meth:`commit` (rename into place; returns the
    :class:`VectorFile`) or :meth:`abort`. ``commit(n_rows)`` keeps only the first rows.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int], name: str = "vectors",
                 dtype: torch.dtype = torch.float32, metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        self.name = name
        self.shape = (int(shape[0]), int(shape[1]))
        self._np_dtype = np.dtype(torch.empty(0, dtype=dtype).numpy().dtype)
        if self._np_dtype not in _CODES:
            raise InputTypeError(f"VectorFileWriter: dtype {dtype} not supported (float32/64/16)")
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One partial file per target and rank, not a random name: a writer killed before
        # commit() leaves a file (possibly of many GB) that the next writer reuses.
        self._tmp = self.path.with_name(
            f".{self.path.name}.rank{os.environ.get('RANK', '0')}.partial")
        self._header_len = len(self._header(self.shape[0], pad=_HEADER_SLACK))
        with open(self._tmp, "w+b") as f:
            f.write(self._header(self.shape[0], length=self._header_len))
            f.truncate(8 + self._header_len + self._nbytes(self.shape[0]))
        self._done = False

    def _nbytes(self, n: int) -> int:
        return n * self.shape[1] * self._np_dtype.itemsize

    def _header(self, n: int, pad: int = 0, length: int | None = None) -> bytes:
        head = {self.name: {"dtype": _CODES[self._np_dtype], "shape": [n, self.shape[1]],
                            "data_offsets": [0, self._nbytes(n)]}}
        if self.metadata:
            head["__metadata__"] = self.metadata
        text = json.dumps(head, separators=(",", ":")).encode()
        size = len(text) + pad if length is None else length
        if len(text) > size:
            raise ValueError("VectorFileWriter: header grew past its reserved space")
        size += (-size) % 8  # data 8-byte aligned
        text = text + b" " * (size - len(text))
        return text if length is None else struct.pack("<Q", len(text)) + text

    def _map(self) -> np.memmap:
        return np.memmap(self._tmp, dtype=self._np_dtype, mode="r+",
                         offset=8 + self._header_len, shape=self.shape)

    def _write(self, rows: slice, cols: slice, values: Tensor) -> None:
        m = self._map()
        try:
            m[rows, cols] = values.detach().cpu().numpy().astype(self._np_dtype, copy=False)
            m.flush()
        finally:
            m._mmap.close()
            del m

    def write_rows(self, start: int, values: Tensor) -> None:
        """Rows ``start : start + len(values)`` (Tensor[n, D] or a single Tensor[D])."""
        values = values.reshape(-1, self.shape[1])
        self._write(slice(start, start + values.shape[0]), slice(None), values)

    def write_block(self, start: int, values: Tensor) -> None:
        """Columns ``start : start + b`` of every row (Tensor[N, b])."""
        self._write(slice(None), slice(start, start + values.shape[1]), values)

    def commit(self, n_rows: int | None = None) -> VectorFile:
        """Keep the first ``n_rows`` rows (default all), rename into place; the file."""
        n = self.shape[0] if n_rows is None else int(n_rows)
        with open(self._tmp, "r+b") as f:
            f.write(self._header(n, length=self._header_len))
            f.truncate(8 + self._header_len + self._nbytes(n))
            f.flush()
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        self._done = True
        return VectorFile(self.path, self.name)

    def abort(self) -> None:
        """Remove the temporary file."""
        self._tmp.unlink(missing_ok=True)
        self._done = True

    def __enter__(self) -> VectorFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            if exc_type is None:
                self.commit()
            else:
                self.abort()
