"""The report states the choices behind every loss: the BatchNorm policy, the loss
function and the data (the demo's BatchNorm sub-run, the atlas CLI, stored tables)."""

from __future__ import annotations

import json
import re

from report_runs import copy_run, with_all_results
from typer.testing import CliRunner

from lossatlas.batchnorm import POLICY_TEXT
from lossatlas.cli import app
from lossatlas.report import write_report
from lossatlas.report.html import esc, fmt


def _section(page: str, key: str) -> str:
    m = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert m is not None, f"section {key} missing"
    return m.group(1)


def _kv(html: str) -> dict[str, str]:
    return dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", html, re.S))


def test_bn_run_states_policy_loss_and_data(bn_run):
    page = write_report(bn_run).read_text()
    info = _kv(_section(page, "overview"))
    assert info["BatchNorm policy"] == esc(f"recompute: {POLICY_TEXT['recompute']}")
    assert info["loss function"].startswith("cross-entropy")
    assert info["model"].startswith("cnn2d_bn")
    assert info["training data"].startswith("digits (train split, 1437 samples")
    assert info["test data"].startswith("digits (test split, 360 samples")
    assert info["loss measured on"] == "the first 200 samples of the training data"
    summary = json.loads((bn_run / "summary.json").read_text())
    assert summary["overview"]["bn"] == "recompute"
    assert summary["overview"]["loss"] == "cross_entropy"
    assert summary["overview"]["data"]["training data"].startswith("digits")


def test_bn_run_eval_mode_beside_policy_loss(bn_run):
    page = write_report(bn_run).read_text()
    faith = json.loads((bn_run / "faithfulness.json").read_text())["per_model"]
    own, true = faith["eval_mode_loss"], faith["true_loss"]
    assert len(own) == len(true) == 9 and own != true
    body = _section(page, "faithfulness")
    assert "<th>loss under the policy (recompute)</th>" in body
    assert "<th>eval-mode loss (own statistics)</th>" in body
    assert "eval-mode loss is the checkpoint as saved" in body  # the one-line explanation
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
                      r"</tr>", body)
    assert len(rows) == 9
    for (_, a, b, _), t, o in zip(rows, true, own, strict=True):
        assert (a, b) == (fmt(t, "nats"), fmt(o, "nats"))
    summary = json.loads((bn_run / "summary.json").read_text())["faithfulness"]
    assert summary["bn"] == "recompute" and summary["eval_mode_loss"] is True
    assert summary["eval_mode_gap_decades_max"] > 0


def test_run_without_batchnorm_has_no_eval_mode_column(small_run, tmp_path):
    run = copy_run(small_run, tmp_path / "plain")
    page = write_report(run).read_text()
    assert _kv(_section(page, "overview"))["BatchNorm policy"] == esc(
        f"none: {POLICY_TEXT['none']}")
    body = _section(page, "faithfulness")
    assert "<th>loss under the policy (none)</th>" in body
    assert "eval-mode" not in body
    # data given as a DatasetSplits object: named from the train manifest's data_source
    data = _kv(_section(page, "overview"))["training data"]
    assert data.startswith("mnist1d (train split, ") and "not recorded" not in data
    # a manifest without a description says so, not guessed
    manifest = run / "train" / "train.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "data_source": None}))
    page = write_report(run).read_text()
    assert _kv(_section(page, "overview"))["training data"].startswith("not recorded")


def test_connectivity_and_terrain_state_their_policy(small_run, tmp_path):
    page = write_report(with_all_results(small_run, tmp_path / "own", bn="own")).read_text()
    own = esc(f"own: {POLICY_TEXT['own']}")
    assert f"BatchNorm policy of the barriers:</b> {own}" in _section(page, "connectivity")
    assert f"BatchNorm policy at each model:</b> {own}" in _section(page, "terrain")
    page = write_report(with_all_results(small_run, tmp_path / "unstated")).read_text()
    assert "BatchNorm policy" not in _section(page, "connectivity")
    assert "BatchNorm policy" not in _section(page, "terrain")


def test_sub_runs_listed(small_run, bn_run, tmp_path):
    run = copy_run(small_run, tmp_path / "with_sub")
    copy_run(bn_run, run / "bn_cnn")
    info = _kv(_section(write_report(run).read_text(), "overview"))
    assert "<code>bn_cnn/</code>" in info["sub-runs"]


def test_atlas_cli_records_the_data(bn_run, tmp_path):
    out = tmp_path / "cli_atlas"
    res = CliRunner().invoke(app, [
        "atlas", "--population", str(bn_run / "train"), "--data", "digits",
        "--samples", "150", "--method", "pca", "--resolution", "8", "--budget", "80",
        "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    stored = json.loads((out / "atlas_summary.json").read_text())
    assert stored["bn"] == "recompute" and stored["bn_text"].startswith("recompute: ")
    assert stored["data"]["training data"].startswith("digits (train split")
    assert stored["data"]["loss measured on"] == "the first 150 samples of the training data"
    info = _kv(_section(write_report(out).read_text(), "overview"))
    assert info["training data"].startswith("digits (train split")
    assert info["BatchNorm policy"].startswith("recompute: ")
