"""CLI verb of the survey's studies: ``lossatlas study eos|double-descent|induction-heads|
batch-size|grokking-law|rebasin``, each one library call writing a run directory."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ._common import (
    Json,
    UsageError,
    Verbose,
    _check_out,
    _finish,
    _floats,
    _handle,
    _matrix_table,
    _number,
    _progress,
    _setup_logging,
)

__all__ = ["STUDIES", "study"]

#: The study names ``lossatlas study`` accepts.
STUDIES = ("eos", "double-descent", "induction-heads", "batch-size", "grokking-law",
           "rebasin")


def _ints(text: str, option: str) -> tuple[int, ...]:
    """Comma-separated integers >= 1 of ``option`` (one line naming it otherwise)."""
    values = _floats(text, option)
    if any(v != int(v) or v < 1 for v in values):
        raise UsageError(f"{option} must be integers >= 1, got {text!r}")
    return tuple(int(v) for v in values)


def _rows_table(title: str, rows: list[dict], names: list[str], columns: tuple[str, ...]):
    """Rows of a study's sweep (named ``names``) as a printable table of ``columns`` (those
    some row has as a number; a missing or None value shows as nan)."""
    def number(v) -> float:
        return float(v) if isinstance(v, (int, float)) else float("nan")

    cols = [c for c in columns if any(isinstance(r.get(c), (int, float)) for r in rows)]
    return _matrix_table(title, names, [[number(r.get(c)) for c in cols] for r in rows], cols)


@_handle
def study(
    name: str = typer.Argument(..., help=" | ".join(STUDIES)),
    out_dir: Path = typer.Option(None, "--out", help="Run directory (default runs/NAME).",
                                 callback=_check_out),
    lrs: str = typer.Option("0.1,0.2,0.4", help="eos: comma-separated learning rates."),
    widths: str = typer.Option("1,2,4,8,12,16,24,32,48,64,128,256,512",
                               help="double-descent: comma-separated MLP widths."),
    surfaces: bool = typer.Option(False, "--surfaces", help="double-descent: also a "
                                  "filter-normalised surface around each model."),
    preset: str = typer.Option("default", "--preset", help="induction-heads: default "
                               "(minutes on a CPU) | tiny (seconds)."),
    batch_sizes: str = typer.Option("8,32,128,512", "--batch-sizes",
                                    help="batch-size: comma-separated mini-batch sizes."),
    moduli: str = typer.Option("47,53,59", "--moduli",
                               help="grokking-law: comma-separated moduli p."),
    weight_decays: str = typer.Option("0.7,1.0,1.5", "--weight-decays",
                                      help="grokking-law: comma-separated weight decays."),
    pairs: int = typer.Option(16, "--pairs", help="rebasin: pairs of independently "
                              "trained MLPs.", callback=_number(minimum=1)),
    steps: int = typer.Option(None, help="Training steps (default: the study's own).",
                              callback=_number(minimum=1)),
    label_noise: float = typer.Option(0.2, help="double-descent: fraction of flipped labels.",
                                      callback=_number("nonnegative")),
    seed: int = typer.Option(0, help="Seed."),
    as_json: bool = Json, verbose: bool = Verbose,
):
    """Built-in studies of the survey: the edge of stability, double descent (optionally
    with surfaces), the induction-head stages of a transformer (LLC), batch size vs
    flatness, the grokking lead-time law over moduli and weight decays, and the seed's
    re-basin experiment (pairs of MLPs on one map: does a re-basined model land in its
    partner's basin?)."""
    from .. import studies

    _setup_logging(verbose)
    t0 = time.perf_counter()
    out_dir = out_dir or Path("runs") / name
    kwargs = {"steps": steps} if steps else {}
    tables = []
    if name == "eos":
        res = studies.eos_study(out_dir, lrs=_floats(lrs, "--lrs"), seed=seed, **kwargs)
    elif name == "double-descent":
        res = studies.run_double_descent(out_dir, widths=_ints(widths, "--widths"),
                                         label_noise=label_noise, seeds=(seed,),
                                         surfaces=surfaces, progress=_progress(as_json),
                                         **kwargs)
    elif name == "induction-heads":
        if preset not in studies.INDUCTION_CONFIGS:
            raise UsageError(f"--preset must be one of {', '.join(studies.INDUCTION_CONFIGS)}"
                             f", got {preset!r}")
        res = studies.run_induction_heads(out_dir, preset, seed=seed,
                                          progress=_progress(as_json), **kwargs)
    elif name == "batch-size":
        res = studies.run_batch_size(out_dir, batch_sizes=_ints(batch_sizes, "--batch-sizes"),
                                     seeds=(seed,), progress=_progress(as_json))
        tables.append(_rows_table("batch size vs flatness", res["models"],
                                  [f"batch {r['batch_size']} seed {r['seed']}"
                                   for r in res["models"]],
                                  ("lambda_max", "sharpness", "train_loss", "test_loss",
                                   "loss_gap", "error_gap")))
    elif name == "grokking-law":
        from ..dynamics import lead_time_sweep

        wds = _floats(weight_decays, "--weight-decays")
        if any(not w >= 0 for w in wds):
            raise UsageError(f"--weight-decays must be numbers >= 0, got {weight_decays!r}")
        res = lead_time_sweep(out_dir, moduli=_ints(moduli, "--moduli"), weight_decays=wds,
                              seeds=(seed,), progress=_progress(as_json), **kwargs)
        law = res.get("law") or {}
        res = {**res, **{f"law_{k}": v for k, v in law.items() if k not in ("onsets", "leads")}}
        tables.append(_rows_table("grokking runs (steps)", res["runs"],
                                  [f"p {r['p']} wd {r['weight_decay']:g} seed {r['seed']}"
                                   for r in res["runs"]],
                                  ("p", "weight_decay", "onset_step", "defect_rise_step",
                                   "lead_time", "final_val_accuracy")))
    elif name == "rebasin":
        from ..symmetry.rebasin_study import run_rebasin

        res = run_rebasin(out_dir, pairs=pairs, seed=seed, progress=_progress(as_json))
    else:
        raise UsageError(f"study: expected one of {', '.join(STUDIES)}, got {name!r}")
    summary = {k: v for k, v in res.items() if not isinstance(v, dict)
               and (not isinstance(v, list) or k.startswith("law_"))}
    summary.update(run=str(out_dir), seconds=round(time.perf_counter() - t0, 2))
    if as_json:
        summary = {**res, **summary}
    _finish(summary, as_json, f"study {name}", tables)
