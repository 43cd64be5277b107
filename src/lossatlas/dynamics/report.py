"""Reports for the CLI: dynamics of a recorded run, branches of a population.

``dynamics_report(run_dir)`` reads a :class:`~lossatlas.recorder.Recorder` run
(``metrics.jsonl`` + ``checkpoints/``, e.g. from :func:`run_grokking`) or a
:func:`~lossatlas.train.train_population` run (``metrics.json`` + ``checkpoints/`` +
``train.json``), and writes ``RUN/dynamics.json`` and PNG figures into ``RUN/``.

``branches_report(population, data)`` finds algorithmic branches among a population's
final models and writes ``branches.json`` where asked.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..store import atomic_write_json, jsonable
from .transitions import detect_all, grokking_onset, lead_time

__all__ = ["branches_report", "dynamics_report"]

log = logging.getLogger(__name__)

_LABELS = {"step", "epoch", "variant", "seed", "run", "seconds"}  # seconds: wall time, not a behaviour


def _metric_rows(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Metric rows per run key (``"{variant}/seed{seed}"``, or ``"run"``)."""
    from ..recorder import read_jsonl

    runs: dict[str, list[dict[str, Any]]] = {}
    jsonl = run_dir / "metrics.jsonl"
    if jsonl.is_file():
        for row in read_jsonl(jsonl):
            key = (f"{row['variant']}/seed{row.get('seed', 0)}" if "variant" in row else "run")
            runs.setdefault(key, []).append(row)
    elif (run_dir / "metrics.json").is_file():
        data = json.loads((run_dir / "metrics.json").read_text())
        for rec in data.get("runs", {}).values():
            key = f"{rec.get('variant')}/seed{rec.get('seed', 0)}"
            runs[key] = list(rec.get("epochs", []))
    else:
        raise FileNotFoundError(
            f"dynamics_report: {run_dir} holds neither metrics.jsonl (Recorder run) nor "
            "metrics.json (train_population run)"
        )
    return runs


