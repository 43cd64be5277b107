"""One model permuted onto another and the result written into a run directory, as
``lossatlas align A B`` does: distances and barriers before and after, the aligned
checkpoint, and optionally the REPAIRed midpoint (Jordan et al. 2022).

>>> rep = align_pair(model_a, model_b, (x, y), "runs/align")  # doctest: +SKIP
>>> rep["loss_barrier_none"], rep["loss_barrier_aligned"]      # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["align_pair"]

METHODS = ("weight", "activation", "ot")


def align_pair(model_a: nn.Module, model_b: nn.Module, data, out_dir: str | Path, *,
               method: str = "weight", ot_solver: str = "exact", reg: float = 0.01,
               rescale: bool = False, signs: bool = False, repair: bool = False,
               points: int = 25, device=None, name: str = "b_aligned") -> dict[str, Any]:
    """Permute ``model_b`` onto ``model_a`` by ``method``: ``"weight"`` or
    ``"activation"`` matching (with ``rescale``, ReLU rescaling removed too; with
    ``signs``, weight matching over signed permutations for odd activations), or
    ``"ot"`` (optimal transport, ``ot_solver`` ``"exact"`` or ``"sinkhorn"`` with
    entropic regularisation ``reg``; MLPs, soft for unequal widths).

    Measures, before (``_none``) and after (``_aligned``), the parameter distance and
    the loss barrier on the straight path of ``points`` points over ``data`` (nats;
    weight / activation matching: every measure of `compare_alignment`); with
    ``repair`` the loss at the aligned midpoint as is (``midpoint_loss_aligned``) and
    with its channel statistics REPAIRed (``midpoint_loss_repaired``).

    Writes the aligned model's state as ``OUT/<name>.safetensors`` and the returned dict
    (with ``method``, ``aligned_checkpoint`` and the wall ``seconds``) as
    ``OUT/align.json``.
    """
    from ..checkpoints import save_state_dict
    from ..store import atomic_write_json
    from .spec import permutation_spec

    if method not in METHODS:
        raise ValueError(f"align_pair: method must be one of {', '.join(METHODS)}, "
                         f"got {method!r}")
    if signs and (method != "weight" or rescale):
        raise ValueError("align_pair: signs=True works with method='weight' and without "
                         "rescale")
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if method == "ot" or signs:
        from ..connectivity import barrier
        from .distance import parameter_distance
        from .matching import weight_matching
        from .ot import ot_align

        if signs:
            aligned = weight_matching(model_a, model_b,
                                      spec=permutation_spec(model_a, data=data),
                                      device=device, signs=True)
        else:
            aligned = ot_align(model_a, model_b, method=ot_solver, reg=reg)
        summary = {"loss_barrier_none": barrier(model_a, model_b, data, points=points,
                                                device=device),
                   "loss_barrier_aligned": barrier(model_a, aligned, data, points=points,
                                                   device=device),
                   "distance_none": parameter_distance(model_a, model_b)["distance"],
                   "distance_aligned": parameter_distance(model_a, aligned)["distance"]}
    else:
        from .distance import align, compare_alignment

        spec = permutation_spec(model_a, data=data)  # traced once, on the data's first samples
        table = compare_alignment(model_a, model_b, data, method=method, rescale=rescale,
                                  points=points, device=device, spec=spec)
        _, aligned = align(model_a, model_b, method, data, rescale, spec)
        summary = {f"{k}_{al}": float(table[k].sel(alignment=al)) for k in table.data_vars
                   for al in ("none", "aligned")}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_state_dict(aligned.state_dict(), out_dir / f"{name}.safetensors")
    if repair:
        from ..evaluate import Evaluator
        from ..space import ParamSpace
        from .repair import interpolate
        from .repair import repair as repair_midpoint

        ev = Evaluator(model_a, data, device=device, space=ParamSpace(model_a, buffers=True))
        mids = [interpolate(model_a, aligned, 0.5), repair_midpoint(model_a, aligned, 0.5, data)]
        plain, fixed = ev.evaluate_models(mids)["loss"].tolist()
        summary.update(midpoint_loss_aligned=plain, midpoint_loss_repaired=fixed)
    summary.update(method=method + ("+signs" if signs else ""), aligned_checkpoint=str(path),
                   seconds=round(time.perf_counter() - t0, 2))
    atomic_write_json(out_dir / "align.json", summary)
    return summary
