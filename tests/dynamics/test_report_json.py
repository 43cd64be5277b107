"""dynamics_report / branches_report write and return JSON through store.jsonable (the
one JSON rule): strict JSON (no NaN), transitions as their dicts, the returned dict equal
to the file; the figures are saved by the report, not by the plot function."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from lossatlas.dynamics import dynamics_report


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _write_run(run_dir, n=40, jump=25):
    """A Recorder-style metrics.jsonl: val_accuracy jumps 0.1 -> 0.9 at row ``jump``;
    val_loss is missing (null) in one row."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        acc = (0.9 if i >= jump else 0.1) + 0.002 * rng.standard_normal()
        loss = 2.0 - 0.01 * i + 0.001 * rng.standard_normal()
        rows.append({"step": 10 * i, "train_accuracy": 1.0, "val_accuracy": acc,
                     "val_loss": None if i == 3 else loss})
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_dynamics_json_is_strict_and_equals_the_returned_dict(tmp_path):
    _write_run(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the report saves figures itself
        rep = dynamics_report(tmp_path, figures=True)
    written = _strict((tmp_path / "dynamics.json").read_text())
    assert written == rep
    entry = rep["runs"]["run"]
    ups = [t for t in entry["transitions"]["val_accuracy"] if t["size"] > 0]
    assert len(ups) == 1 and ups[0]["step"] == pytest.approx(250, abs=10)
    assert isinstance(ups[0]["size"], float) and ups[0]["size"] == pytest.approx(0.8, abs=0.02)
    (fig,) = entry["figures"]
    assert open(fig, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_report_values_follow_the_one_json_rule(tmp_path):
    """What the report's old private cleaner left for atomic_write_json (numpy arrays,
    numpy scalars, NaN / inf, tensors, Transitions) is written exactly as before."""
    import torch

    from lossatlas.dynamics.transitions import Transition
    from lossatlas.store import atomic_write_json, jsonable

    t = Transition(index=2, metric="m", size=0.5, confidence=1.0, z=float("inf"), step=20.0)
    value = {"a": np.array([1.0, np.nan]), "b": np.float32(np.inf), "c": (np.int64(2),),
             "d": torch.tensor([0.5, -math.inf]), "t": [t], "e": -math.inf}
    atomic_write_json(tmp_path / "r.json", value)
    assert _strict((tmp_path / "r.json").read_text()) == {
        "a": [1.0, None], "b": None, "c": [2], "d": [0.5, None],
        "t": [jsonable(t.to_dict())], "e": None}
    assert _strict(json.dumps(jsonable([t])))[0]["z"] is None  # inf -> null
    assert _strict(json.dumps(jsonable([t])))[0]["width"] is None  # nan -> null


def test_plot_transitions_draws_only_and_path_is_deprecated(tmp_path):
    from matplotlib.axes import Axes

    from lossatlas.dynamics import detect_transitions, plot_transitions
    from lossatlas.dynamics.plot import save_png

    steps = np.arange(30.0)
    acc = np.where(steps >= 15, 0.9, 0.1)
    found = {"val_accuracy": detect_transitions(acc, steps=steps)}
    ax = plot_transitions(steps, {"val_accuracy": acc}, found)
    assert isinstance(ax, Axes) and not list(tmp_path.iterdir())
    markers = [ln for ln in ax.lines if ln.get_marker() == "^"]
    assert len(markers) == 1 and markers[0].get_xdata()[0] == 15.0
    assert save_png(ax, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.warns(DeprecationWarning, match="plot_transitions: path= is deprecated"):
        plot_transitions(steps, {"val_accuracy": acc}, found, path=tmp_path / "b.png")
    assert (tmp_path / "b.png").is_file()
