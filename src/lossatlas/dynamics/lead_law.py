"""The commutator defect's lead over the grokking onset as a law, and interventions.

The survey states that the lead time between the rise of the commutator defect and
the onset of generalisation follows a superlinear power law (exponents ~1.1-1.2)::

    lead = c * onset ** alpha

:func:`fit_lead_time_law` fits it by least squares in log-log coordinates, with the
exponent's standard error (ordinary least squares, t interval) and a bootstrap
percentile interval over the (onset, lead) pairs. :func:`lead_time_sweep` measures
the pairs with :func:`~lossatlas.dynamics.run_grokking` over moduli ``p`` and weight
decays (and seeds), fits the law and plots it. :func:`grokking_interventions` runs
the survey's interventions beside a baseline: a stronger weight decay (onset
earlier) and a frozen embedding (onset later, or never within the run).

Measured, interventions (seed 0, one thread, loaded 2-core CPU, ~2 min per run): p =
59, train fraction 0.5, MLP (embeddings 32, hidden 128), AdamW lr 3e-3, 2000 steps:
onset at step 1050 with weight decay 1, 590 with weight decay 3; with the embedding
frozen the train set is fitted by step 150 but validation accuracy stays at 0.006 (no
onset within 2000 steps).

Measured, sweep (one H200, ``device="cuda"``, ~10 s per run): p in {47, 59, 71} x
weight decay in {0.5, 1, 2}, train fraction 0.4, MLP (64, 256), 4000 steps, 41
checkpoints. Onsets fall with the weight decay for every p (47: none / 3040 / 1920;
59: 3380 / 1900 / 1200; 71: 3000 / 1540 / 880), but the change-point rise detector
(``method="transition"``, then the default) found a defect rise in only 2 of the 8
grokking runs.

Measured, sweep on the CPU (loaded 2-core machine, one thread, 1-6 min per run; the
runs are ``tests/dynamics/data/grokking_traces.json``): p in {47, 53, 59, 67} x weight
decay in {0.7, 1, 1.5}, train fraction 0.4, MLP (64, 256), lr 3e-3, 4000 steps, 41
checkpoints, the threshold detector (twice the post-memorisation baseline) on the
defect's running median over 3 checkpoints (the defaults of :func:`lead_time_sweep`).
11 of 12 runs grok (p 47 / wd 0.7 reaches 0.37 validation accuracy); the rise is found
in all 11; it precedes the onset in 9 (leads 260-2100 steps) and follows it in the 2
fastest (onsets 1260 and 1460). Fitted on the 9: exponent 3.03, 95% interval [2.39,
3.67] (OLS t; bootstrap [2.26, 3.59]), R^2 0.95. The exponent is not the survey's
1.1-1.2, and the reason is in ``rise_vs_onset``: the rise stays at steps 1200-1600
(sd 163) while the onset moves over 1260-3300 (sd 659), slightly earlier for later
onsets (slope -0.20, r = -0.80), so the lead is about ``1.14 * onset - 1660`` (linear,
R^2 0.98) and its log-log slope reflects that offset. With the change-point detector
the same traces give a positive lead in 3 of the 11 (6 with the running median). With
train fraction 0.5 and a smaller MLP (32, 128) the rise also stays near one step (it
follows the peak of the weight norm) and precedes the onset in fewer runs (p 47: leads
1000 / 100 / -1200 at weight decay 0.7 / 1 / 1.5).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..errors import InputTypeError
from ..progress import progress_bar
from ..store import Run, atomic_write_json
from .grokking import run_grokking

__all__ = [
    "LeadTimeLaw",
    "fit_lead_time_law",
    "grokking_interventions",
    "lead_time_sweep",
    "onset_effect",
    "plot_lead_time_law",
    "redetect_leads",
    "write_lead_time_law",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeadTimeLaw:
    """A fitted power law ``lead = prefactor * onset ** exponent``.

    Attributes
    ----------
    exponent : float                 alpha (dimensionless)
    prefactor : float                c (steps ** (1 - alpha))
    exponent_se : float              OLS standard error of alpha (nan with 2 points)
    exponent_ci : (float, float)     t interval at ``level`` from the OLS fit
    exponent_ci_bootstrap : (float, float)   bootstrap percentile interval at ``level``
    r2 : float                       coefficient of determination in log-log
    level : float                    confidence level (e.g. 0.95)
    num_points : int
    onsets, leads : tuple of float   the fitted pairs (steps)
    """

    exponent: float
    prefactor: float
    exponent_se: float
    exponent_ci: tuple[float, float]
    exponent_ci_bootstrap: tuple[float, float]
    r2: float
    level: float
    num_points: int
    onsets: tuple[float, ...]
    leads: tuple[float, ...]

    def predict(self, onset: np.ndarray | float) -> np.ndarray:
        """Lead time (steps) the law gives at ``onset`` (steps)."""
        return self.prefactor * np.asarray(onset, dtype=float) ** self.exponent

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _loglog_fit(u: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of the least-squares line ``v = a u + b``."""
    a, b = np.polyfit(u, v, 1)
    return float(a), float(b)


