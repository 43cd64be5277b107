"""Tests of lossatlas.vectors: on-disk [N, D] matrices read and written by blocks."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from lossatlas.vectors import VectorFile, VectorFileWriter, parse_bytes


@pytest.fixture
def matrix() -> torch.Tensor:
    return torch.randn(7, 1001, generator=torch.Generator().manual_seed(0))


def test_rows_and_column_blocks_round_trip(tmp_path, matrix):
    with VectorFileWriter(tmp_path / "m.safetensors", matrix.shape, metadata={"a": "1"}) as w:
        for i in range(len(matrix)):
            w.write_rows(i, matrix[i])
    vf = VectorFile(tmp_path / "m.safetensors")
    assert vf.shape == (7, 1001) and vf.dtype == torch.float32 and vf.metadata == {"a": "1"}
    assert torch.equal(vf.to_tensor(), matrix)
    assert torch.equal(torch.cat(list(vf.blocks(300)), dim=1), matrix)
    assert torch.equal(vf.row(-1), matrix[-1]) and torch.equal(vf.rows([5, 2]), matrix[[5, 2]])
    view = vf.take([6, 0, 3])
    assert torch.equal(view.to_tensor(), matrix[[6, 0, 3]])
    assert torch.equal(view.take([2]).row(0), matrix[3])
    assert [s for s, _ in vf.row_chunks(3)] == [0, 3, 6]
    # an ordinary safetensors file
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert torch.equal(f.get_tensor("vectors"), matrix)
    with pytest.raises(IndexError, match="row 7"):
        vf.row(7)


def test_column_writes_float64_and_shrinking_commit(tmp_path, matrix):
    w = VectorFileWriter(tmp_path / "c.safetensors", (9, 1001), "basis", dtype=torch.float64,
                         metadata={"labels": '["x", "y", "z"]'})
    for start in range(0, 1001, 250):
        w.write_block(start, torch.cat([matrix, matrix[:2]]).double()[:, start:start + 250])
    w.metadata = {"labels": '["x"]'}  # shorter metadata fits the reserved header
    vf = w.commit(7)
    assert vf.dtype == torch.float64 and vf.shape == (7, 1001)
    assert torch.equal(vf.to_tensor(), matrix.double()) and vf.metadata == {"labels": '["x"]'}
    with safe_open(str(tmp_path / "c.safetensors"), framework="pt") as f:
        assert torch.equal(f.get_tensor("basis"), matrix.double())


def test_interrupted_write_leaves_nothing(tmp_path, matrix):
    with pytest.raises(RuntimeError), VectorFileWriter(tmp_path / "x.safetensors", (7, 1001)) as w:
        w.write_rows(0, matrix[:3])
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writer_leaves_one_partial_file_that_the_next_reuses(tmp_path, matrix):
    dead = VectorFileWriter(tmp_path / "m.safetensors", matrix.shape)
    dead.write_rows(0, matrix[:4])  # killed here: no commit, no abort
    del dead
    assert [p.name for p in tmp_path.iterdir()] == [".m.safetensors.rank0.partial"]
    with VectorFileWriter(tmp_path / "m.safetensors", matrix.shape) as w:
        w.write_rows(0, matrix)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert torch.equal(VectorFile(tmp_path / "m.safetensors").to_tensor(), matrix)


def test_bad_files_are_named(tmp_path, matrix):
    path = tmp_path / "m.safetensors"
    with VectorFileWriter(path, matrix.shape) as w:
        w.write_rows(0, matrix)
    data = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="short.safetensors.*truncated"):
        VectorFile(tmp_path / "short.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
    with pytest.raises(ValueError, match="junk.safetensors"):
        VectorFile(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="no tensor 'nope'"):
        VectorFile(path, "nope")
    with pytest.raises(FileNotFoundError, match="missing"):
        VectorFile(tmp_path / "missing.safetensors")


def test_digest_tracks_values(tmp_path, matrix):
    a = VectorFileWriter(tmp_path / "a.safetensors", matrix.shape)
    a.write_rows(0, matrix)
    b = VectorFileWriter(tmp_path / "b.safetensors", matrix.shape)
    changed = matrix.clone()
    changed[3, 500] += 1e-3
    b.write_rows(0, changed)
    assert a.commit().digest() != b.commit().digest()
    assert VectorFile(tmp_path / "a.safetensors").digest() == VectorFile(
        tmp_path / "a.safetensors").digest()


def test_parse_bytes():
    assert parse_bytes("512MB") == 512 * 10**6
    assert parse_bytes("4GiB") == 4 * 2**30
    assert parse_bytes(" 1.5 kb") == 1500 and parse_bytes(2**20) == 2**20
    for bad in ("abc", "0", "-1GB", "4 XB"):
        with pytest.raises(ValueError, match="memory budget"):
            parse_bytes(bad)
    with pytest.raises(TypeError):
        parse_bytes(True)
