"""Stored results of the seed's validations (``RUN/table2.json``, ``RUN/rebasin.json``) in
the formats ``write_curve_table`` and ``write_rebasin_study`` write, for report tests
(small, hand-made; the real writers are exercised in tests/connectivity/test_curve_table.py
and tests/symmetry/test_rebasin_study.py), and issue 19's results (saddles, Hessian
slices, layer noise, the studies; made by the library, see seed_runs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _map(n: int) -> dict:
    g = np.linspace(-1, 1, 5)
    samples = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    return {"samples": samples.tolist(), "log10_loss": (samples ** 2).sum(1).tolist(),
            "box_lo": [-1, -1], "box_hi": [1, 1],
            "models": np.linspace(-0.8, 0.8, 2 * n).reshape(n, 2).tolist(),
            "labels": [f"m{i}" for i in range(n)], "model_basin": [i % 2 for i in range(n)]}


def add_validation_results(dst: Path) -> Path:
    """Write a two-pair ``table2.json`` (AE map) and a two-pair ``rebasin.json`` into ``dst``,
    and copy issue 19's stored results there (:func:`seed_runs.add_seed_results`)."""
    from seed_runs import add_seed_results

    add_seed_results(dst)
    t = [0.25, 0.5, 0.75]
    pair = {"projected_loss": [0.4, 0.5, 0.45], "projected_codes": [[0, 0], [0.1, 0.2], [0.2, 0.3]],
            "included_loss": [0.31, 0.33, 0.32], "included_codes": [[0, 0.1], [0.1, 0.1], [0.2, 0.2]]}
    rows = [{"method": "ae", "pair": p, "true_range": [0.3, 0.34], "projected_range": [0.4, 0.5],
             "projected_mae": 0.123, "span_mae": 0.1, "curve_barrier": 0.01,
             "included_range": [0.31, 0.33], "included_mae": 0.0042} for p in ("G-A", "G-B")]
    (dst / "table2.json").write_text(json.dumps({
        "reference": "G", "units": "nats", "pairs": ["G-A", "G-B"], "methods": ["ae"],
        "points_per_curve": 3, "curve_steps": 10, "rows": rows, "skipped": {},
        "median_abs_error": {"ae": {"projected": 0.123, "included": 0.0042}}, "t": t,
        "true_loss": {"G-A": [0.3, 0.34, 0.32], "G-B": [0.3, 0.34, 0.32]},
        "span_loss": {"G-A": [0.4, 0.4, 0.4], "G-B": [0.4, 0.4, 0.4]},
        "curves": {"ae": {"pairs": {"G-A": pair, "G-B": pair}, "map": _map(4),
                          "included_map": _map(4)}}}))
    pairs = [{"a": f"pair/seed{2 * k}", "b": f"pair/seed{2 * k + 1}", "a_index": 2 * k,
              "b_index": 2 * k + 1, "partner_basin": k, "rebased_basin": k, "same_basin": True,
              "control_basin": 1 - k, "control_same": False, "rebased_code": [0.1 * k, 0.2],
              "rebased_true_loss": 0.2, "rebased_projected_loss": 0.25,
              "rebased_abs_error": 0.05, "distance_before": 10.0, "distance_after": 7.0,
              "trajectory": {"epochs": [0, 1], "codes": [[0.5, 0.5], [0.1 * k, 0.2]],
                             "true_loss": [2.3, 0.2], "projected_loss": [2.2, 0.25],
                             "median_abs_error": 0.075}} for k in range(2)]
    (dst / "rebasin.json").write_text(json.dumps({
        "num_pairs": 2, "in_partner_basin": 2, "control_in_partner_basin": 0, "num_basins": 2,
        "rebased_median_abs_error": 0.05, "trajectory_median_abs_error": 0.075,
        "units": "nats", "seconds": 1.0, "pairs": pairs, "map": _map(4)}))
    return dst
