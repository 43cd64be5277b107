"""CLI verbs of dynamics: ``lossatlas dynamics RUN`` and ``lossatlas branches POPULATION``."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ._common import (
    _DATA_ARG,
    _MODEL_ARG,
    _RUN_MODEL,
    _TRUST_RUN,
    Json,
    UsageError,
    Verbose,
    _finish,
    _handle,
    _load_data,
    _model_factory,
    _number,
    _setup_logging,
)

__all__ = ["dynamics", "branches"]


@_handle
def dynamics(
    run_dir: Path = typer.Argument(..., metavar="RUN",
                                   help="A train run or a Recorder run directory."),
    defect: bool = typer.Option(True, help="Commutator defect at every checkpoint."),
    stages: bool = typer.Option(False, help="LLC at every checkpoint and its stages (slow)."),
    max_checkpoints: int = typer.Option(100, help="Checkpoints per run used at most.",
                                        callback=_number(minimum=2)),
    trust_run: bool = _TRUST_RUN,
    as_json: bool = Json, verbose: bool = Verbose,
):
    """Phase transitions along training: change points of every metric, grokking onset,
    commutator defect and its lead time, representation similarity, LLC stages."""
    from ..dynamics import dynamics_report

    _setup_logging(verbose)
    if max_checkpoints < 2:
        raise UsageError(f"--max-checkpoints must be >= 2, got {max_checkpoints}")
    t0 = time.perf_counter()
    rep = dynamics_report(run_dir, defect=defect, stages=stages, max_checkpoints=max_checkpoints,
                          trust_run=trust_run)
    summary = {"run": str(run_dir), "runs": len(rep.get("runs", {})),
               "store": str(Path(run_dir) / "dynamics.json")}
    for key, entry in rep.get("runs", {}).items():
        n = sum(len(v) for v in (entry.get("transitions") or {}).values())
        summary[f"{key}: transitions"] = n
        onset = entry.get("onset") or {}
        if isinstance(onset, dict) and onset.get("grokked"):
            summary[f"{key}: grokking onset (step)"] = onset.get("onset_step")
        if entry.get("defect_lead") is not None:
            summary[f"{key}: defect lead (steps)"] = entry["defect_lead"]
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    _finish(summary, as_json, "dynamics")


@_handle
def branches(
    population: Path = typer.Argument(..., help="A train run, or a folder / glob of "
                                      "checkpoints (of --model, or the model a train.json "
                                      "beside them names)."),
    metric: str = typer.Option("disagreement", help="disagreement | cka"),
    barrier_threshold: float = typer.Option(0.1, help="Models joined below this loss "
                                            "barrier (nats) share a basin.",
                                            callback=_number("nonnegative")),
    branch_threshold: float = typer.Option(0.1, help="Functional distance that separates "
                                           "branches.", callback=_number("nonnegative")),
    data: str = typer.Option(None, "--data", help="Dataset (default: the run's own, from "
                             "train.json)."),
    data_arg: list[str] = _DATA_ARG, model: str = _RUN_MODEL,
    model_arg: list[str] = _MODEL_ARG, trust_run: bool = _TRUST_RUN,
    as_json: bool = Json, verbose: bool = Verbose,
):
    """Algorithmic branches: models in one basin whose functions differ."""
    from ..dynamics import branches_report

    _setup_logging(verbose)
    if metric not in ("disagreement", "cka"):
        raise UsageError(f"--metric must be 'disagreement' or 'cka', got {metric!r}")
    t0 = time.perf_counter()
    splits = _load_data(data, data_arg, "test", None)[0] if data else None
    # --model checked here (naming the options); the population reads its spec + kwargs
    factory_kwargs = _model_factory(model, model_arg, splits)[1] if model else None
    rep = branches_report(str(population), data=splits, metric=metric,
                          barrier_threshold=barrier_threshold, branch_threshold=branch_threshold,
                          trust_run=trust_run, factory=model, factory_kwargs=factory_kwargs)
    nb = rep.get("num_branches", {})
    summary = {"models": len(rep.get("models", [])),
               "basins": len(nb) if isinstance(nb, dict) else None,
               "branches": sum(nb.values()) if isinstance(nb, dict) else nb,
               "store": str(Path(population) / "branches.json"),
               "seconds": round(time.perf_counter() - t0, 2)}
    _finish(summary, as_json, "branches")