def _series(rows: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rows = sorted((r for r in rows if isinstance(r.get("step"), (int, float))),
                  key=lambda r: r["step"])
    steps = np.array([r["step"] for r in rows], dtype=float)
    names = [k for k in rows[0] if k not in _LABELS] if rows else []
    metrics = {}
    for k in names:
        vals = [r.get(k) for r in rows]
        if all(isinstance(v, (int, float)) or v is None for v in vals):
            metrics[k] = np.array([np.nan if v is None else v for v in vals], dtype=float)
    return steps, metrics


def _pick(metrics: Mapping[str, np.ndarray], *names: str) -> np.ndarray | None:
    for n in names:
        if n in metrics:
            return metrics[n]
    return None


def _open_population(path: Path, factory: Any = None,
                     factory_kwargs: Mapping[str, Any] | None = None, trust_run: bool = False,
                     who: str = "branches_report") -> tuple[Any, dict[str, Any] | None]:
    """The population at ``path`` (read by :meth:`Population.open`, which decides train
    run / checkpoint folder / glob / file) and the ``train.json`` beside it (dict, or None).

    Without ``factory``, a checkpoint folder holding a ``train.json`` is matched against
    the model that file names (checked like a run's: see ``check_run_factory``).
    """
    from ..population import TRAIN_MANIFEST, Population, check_run_factory, source_kind

    manifest = path / TRAIN_MANIFEST
    info = json.loads(manifest.read_text()) if manifest.is_file() else None
    if (factory is None and info is not None and info.get("model") is not None
            and source_kind(path, who) != "run"):
        check_run_factory(info["model"], manifest, "model", trust_run=trust_run)
        factory = info["model"]
        factory_kwargs = {**(info.get("model_kwargs") or {}), **(factory_kwargs or {})}
    return Population.open(path, factory, factory_kwargs, trust_run=trust_run), info


def _run_data(path: Path, info: Mapping[str, Any], trust_run: bool = False) -> Any:
    """The dataset splits the ``train.json`` of ``path`` names (``info``), or None."""
    from ..population import TRAIN_MANIFEST, check_run_factory

    if not isinstance(info.get("data"), str):
        return None
    from ..data import create

    check_run_factory(info["data"], path / TRAIN_MANIFEST, "data", trust_run=trust_run)
    return create(info["data"], **(info.get("data_kwargs") or {}))


def _load_population_and_data(run_dir: Path, data: Any,
                              trust_run: bool = False) -> tuple[Any, Any]:
    """The run's checkpoints as a Population and its dataset splits (or None, ``data``:
    no ``train.json`` to rebuild the models with, or checkpoints that do not load)."""
    from ..population import TRAIN_MANIFEST, UntrustedRunError

    if not (run_dir / TRAIN_MANIFEST).is_file():
        return None, data
    try:
        pop, info = _open_population(run_dir, trust_run=trust_run, who="dynamics_report")
    except UntrustedRunError:
        raise
    except Exception as err:  # a local factory, a missing package: report without them
        log.warning("dynamics_report: cannot load checkpoints of %s (%s)", run_dir, err)
        return None, data
    if data is None and info is not None:
        data = _run_data(run_dir, info, trust_run)
    return pop, data


def _splits(data: Any) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(train (x, y), held-out x) from DatasetSplits or an (X, y) pair."""
    if hasattr(data, "x_train"):
        return (data.x_train, data.y_train), data.x_test
    from ..batches import as_tensor_data

    td = as_tensor_data(data, who="dynamics_report: data")
    return (td.x, td.y), td.x


def dynamics_report(
    run_dir: str | os.PathLike,
    data: Any = None,
    defect: bool = True,
    representation: bool = True,
    stages: bool = False,
    defect_kwargs: Mapping[str, Any] | None = None,
    llc_kwargs: Mapping[str, Any] | None = None,
    max_checkpoints: int = 100,
    figures: bool = True,
    trust_run: bool = False,
) -> dict[str, Any]:
    """Transitions, grokking onset, commutator defect and LLC stages of a recorded run.

    Parameters
    ----------
    run_dir : a Recorder run or a train_population run directory
    data : DatasetSplits or (X, y), optional; default the dataset named in
        ``train.json`` (needed for the checkpoint-based parts)
    defect : commutator defect at every checkpoint (train split) and its lead time
        over the grokking onset
    representation : linear CKA between consecutive checkpoints' outputs on held-out
        inputs (``consecutive_cka``, at the later checkpoint; 1 at the first)
    stages : LLC at every checkpoint (``lossatlas.curvature.llc``; slow) and its stage
        boundaries
    defect_kwargs, llc_kwargs : passed to the estimators
    max_checkpoints : checkpoints per run used at most (evenly thinned)
    figures : write ``dynamics_<run>.png`` (metrics) and ``checkpoints_<run>.png``
    trust_run : let ``train.json`` name a ``"pkg.mod:fn"`` model or data factory to
        import and call (else only registered names: see ``Population.from_run``)

    Returns
    -------
    dict (also written to ``RUN/dynamics.json``): per run ``metrics`` (names),
    ``transitions`` (per metric), ``onset`` (when accuracies are recorded),
    ``checkpoint_steps``, ``defect``, ``defect_lead``, ``consecutive_cka``, ``stages``,
    and ``figures`` (paths).
    """
    from .branches import linear_cka, representations
    from .commutator import defect_along
    from .plot import plot_transitions, save_png
    from .stages import llc_stages

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"dynamics_report: run directory {run_dir} not found")
    rows = _metric_rows(run_dir)
    pop, data = _load_population_and_data(run_dir, data, trust_run)
    trajectories = pop.trajectories() if pop is not None else {}
    if list(rows) == ["run"] and len(trajectories) == 1:  # unlabelled Recorder metrics
        rows = {next(iter(trajectories)): rows["run"]}
    report: dict[str, Any] = {"run": str(run_dir), "runs": {}}
    for key, run_rows in rows.items():
        steps, metrics = _series(run_rows)
        entry: dict[str, Any] = {"metrics": sorted(metrics), "num_rows": int(steps.size)}
        entry["transitions"] = detect_all(metrics, steps=steps) if steps.size else {}
        val = _pick(metrics, "val_accuracy", "test_accuracy")
        tr = _pick(metrics, "train_accuracy")
        onset = None
        if val is not None and steps.size >= 4:
            keep = np.isfinite(val)
            onset = grokking_onset(steps[keep], val[keep],
                                   None if tr is None else tr[keep])
            entry["onset"] = onset
        figs = []
        if figures and metrics:
            shown = {k: v for k, v in metrics.items() if k in (
                "train_accuracy", "val_accuracy", "test_accuracy", "train_loss", "val_loss",
                "test_loss", "weight_norm")} or metrics
            path = run_dir / f"dynamics_{key.replace('/', '_')}.png"
            save_png(plot_transitions(steps, shown, entry["transitions"],
                                      onset=None if onset is None else onset["onset_step"]),
                     path)
            figs.append(str(path))
        idx = trajectories.get(key)
        if idx is None and len(trajectories) == 1:
            idx = next(iter(trajectories.values()))
        if idx and data is not None:
            if len(idx) > max_checkpoints:
                keep_i = np.unique(np.linspace(0, len(idx) - 1, max_checkpoints).round().astype(int))
                idx = [idx[i] for i in keep_i]
            labels = pop.labels
            ck_steps = np.array([float(labels[i].get("step", labels[i].get("epoch", n)))
                                 for n, i in enumerate(idx)])
            entry["checkpoint_steps"] = ck_steps.tolist()
            train, x_held = _splits(data)
            ck_series: dict[str, np.ndarray] = {}
            template = pop.model(idx[0])
            if defect:
                states = [pop.space.unflatten(pop.vector(i)) for i in idx]
                dk = {"num_pairs": 8, "batch_size": 64, **(defect_kwargs or {})}
                if "eta" not in dk:
                    dk["eta"] = float((labels[idx[0]].get("hparams") or {}).get("lr", 1e-3))
                d = defect_along(template, states, train, **dk)
                entry["defect"] = d.tolist()
                entry["defect_kwargs"] = dk
                ck_series["defect"] = d
                if onset is not None and onset.get("onset_step") is not None:
                    entry["defect_lead"] = lead_time(
                        ck_steps, d, onset["onset_step"], onset.get("train_fit_step"))
            models = None
            if representation or stages:
                models = [pop.model(i) for i in idx]
            if representation:
                x = x_held[:1000]
                outs = [representations(m, x)["output"] for m in models]
                cka = np.ones(len(outs))
                for j in range(1, len(outs)):
                    cka[j] = linear_cka(outs[j - 1], outs[j])
                entry["consecutive_cka"] = cka.tolist()
                ck_series["consecutive_cka"] = cka
            if stages:
                res = llc_stages(ck_steps, models, train, **dict(llc_kwargs or {}))
                entry["stages"] = res.to_dict()
                ck_series["llc"] = res.values
            if ck_series:
                entry["checkpoint_transitions"] = detect_all(
                    {k: v for k, v in ck_series.items() if k != "llc"}, steps=ck_steps,
                    min_size=2)
                if figures:
                    path = run_dir / f"checkpoints_{key.replace('/', '_')}.png"
                    save_png(plot_transitions(
                        ck_steps, ck_series, entry["checkpoint_transitions"],
                        onset=None if onset is None else onset["onset_step"]), path)
                    figs.append(str(path))
        entry["figures"] = figs
        report["runs"][key] = entry
    report = jsonable(report)  # the returned dict is the JSON written
    atomic_write_json(run_dir / "dynamics.json", report)
    return report


def branches_report(
    population: Any,
    data: Any = None,
    basins: Sequence[int] | None = None,
    barrier_matrix: Any = None,
    barrier_threshold: float = 0.1,
    compute_barriers: bool = True,
    metric: str = "disagreement",
    layers: Sequence[str] | None = None,
    branch_threshold: float = 0.1,
    final_only: bool = True,
    out_dir: str | os.PathLike | None = None,
    trust_run: bool = False,
    factory: Any = None,
    factory_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Algorithmic branches of a population's models, as a JSON-ready dict.

    Parameters
    ----------
    population : Population, or a path read by :meth:`Population.open`: a
        train_population run, a folder of checkpoints (matched against ``factory``, else
        the model a ``train.json`` in it names), a glob pattern or a checkpoint file
    data : DatasetSplits, (X, y) held-out pair, or dataset name; default the dataset
        of the run's ``train.json``. Held-out inputs measure function; barriers use
        the train split when there is one.
    basins, barrier_matrix, barrier_threshold : see :func:`find_branches`; with
        neither and ``compute_barriers``, the loss-barrier matrix between the models
        (``lossatlas.connectivity.barrier_matrix``, nats) is computed
    metric, layers, branch_threshold : see :func:`find_branches`
    final_only : use the last checkpoint of every run only
    out_dir : write ``branches.json`` there (default: the population directory, if given)
    trust_run : let the run's ``train.json`` name a ``"pkg.mod:fn"`` model or data
        factory to import and call (else only registered names)
    factory : the model the checkpoints are matched against (callable, spec or
        registered name); default the one the run's ``train.json`` names
    factory_kwargs : its arguments (for the run's own factory they update the run's
        ``model_kwargs``)

    Returns
    -------
    dict: ``models`` (labels), ``branch``, ``basin``, ``num_branches``,
    ``separation``, ``distances``, ``barrier_matrix`` (if computed or given).
    """
    from .branches import find_branches

    where = None
    if isinstance(population, (str, os.PathLike)):
        where = Path(population)
        population, info = _open_population(where, factory, factory_kwargs, trust_run)
        if data is None and info is not None:
            data = _run_data(where, info, trust_run)
    if data is None:
        raise ValueError("branches_report: give data= (held-out inputs) for this population")
    if isinstance(data, str):
        from ..data import create

        data = create(data)
    if final_only:
        population = population.final()
    models = [population.model(i) for i in range(len(population))]
    if hasattr(data, "x_test"):
        held, train = (data.x_test, data.y_test), (data.x_train, data.y_train)
    else:
        held = train = data
    bm = barrier_matrix
    if basins is None and bm is None and compute_barriers and len(models) > 1:
        from ..connectivity import barrier_matrix as compute

        bm = compute(models, train)
    res = find_branches(models, held, basins=basins, barrier_matrix=bm,
                        barrier_threshold=barrier_threshold, layers=layers, metric=metric,
                        branch_threshold=branch_threshold)
    out = {"models": population.labels, **res.to_dict()}
    if bm is not None:
        out["barrier_matrix"] = np.asarray(getattr(bm, "values", bm), dtype=float).tolist()
    out = jsonable(out)  # the returned dict is the JSON written
    target = Path(out_dir) if out_dir is not None else where
    if target is not None:
        atomic_write_json(target / "branches.json", out)
    return out
