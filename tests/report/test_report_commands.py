"""The ``{population}`` placeholder of the report's hints: the run's train folder, else
the train run above the stored checkpoints, else their one folder, else a placeholder;
a folder counts as a train run as Population.open decides it (a checkpoints/ folder)
and only with a train.json naming its model (the hints pass no --model)."""

from __future__ import annotations

import json
import shlex

from lossatlas.report.commands import run_context
from lossatlas.report.rundir import RunView


def _view(run, paths):
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text("{}")
    (run / "population.json").write_text(json.dumps({"labels": [{} for _ in paths],
                                                     "paths": [str(p) for p in paths]}))
    return RunView(run)


def _train_run(folder, manifest=True):
    (folder / "checkpoints").mkdir(parents=True)
    if manifest:
        (folder / "train.json").write_text(json.dumps({"model": "mlp"}))
    return folder


def test_population_hint_is_the_train_folder_of_the_run(tmp_path):
    run = tmp_path / "run"
    _train_run(run / "train")
    elsewhere = tmp_path / "ckpts"
    view = _view(run, [elsewhere / "a.pt", elsewhere / "b.pt"])
    assert run_context(view)["population"] == shlex.quote(str(run / "train"))


def test_population_hint_is_the_train_run_above_the_checkpoints(tmp_path):
    src = _train_run(tmp_path / "my train")
    view = _view(tmp_path / "run", [src / "checkpoints" / "a.safetensors"])
    assert run_context(view)["population"] == shlex.quote(str(src))


def test_population_hint_without_a_readable_train_run(tmp_path):
    # checkpoints/ but no train.json: the hint names the checkpoint folder itself
    src = _train_run(tmp_path / "t", manifest=False)
    ck = src / "checkpoints"
    assert run_context(_view(tmp_path / "r1", [ck / "a.pt"]))["population"] == str(ck)
    # train.json but no checkpoints/ folder: not a train run either
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "train.json").write_text("{}")
    flat = tmp_path / "u" / "a.pt"
    assert run_context(_view(tmp_path / "r2", [flat]))["population"] == str(tmp_path / "u")
    # checkpoints in two folders: no one source
    assert run_context(_view(tmp_path / "r3", [ck / "a.pt", flat]))["population"] == (
        "<CHECKPOINTS>")