def fit_lead_time_law(
    onsets: Sequence[float] | np.ndarray,
    leads: Sequence[float] | np.ndarray,
    *,
    level: float = 0.95,
    num_bootstrap: int = 2000,
    seed: int = 0,
) -> LeadTimeLaw:
    """Fit ``lead = c * onset ** alpha`` by least squares of ``log lead`` on ``log onset``.

    Parameters
    ----------
    onsets : array (n,) of grokking onsets (steps, > 0)
    leads : array (n,) of lead times (steps, > 0; pairs with a missing or
        non-positive lead cannot enter a log-log fit and are refused)
    level : confidence level of the intervals, in (0, 1)
    num_bootstrap : resamples of the pairs (with replacement) for the percentile
        interval; resamples with a single distinct onset are redrawn
    seed : seed of the resampling

    Returns
    -------
    LeadTimeLaw
    """
    from scipy import stats

    x = np.asarray(onsets, dtype=float)
    y = np.asarray(leads, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"fit_lead_time_law: onsets {x.shape} and leads {y.shape} must be "
                         f"1-D of one length")
    bad = ~(np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0))
    if bad.any():
        raise ValueError(
            f"fit_lead_time_law: onsets and leads must be finite and > 0; pairs "
            f"{np.flatnonzero(bad).tolist()[:6]} are not (drop runs without an onset or "
            f"whose defect did not rise first)"
        )
    if np.unique(x).size < 2:
        raise ValueError(f"fit_lead_time_law: need at least 2 distinct onsets, got {x.tolist()}")
    if not 0 < level < 1:
        raise ValueError(f"fit_lead_time_law: level must be in (0, 1), got {level}")
    u, v = np.log(x), np.log(y)
    n = u.size
    alpha, beta = _loglog_fit(u, v)
    resid = v - (alpha * u + beta)
    ss_tot = float(((v - v.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    if n > 2:
        s2 = float((resid**2).sum()) / (n - 2)
        se = float(np.sqrt(s2 / ((u - u.mean()) ** 2).sum()))
        half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * se
    else:
        se, half = float("nan"), float("nan")
    rng = np.random.default_rng(int(seed))
    boot = []
    while len(boot) < int(num_bootstrap):
        i = rng.integers(0, n, n)
        if np.unique(u[i]).size < 2:
            continue
        boot.append(_loglog_fit(u[i], v[i])[0])
    q = (1 - level) / 2
    lo, hi = (np.quantile(boot, [q, 1 - q]) if boot else (np.nan, np.nan))
    return LeadTimeLaw(
        exponent=alpha, prefactor=float(np.exp(beta)), exponent_se=se,
        exponent_ci=(alpha - half, alpha + half), exponent_ci_bootstrap=(float(lo), float(hi)),
        r2=r2, level=float(level), num_points=n, onsets=tuple(x.tolist()),
        leads=tuple(y.tolist()),
    )


def plot_lead_time_law(summary: dict[str, Any]) -> Figure:
    """Lead time vs onset (log-log): one marker per run (colour: modulus), the fitted
    law and the laws at the ends of the exponent's interval."""
    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.subplots()
    rows = [r for r in summary["runs"] if r["onset_step"] and r["lead_time"]
            and r["lead_time"] > 0]
    for k, p in enumerate(sorted({r["p"] for r in rows})):
        pts = [(r["onset_step"], r["lead_time"]) for r in rows if r["p"] == p]
        ax.plot(*zip(*pts, strict=True), "o", color=f"C{k}", label=f"p = {p}")
    law = summary.get("law")
    if law is not None:
        xs = np.geomspace(min(law["onsets"]), max(law["onsets"]), 50)
        mid = np.exp(np.mean(np.log(law["onsets"])))
        ax.plot(xs, law["prefactor"] * xs ** law["exponent"], "k-",
                label=f"lead ∝ onset^{law['exponent']:.2f}")
        for a in law["exponent_ci"]:
            if np.isfinite(a):
                y_mid = law["prefactor"] * mid ** law["exponent"]
                ax.plot(xs, y_mid * (xs / mid) ** a, "k:", lw=1)
        ax.set_title(f"exponent {law['exponent']:.2f}, {100 * law['level']:.0f}% CI "
                     f"[{law['exponent_ci'][0]:.2f}, {law['exponent_ci'][1]:.2f}]",
                     fontsize="small")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("grokking onset (steps)")
    ax.set_ylabel("defect lead time (steps)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return fig


def _norm_peak(steps: np.ndarray, weight_norm: np.ndarray) -> float | None:
    """The step of the largest parameter norm of a run (None without metrics)."""
    if len(steps) == 0:
        return None
    return float(np.asarray(steps)[int(np.argmax(weight_norm))])


def _row(onset: dict[str, Any], rise: dict[str, Any] | None, lead: float | None,
         final_val_accuracy: float, seconds: float, out_dir: str | Path,
         norm_peak: float | None = None, **labels: Any) -> dict[str, Any]:
    """One run's row of a sweep summary (steps; accuracy as a fraction; seconds)."""
    return {
        **labels,
        "onset_step": onset["onset_step"],
        "train_fit_step": onset["train_fit_step"],
        "grokked": bool(onset["grokked"]),
        "defect_rise_step": None if rise is None else rise["step"],
        "lead_time": lead,
        "weight_norm_peak_step": norm_peak,
        "final_val_accuracy": float(final_val_accuracy),
        "seconds": round(float(seconds), 3),
        "out_dir": str(out_dir),
    }


def _run_row(result, **labels: Any) -> dict[str, Any]:
    return _row(result.onset, result.defect_rise, result.lead_time, result.final_val_accuracy,
                result.seconds, result.out_dir,
                _norm_peak(result.steps, result.metrics["weight_norm"]), **labels)


def redetect_leads(
    run_dirs: Sequence[str | Path],
    *,
    rise_kwargs: dict[str, Any] | None = None,
    defect_median: int = 3,
) -> list[dict[str, Any]]:
    """The lead times of finished grokking runs found again with another rise detector,
    from the defect each run stored (no training, no defect evaluation).

    Parameters
    ----------
    run_dirs : run directories of :func:`~lossatlas.dynamics.run_grokking` (each with a
        ``grokking.json`` holding ``checkpoint_steps``, ``defect`` and ``onset``)
    rise_kwargs, defect_median : the detector, as in
        :func:`~lossatlas.dynamics.grokking.defect_lead`

    Returns
    -------
    One row per run as :func:`lead_time_sweep` records them (``p``, ``weight_decay``,
    ``seed`` from the run's config; ``weight_norm_peak_step`` from its
    ``metrics.jsonl`` when there is one), ready for :func:`write_lead_time_law`.
    """
    import json

    from .grokking import defect_lead

    rows = []
    for d in run_dirs:
        path = Path(d) / "grokking.json"
        if not path.is_file():
            raise FileNotFoundError(f"redetect_leads: {path} not found (not a run_grokking "
                                    f"directory)")
        g = json.loads(path.read_text())
        if g.get("defect") is None:
            raise ValueError(f"redetect_leads: {path} has no defect (the run had "
                             f"defect=False); rerun it with the defect")
        cfg = g["config"]
        lt = defect_lead(np.asarray(g["checkpoint_steps"], float), np.asarray(g["defect"], float),
                         g["onset"], rise_kwargs, defect_median)
        metrics = Path(d) / "metrics.jsonl"
        peak = None
        if metrics.is_file():
            m = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            peak = _norm_peak(np.array([r["step"] for r in m if "weight_norm" in r]),
                              np.array([r["weight_norm"] for r in m if "weight_norm" in r]))
        rows.append(_row(g["onset"], lt["rise"], lt["lead_time"], g["final_val_accuracy"],
                         g["seconds"], Path(d), peak, p=int(cfg["p"]),
                         weight_decay=float(cfg["weight_decay"]), seed=int(cfg["seed"])))
    return rows


def lead_time_sweep(
    out_dir: str | Path,
    moduli: Sequence[int] = (47, 53, 59),
    weight_decays: Sequence[float] = (0.7, 1.0, 1.5),
    seeds: Sequence[int] = (0,),
    *,
    level: float = 0.95,
    num_bootstrap: int = 2000,
    progress: bool | None = None,
    **grokking_kwargs: Any,
) -> dict[str, Any]:
    """Grokking runs over ``moduli x weight_decays x seeds``; fit the lead-time law.

    Parameters
    ----------
    out_dir : run directory; each run in ``OUT/p{p}_wd{wd}_seed{s}``
    moduli, weight_decays, seeds : the grid
    level, num_bootstrap : see :func:`fit_lead_time_law`
    progress : a bar over the runs
    **grokking_kwargs : passed to :func:`~lossatlas.dynamics.run_grokking` (steps, lr,
        train_fraction, model_kwargs, rise_kwargs, defect_median, ...; the defect is
        always computed). Defaults here: ``steps=4000`` and the threshold rise detector
        ``rise_kwargs={"method": "threshold"}`` (the grid, steps and detector of the
        measurement in the module docstring); run_grokking's own for the rest (train
        fraction 0.4, MLP 64 / 256, lr 3e-3).

    Returns
    -------
    JSON-able dict: ``config``, ``runs`` (p, weight_decay, seed, onset_step,
    train_fit_step, grokked, defect_rise_step, lead_time, weight_norm_peak_step (the
    step of the largest parameter norm), final_val_accuracy, seconds, out_dir),
    ``law`` (:meth:`LeadTimeLaw.to_dict`, or None with fewer than 2 usable runs or a
    single onset), the counts of :func:`write_lead_time_law`, ``paths``. Written to
    ``OUT/lead_time_law.json`` and ``OUT/lead_time_law.png`` (:func:`write_lead_time_law`).
    """
    for name in ("defect", "out_dir", "p", "weight_decay", "seed"):
        if name in grokking_kwargs:
            raise InputTypeError(f"lead_time_sweep: {name!r} is set by the sweep, not a keyword")
    grid = list(itertools.product([int(p) for p in moduli], [float(w) for w in weight_decays],
                                  [int(s) for s in seeds]))
    if not grid:
        raise ValueError("lead_time_sweep: moduli, weight_decays and seeds must be non-empty")
    grokking_kwargs = {"steps": 4000, "rise_kwargs": {"method": "threshold"}, **grokking_kwargs}
    out = Path(out_dir)
    config = {"study": "lead_time_law", "moduli": [int(p) for p in moduli],
              "weight_decays": [float(w) for w in weight_decays], "seeds": [int(s) for s in seeds],
              "level": float(level), "num_bootstrap": int(num_bootstrap),
              "grokking": {k: v for k, v in grokking_kwargs.items() if k != "progress"}}
    run = Run(out, config=config)
    rows = []
    for p, wd, seed in progress_bar(grid, progress=progress, desc="lead-time sweep", unit="run"):
        res = run_grokking(out / f"p{p}_wd{wd:g}_seed{seed}", p=p, weight_decay=wd, seed=seed,
                           defect=True, progress=False, **grokking_kwargs)
        rows.append(_run_row(res, p=p, weight_decay=wd, seed=seed))
        run.record_stage(f"p{p}_wd{wd:g}_seed{seed}", res.seconds)
    return write_lead_time_law(out, rows, config=config, level=level,
                               num_bootstrap=num_bootstrap)


def _rise_vs_onset(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Least-squares line ``rise_step = slope * onset_step + intercept`` over runs with
    both (steps), its Pearson ``r`` and the spread (sample standard deviation, steps) of
    the rise and of the onset; None with fewer than 3 runs or a single onset. A slope
    near 0 with a rise spread much below the onset spread means the defect rises at
    about one step whatever the onset: the lead is then ``onset - const``, and a
    log-log exponent fitted to it reflects that offset more than a power law."""
    from scipy import stats

    pts = np.array([(r["onset_step"], r["defect_rise_step"]) for r in rows
                    if r.get("onset_step") is not None and r.get("defect_rise_step") is not None],
                   dtype=float).reshape(-1, 2)
    if len(pts) < 3 or np.unique(pts[:, 0]).size < 2:
        return None
    fit = stats.linregress(pts[:, 0], pts[:, 1])
    return {"slope": float(fit.slope), "intercept": float(fit.intercept),
            "r": float(fit.rvalue), "num_points": int(len(pts)),
            "rise_sd": float(np.std(pts[:, 1], ddof=1)),
            "onset_sd": float(np.std(pts[:, 0], ddof=1))}


def write_lead_time_law(
    out_dir: str | Path,
    runs: Sequence[dict[str, Any]],
    *,
    config: dict[str, Any] | None = None,
    level: float = 0.95,
    num_bootstrap: int = 2000,
) -> dict[str, Any]:
    """Fit the lead-time law to grokking runs and write it into the run directory.

    Parameters
    ----------
    out_dir : run directory (created); gets ``lead_time_law.json`` and
        ``lead_time_law.png``, what the report's "Grokking lead time" section reads
    runs : one dict per grokking run with at least ``p`` (modulus), ``onset_step``
        (steps, None without an onset) and ``lead_time`` (steps, None without a
        defect rise), as :func:`lead_time_sweep` records them
    config : the sweep's settings, stored as ``config`` (and in ``run.json``)
    level, num_bootstrap : see :func:`fit_lead_time_law`

    Returns
    -------
    The summary written: ``config``, ``runs``, ``law`` (:meth:`LeadTimeLaw.to_dict`, or
    None with fewer than 2 distinct onsets among the usable runs), ``num_used`` (runs
    with an onset and a positive lead), ``num_runs``, ``num_grokked`` (runs with an
    onset), ``num_rise`` (of those, runs whose defect rise was found after the
    memorisation spike), ``num_rise_after_onset`` (of those, the rise at or after the
    onset: lead <= 0), ``rise_vs_onset`` (:func:`_rise_vs_onset`: does the rise move
    with the onset, as a law of the lead needs, or stay at one step?), ``paths``.
    """
    from ..surfaces.plot import save_figure

    rows = [dict(r) for r in runs]
    for i, r in enumerate(rows):
        missing = [k for k in ("p", "onset_step", "lead_time") if k not in r]
        if missing:
            raise ValueError(f"write_lead_time_law: run {i} has no {missing} (expected the "
                             f"rows of lead_time_sweep)")
    out = Path(out_dir)
    config = dict(config or {"study": "lead_time_law", "level": float(level),
                             "num_bootstrap": int(num_bootstrap)})
    run = Run(out, config=config)
    used = [r for r in rows if r["onset_step"] and r["lead_time"] is not None
            and r["lead_time"] > 0]
    law = None
    if len({r["onset_step"] for r in used}) >= 2:
        law = fit_lead_time_law([r["onset_step"] for r in used], [r["lead_time"] for r in used],
                                level=level, num_bootstrap=num_bootstrap).to_dict()
    else:
        log.warning("lead_time_sweep: %d runs with an onset and a positive lead; no law fitted",
                    len(used))
    grokked = [r for r in rows if r["onset_step"]]
    rose = [r for r in grokked if r["lead_time"] is not None]
    summary = {"config": config, "runs": rows, "law": law, "num_used": len(used),
               "num_runs": len(rows), "num_grokked": len(grokked), "num_rise": len(rose),
               "num_rise_after_onset": sum(r["lead_time"] <= 0 for r in rose),
               "rise_vs_onset": _rise_vs_onset(rose),
               "paths": {"summary": str(out / "lead_time_law.json"),
                         "figure": str(out / "lead_time_law.png")}}
    save_figure(plot_lead_time_law(summary), out / "lead_time_law.png", dpi=120)
    atomic_write_json(out / "lead_time_law.json", summary)
    run.update("summary", "lead_time_law.json")
    return summary


def onset_effect(baseline_onset: float | None, onset: float | None) -> dict[str, Any]:
    """An intervention's effect on the grokking onset (steps).

    Returns ``{"onset_change": onset - baseline (steps) or None, "onset_ratio":
    onset / baseline or None, "direction": "earlier" | "later" | "same" | "no onset"
    (the intervention never grokked) | "baseline without onset"}``.
    """
    if baseline_onset is None:
        return {"onset_change": None, "onset_ratio": None, "direction": "baseline without onset"}
    if onset is None:
        return {"onset_change": None, "onset_ratio": None, "direction": "no onset"}
    change = float(onset) - float(baseline_onset)
    return {"onset_change": change, "onset_ratio": float(onset) / float(baseline_onset),
            "direction": "earlier" if change < 0 else "later" if change > 0 else "same"}


def grokking_interventions(
    out_dir: str | Path,
    *,
    weight_decay: float = 1.0,
    weight_decay_factor: float = 3.0,
    freeze_embedding: bool = True,
    progress: bool | None = None,
    **grokking_kwargs: Any,
) -> dict[str, Any]:
    """The baseline grokking run and the survey's interventions, with their effect on onset.

    Runs (each :func:`~lossatlas.dynamics.run_grokking` with the same seed, data and
    ``grokking_kwargs``): ``baseline`` (``weight_decay``); ``stronger_weight_decay``
    (``weight_decay * weight_decay_factor``; expected: onset earlier); and, if
    ``freeze_embedding``, ``frozen_embedding`` (expected: onset later, or none).

    Returns
    -------
    JSON-able dict: ``config``; ``runs`` (name -> the run's row as in
    :func:`lead_time_sweep`); ``effects`` (name -> ``onset_change`` = intervention
    onset - baseline onset in steps, ``onset_ratio``, ``direction`` in "earlier",
    "later", "same", "no onset" (the intervention never grokked within the steps),
    "baseline without onset"). Written to ``OUT/interventions.json``.
    """
    if not weight_decay_factor > 0:
        raise ValueError(
            f"grokking_interventions: weight_decay_factor must be > 0, got {weight_decay_factor}")
    for name in ("out_dir", "freeze_embedding"):
        if name in grokking_kwargs:
            raise InputTypeError(f"grokking_interventions: {name!r} is set by the study")
    out = Path(out_dir)
    plan = {"baseline": {"weight_decay": float(weight_decay)},
            "stronger_weight_decay": {"weight_decay": float(weight_decay) * weight_decay_factor}}
    if freeze_embedding:
        plan["frozen_embedding"] = {"weight_decay": float(weight_decay), "freeze_embedding": True}
    config = {"study": "grokking_interventions", "weight_decay": float(weight_decay),
              "weight_decay_factor": float(weight_decay_factor),
              "freeze_embedding": bool(freeze_embedding), "grokking": dict(grokking_kwargs)}
    run = Run(out, config=config)
    rows = {}
    for name, extra in progress_bar(list(plan.items()), progress=progress,
                                    desc="grokking interventions", unit="run"):
        res = run_grokking(out / name, progress=False, **grokking_kwargs, **extra)
        rows[name] = _run_row(res, **extra)
        run.record_stage(name, res.seconds)
    base = rows["baseline"]["onset_step"]
    effects = {name: onset_effect(base, row["onset_step"])
               for name, row in rows.items() if name != "baseline"}
    summary = {"config": config, "runs": rows, "effects": effects,
               "paths": {"summary": str(out / "interventions.json")}}
    atomic_write_json(out / "interventions.json", summary)
    run.update("summary", "interventions.json")
    return summary
