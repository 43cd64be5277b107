"""Helpers shared by several sections: the variant and the training runs of the
models' labels, the run's BatchNorm policy in words.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..rundir import RunView


def _variant(lab: dict[str, Any]) -> str:
    return str(lab.get("variant", "all models"))


def _runs_of(labels: list[dict[str, Any]]) -> list[list[int]]:
    """Model indices of each training run (variant, seed), ordered by epoch/step."""
    runs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        if "epoch" in lab or "step" in lab:
            runs[(str(lab.get("variant")), str(lab.get("seed")))].append(i)

    def key(i: int) -> tuple[float, float]:
        lab = labels[i]
        e, s = lab.get("epoch", -1), lab.get("step", -1)
        return (float(e) if isinstance(e, (int, float)) else -1.0,
                float(s) if isinstance(s, (int, float)) else -1.0)

    return [sorted(idx, key=key) for idx in runs.values()]


def _policy_text(bn: Any, bn_text: Any = None) -> str | None:
    """One line (raw text, not escaped) stating a BatchNorm policy; None when unknown."""
    from lossatlas.batchnorm import POLICY_TEXT

    if not isinstance(bn, str) or not bn:
        return None
    if isinstance(bn_text, str) and bn_text:
        return bn_text
    return f"{bn}: {POLICY_TEXT[bn]}" if bn in POLICY_TEXT else bn


def _run_policy(view: RunView) -> tuple[str | None, str | None]:
    """The run's BatchNorm policy ``(bn, text)``: from ``population.json``, else
    ``atlas_summary.json``, else ``faithfulness.json``."""
    for src in (view.population, view.atlas_summary, view.faithfulness or {}):
        if isinstance(src, dict) and isinstance(src.get("bn"), str):
            return src["bn"], _policy_text(src["bn"], src.get("bn_text"))
    return None, None
