"""The lead-time law on real grokking runs.

``data/grokking_traces.json`` holds what ``run_grokking`` wrote for the runs of a
measured sweep (``lead_time_sweep`` on a loaded 2-core CPU, see its ``source``): each
run's metrics (validation and train accuracy every ``eval_every`` steps) and its
commutator defect at every checkpoint. The tests recompute the onsets from the metrics,
find the defect's rise again (``redetect_leads``, no training) and fit the law; a tiny
real sweep checks that its rows are what re-detection of its stored defects gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from lossatlas.dynamics import grokking_onset, lead_time_sweep
from lossatlas.dynamics.lead_law import redetect_leads, write_lead_time_law

DATA = Path(__file__).parent / "data" / "grokking_traces.json"
RISE = {"method": "threshold"}


@pytest.fixture(scope="module")
def traces() -> dict:
    return json.loads(DATA.read_text())


def _run_dirs(traces: dict, root: Path) -> list[Path]:
    """One directory per stored run with its ``grokking.json`` (as run_grokking wrote it)."""
    dirs = []
    for i, run in enumerate(traces["runs"]):
        d = root / f"run{i}"
        d.mkdir()
        (d / "grokking.json").write_text(json.dumps(run["grokking"]))
        dirs.append(d)
    return dirs


def test_stored_onsets_are_those_of_the_stored_metrics(traces):
    for run in traces["runs"]:
        m = run["metrics"]
        onset = grokking_onset(m["step"], m["val_accuracy"], m["train_accuracy"])
        assert onset["onset_step"] == run["grokking"]["onset"]["onset_step"]
        assert onset["train_fit_step"] == run["grokking"]["onset"]["train_fit_step"]


def test_real_runs_lead_is_found_in_most_and_the_law_has_a_finite_interval(traces, tmp_path):
    rows = redetect_leads(_run_dirs(traces, tmp_path), rise_kwargs=RISE, defect_median=3)
    grokked = [r for r in rows if r["onset_step"]]
    led = [r for r in grokked if r["lead_time"] is not None and r["lead_time"] > 0]
    assert len(grokked) >= 5 and len(led) > len(grokked) / 2
    for r, run in zip(rows, traces["runs"], strict=True):
        if r in led:  # the rise is a checkpoint of the run, before its onset
            assert r["defect_rise_step"] in run["grokking"]["checkpoint_steps"]
            assert r["defect_rise_step"] + r["lead_time"] == r["onset_step"]
    summary = write_lead_time_law(tmp_path / "law", rows, num_bootstrap=500)
    law = summary["law"]
    assert summary["num_used"] == len(led) == law["num_points"]
    lo, hi = law["exponent_ci"]
    assert np.isfinite([lo, hi]).all() and lo < law["exponent"] < hi
    ref = stats.linregress(np.log([r["onset_step"] for r in led]),
                           np.log([r["lead_time"] for r in led]))
    assert law["exponent"] == pytest.approx(ref.slope, abs=1e-10)
    assert law["exponent_se"] == pytest.approx(ref.stderr, rel=1e-8)
    assert (tmp_path / "law" / "lead_time_law.png").stat().st_size > 0
    # measured: the rise stays near one step while the onset moves (see lead_law's doc)
    line = summary["rise_vs_onset"]
    assert line["num_points"] == sum(r["lead_time"] is not None for r in grokked)
    assert line["rise_sd"] < line["onset_sd"] / 2


def test_single_checkpoint_spikes_are_not_a_rise(traces, tmp_path):
    """A spike of one checkpoint (an unlucky pair of batches) on the plateau before the
    defect's rise is a rise of the raw defect for the threshold detector, not of its
    running median."""
    run = traces["runs"][traces["spike_run"]]
    g = json.loads(json.dumps(run["grokking"]))
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "grokking.json").write_text(json.dumps(g))
    clean, = redetect_leads([tmp_path / "clean"], rise_kwargs=RISE)
    steps = g["checkpoint_steps"]
    i = steps.index(clean["defect_rise_step"]) - 3
    g["defect"][i] *= 100.0
    (tmp_path / "spiked").mkdir()
    (tmp_path / "spiked" / "grokking.json").write_text(json.dumps(g))
    raw, = redetect_leads([tmp_path / "spiked"], rise_kwargs=RISE, defect_median=1)
    med, = redetect_leads([tmp_path / "spiked"], rise_kwargs=RISE, defect_median=3)
    assert raw["defect_rise_step"] == steps[i]
    assert med["defect_rise_step"] == clean["defect_rise_step"]


def test_a_real_sweep_records_what_redetection_of_its_defects_gives(tmp_path):
    torch.set_num_threads(1)
    summary = lead_time_sweep(tmp_path, moduli=(11,), weight_decays=(1.0, 3.0), steps=40,
                              train_fraction=0.5, num_checkpoints=9, eval_every=5,
                              model_kwargs={"d_embed": 8, "hidden": 16},
                              defect_kwargs={"num_pairs": 2, "batch_size": 8},
                              rise_kwargs={**RISE, "factor": 1.05, "baseline": 2},
                              num_bootstrap=20, progress=False)
    again = redetect_leads([r["out_dir"] for r in summary["runs"]],
                           rise_kwargs={**RISE, "factor": 1.05, "baseline": 2})
    assert any(r["defect_rise_step"] is not None for r in summary["runs"])
    for r, s in zip(summary["runs"], again, strict=True):
        for k in ("p", "weight_decay", "seed", "onset_step", "defect_rise_step", "lead_time"):
            assert r[k] == s[k], k
    with pytest.raises(ValueError, match="median must be an odd"):
        redetect_leads([summary["runs"][0]["out_dir"]], defect_median=2)
    with pytest.raises(FileNotFoundError, match="grokking.json"):
        redetect_leads([tmp_path / "nope"])
