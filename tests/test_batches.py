"""Tests of lossatlas.batches: TensorData and the helpers for inputs that are tensors or
dicts / tuples of tensors."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from lossatlas.batches import (
    TensorData,
    as_tensor_data,
    concat_inputs,
    index_inputs,
    input_leaves,
    input_nbytes,
    is_xy_pair,
    map_inputs,
    num_samples,
    sample_shape,
    stack_inputs,
    to_device,
)

Pair = namedtuple("Pair", ["tokens", "mask"])


def tokens(n: int = 10) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.arange(n * 4).reshape(n, 4),
        "attention_mask": torch.ones(n, 4, dtype=torch.bool),
    }


def shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_tensor_inputs_unchanged() -> None:
    x, y = torch.randn(10, 3), torch.arange(10)
    td = TensorData(x, y)
    assert len(td) == 10 and not td.is_tree
    assert td.nbytes == 10 * 3 * 4 + 10 * 8
    parts = list(td.batches(4))
    assert [len(b[1]) for b in parts] == [4, 4, 2]
    assert all(shares_memory(bx, x) for bx, _ in parts)  # views, no copies
    torch.testing.assert_close(torch.cat([bx for bx, _ in parts]), x)
    head = td.head(3)
    assert head.x.shape == (3, 3) and shares_memory(head.x, x)
    assert torch.equal(td.subset(3).x, head.x)
    picked = td.subset(torch.tensor([7, 1]))
    assert torch.equal(picked.x, x[[7, 1]]) and torch.equal(picked.y, torch.tensor([7, 1]))
    assert td.to("cpu").x is x
    if not torch.cuda.is_available():
        assert td.pin() is td  # no GPU: pin is a no-op
    else:  # page-locked copies of the same values
        assert td.pin().x.is_pinned() and torch.equal(td.pin().x, x)
    with pytest.raises(ValueError, match="inputs have 10 samples but targets have 9"):
        TensorData(x, y[:9])
    with pytest.raises(ValueError, match="empty"):
        TensorData(x[:0], y[:0])


def test_dict_inputs() -> None:
    x, y = tokens(10), torch.arange(10)
    td = TensorData(x, y)
    assert len(td) == 10 and td.is_tree
    assert td.nbytes == 10 * 4 * 8 + 10 * 4 * 1 + 10 * 8
    batches = list(td.batches(4))
    assert [len(by) for _, by in batches] == [4, 4, 2]
    bx, _ = batches[1]
    assert set(bx) == {"input_ids", "attention_mask"}
    assert torch.equal(bx["input_ids"], x["input_ids"][4:8])
    assert shares_memory(bx["input_ids"], x["input_ids"])
    head = td.head(3)
    assert head.x["attention_mask"].shape == (3, 4) and len(head) == 3
    picked = td.subset([9, 0])
    assert torch.equal(picked.x["input_ids"][:, 0], torch.tensor([36, 0]))
    moved = td.to("cpu")
    assert torch.equal(moved.x["input_ids"], x["input_ids"])
    if not torch.cuda.is_available():
        assert moved.pin() is moved
    else:
        assert moved.pin().x["input_ids"].is_pinned()


def test_tuple_and_nested_inputs_keep_their_structure() -> None:
    x = (torch.randn(6, 2), {"a": torch.zeros(6), "b": [torch.ones(6, 3)]})
    td = TensorData(x, torch.zeros(6))
    part = td.head(2).x
    assert isinstance(part, tuple) and isinstance(part[1]["b"], list)
    assert part[1]["b"][0].shape == (2, 3)
    assert sample_shape(x) == ((2,), {"a": (), "b": ((3,),)})
    named = Pair(torch.zeros(5, 2), torch.ones(5, 2))
    out = index_inputs(named, slice(1, 3))
    assert isinstance(out, Pair) and out.mask.shape == (2, 2)
    assert [n for n, _ in input_leaves(x)] == ["x[0]", "x[1]['a']", "x[1]['b'][0]"]


def test_leading_size_mismatch_names_the_key() -> None:
    x = tokens(4)
    x["attention_mask"] = x["attention_mask"][:3]
    with pytest.raises(ValueError) as info:
        TensorData(x, torch.arange(4))
    msg = str(info.value)
    assert "x['attention_mask'] has 3 samples" in msg and "x['input_ids'] has 4" in msg
    with pytest.raises(ValueError, match=r"x\[1\] has 2 samples but x\[0\] has 5"):
        num_samples((torch.zeros(5), torch.zeros(2)))
    with pytest.raises(ValueError, match="0-d tensor"):
        num_samples({"a": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="hold no tensors"):
        num_samples({})
    with pytest.raises(TypeError, match=r"input x\['text'\] is a str"):
        TensorData({"ids": torch.zeros(2), "text": "hello"}, torch.zeros(2))
    with pytest.raises(ValueError, match="inputs have 4 samples but targets have 3"):
        TensorData(tokens(4), torch.arange(3))


def test_module_helpers() -> None:
    x = tokens(5)
    assert num_samples(x) == 5 and num_samples(torch.zeros(7, 2)) == 7
    assert input_nbytes(x) == 5 * 4 * 8 + 5 * 4
    moved = to_device(x, "cpu", non_blocking=True)
    assert moved.keys() == x.keys() and torch.equal(moved["input_ids"], x["input_ids"])
    doubled = map_inputs(lambda t: t * 2, x)
    assert torch.equal(doubled["input_ids"], x["input_ids"] * 2)
    assert torch.equal(index_inputs(x, [4, 0])["input_ids"][:, 0], torch.tensor([16, 0]))
    t = torch.arange(6)
    assert to_device(t, "cpu") is t and torch.equal(index_inputs(t, slice(1, 3)), t[1:3])
    with pytest.raises(TypeError, match="found a str"):
        map_inputs(lambda v: v, "abc")


def test_concat_and_stack_name_what_does_not_match() -> None:
    a, b = tokens(3), tokens(2)
    joined = concat_inputs([a, b])
    assert joined["input_ids"].shape == (5, 4)
    items = [{"ids": torch.tensor([i, i])} for i in range(3)]
    assert stack_inputs(items)["ids"].shape == (3, 2)
    with pytest.raises(ValueError, match=r"keys \['input_ids'\] in batch 1"):
        concat_inputs([a, {"input_ids": b["input_ids"]}], who="loader")
    b["input_ids"] = torch.zeros(2, 7, dtype=torch.long)
    with pytest.raises(ValueError, match=r"loader: cannot join input x\['input_ids'\] across "):
        concat_inputs([a, b], who="loader")
    with pytest.raises(TypeError, match="is a tensor in item 1 but a dict in item 0"):
        stack_inputs([{"a": torch.zeros(1)}, torch.zeros(1)])


class DictItems(Dataset):
    def __init__(self, n: int) -> None:
        self.x, self.y = tokens(n), torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return {k: v[i] for k, v in self.x.items()}, int(self.y[i])


def test_as_tensor_data_dict_dataset_and_loader() -> None:
    ds = DictItems(7)
    from_ds = as_tensor_data(ds)
    assert torch.equal(from_ds.x["input_ids"], ds.x["input_ids"])
    assert torch.equal(from_ds.y, ds.y) and from_ds.y.dtype == torch.int64
    from_loader = as_tensor_data(DataLoader(ds, batch_size=3))
    assert torch.equal(from_loader.x["attention_mask"], ds.x["attention_mask"])
    assert torch.equal(from_loader.y, ds.y)


def test_as_tensor_data_pairs() -> None:
    x1, x2, y = torch.randn(4, 2), torch.randn(4, 5), torch.arange(4)
    td = as_tensor_data(((x1, x2), y))
    assert isinstance(td.x, tuple) and td.x[1] is x2
    td = as_tensor_data(({"a": np.zeros((4, 2)), "b": np.arange(4)}, np.arange(4)))
    assert td.x["a"].dtype == torch.float32 and td.x["b"].dtype == torch.int64
    plain = as_tensor_data((np.zeros((3, 2)), [0, 1, 0]))
    assert plain.x.dtype == torch.float32 and plain.y.tolist() == [0, 1, 0]
    same = as_tensor_data((x1, y))
    assert same.x is x1 and same.y is y
    loader = as_tensor_data(DataLoader(TensorDataset(x1, y), batch_size=3))
    assert torch.equal(loader.x, x1)
    with pytest.raises(TypeError, match="my data: expected an \\(X, y\\) tensor pair"):
        as_tensor_data([(x1[0], y[0]), (x1[1], y[1]), (x1[2], y[2])], who="my data")
    with pytest.raises(ValueError, match="my data: the DataLoader yielded no batches"):
        as_tensor_data(DataLoader(TensorDataset(x1[:0], y[:0])), who="my data")


class Stream(IterableDataset):
    def __iter__(self):
        yield from ((torch.zeros(2), 0) for _ in range(5))


class NoLen(Dataset):
    def __getitem__(self, i: int):
        return torch.zeros(2), 0


def test_pair_detection_and_unsized_datasets() -> None:
    x, y = torch.zeros(3, 2), torch.zeros(3)
    assert is_xy_pair((x, y)) and is_xy_pair([np.zeros((3, 2)), [0, 1, 2]])
    assert is_xy_pair(({"a": x}, y)) and is_xy_pair(((x, x), y))
    assert not is_xy_pair([(x[0], y[0]), (x[1], y[1])])  # two (x, y) items
    assert not is_xy_pair((TensorDataset(x, y), TensorDataset(x, y)))  # two datasets
    assert not is_xy_pair((x, y, y)) and not is_xy_pair(x)
    with pytest.raises(TypeError, match="stream: an IterableDataset \\(Stream\\) has no length; "
                                        "wrap it in a DataLoader"):
        as_tensor_data(Stream(), who="stream")
    assert len(as_tensor_data(DataLoader(Stream(), batch_size=2))) == 5
    with pytest.raises(TypeError, match="nolen: the Dataset NoLen has no __len__"):
        as_tensor_data(NoLen(), who="nolen")
