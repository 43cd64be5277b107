"""lossatlas's one JSON cleaner (store.jsonable): what every JSON file and the report's
embedded data go through."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from lossatlas.report.html import script_json
from lossatlas.store import atomic_write_json, jsonable


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_jsonable_turns_every_kind_into_plain_json_values():
    value = {1: np.float32("nan"), "a": (np.int64(3), torch.tensor([1.5, float("inf")])),
             "p": Path("/x"), "t0": torch.tensor(2.0), "b": np.bool_(True),
             "arr": np.array([[1, 2]]), "f": np.float64(0.25), "s": "text", "n": None}
    assert jsonable(value) == {"1": None, "a": [3, [1.5, None]], "p": "/x", "t0": 2.0,
                               "b": True, "arr": [[1, 2]], "f": 0.25, "s": "text",
                               "n": None}
    assert type(jsonable(np.float64(0.25))) is float
    assert type(jsonable(np.int32(7))) is int


def test_files_and_report_data_hold_no_nan(tmp_path):
    data = {"loss": np.array([0.5, np.nan, -np.inf]), "x": np.float32("inf"), "m": math.nan}
    atomic_write_json(tmp_path / "a.json", data)
    assert _strict((tmp_path / "a.json").read_text()) == {"loss": [0.5, None, None],
                                                          "x": None, "m": None}
    assert _strict(script_json(data)) == {"loss": [0.5, None, None], "x": None, "m": None}


def test_jsonable_writes_dataclass_results_as_their_dicts():
    import dataclasses

    @dataclasses.dataclass
    class Plain:
        x: float
        t: torch.Tensor

    @dataclasses.dataclass
    class Own:
        a: int

        def to_dict(self):
            return {"a": self.a, "twice": 2 * self.a}

    assert jsonable(Plain(float("nan"), torch.tensor([1.0, float("inf")]))) == {
        "x": None, "t": [1.0, None]}
    assert jsonable({"r": [Own(3)]}) == {"r": [{"a": 3, "twice": 6}]}
    assert jsonable(Plain) is Plain  # a class is not a result
