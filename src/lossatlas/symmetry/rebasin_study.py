"""The seed's re-basin experiment: do re-basined models land in their partner's basin?

Pairs of independently trained models (A, B) are mapped together (one atlas of every
pair's final models); each B is permuted onto its A by weight matching (git re-basin)
and the permuted model is projected onto the map. The seed expects it in A's basin.
The control projects B unpermuted (it sits in its own basin, so it lands in A's only
when the map puts A and B in one basin). B's whole training trajectory, permuted by
the same permutation, is projected too, with its projection error (median absolute
error of the loss at the decoded projected points, nats).

::

    pop = train_pairs("runs/pairs/train", pairs=16)          # 32 small MLPs on digits
    study = rebasin_study(pop, (X, y), "runs/pairs")
    write_rebasin_study(study, "runs/pairs")                  # RUN/rebasin.json
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ..store import atomic_write_json
from .matching import weight_matching
from .spec import permutation_spec, permute_model

__all__ = ["RebasinStudy", "pair_runs", "rebasin_study", "run_rebasin", "train_pairs",
           "write_rebasin_study"]

log = logging.getLogger(__name__)

STUDY_FILE = "rebasin.json"


def train_pairs(out_dir: str | Path, pairs: int = 16, data: Any = "digits",
                hidden: Sequence[int] = (32,), epochs: int = 6, checkpoint_every: int = 1,
                lr: float = 0.05, batch_size: int = 64, device: str | None = None,
                progress: bool = False, num_threads: int | None = 1):
    """``2 * pairs`` independently initialised MLPs (one variant ``"pair"``, seeds
    ``0 .. 2 * pairs - 1``) trained with SGD by :func:`~lossatlas.train.train_population`
    into ``out_dir``; returns their population (every checkpoint). Reruns reuse it."""
    from ..population import Population
    from ..train import train_population

    if int(pairs) < 1:
        raise ValueError(f"train_pairs: pairs must be >= 1, got {pairs}")
    train_population("mlp", data, out_dir=out_dir, seeds=range(2 * int(pairs)),
                     variants=[{"name": "pair", "optimizer": "sgd", "lr": lr,
                                "batch_size": batch_size, "init": "own"}],
                     epochs=epochs, checkpoint_every=checkpoint_every,
                     model_kwargs={"hidden": tuple(hidden)}, device=device,
                     progress=progress, num_threads=num_threads)
    return Population.open(out_dir)  # every run in out_dir, as the CLI reads it


def pair_runs(population, pairs: Sequence[tuple[str, str]] | None = None
              ) -> list[tuple[str, str]]:
    """The ``(run A, run B)`` keys (``"variant/seedS"``) of each pair: ``pairs`` checked
    against the population's runs, or by default consecutive runs (1st with 2nd, ...)."""
    runs = list(population.trajectories())
    if pairs is None:
        if len(runs) < 2 or len(runs) % 2:
            raise ValueError(f"rebasin_study: the population has {len(runs)} runs; pairing "
                             "consecutive runs needs an even number >= 2 (or pass pairs=)")
        return [(runs[k], runs[k + 1]) for k in range(0, len(runs), 2)]
    out = []
    for a, b in pairs:
        for key in (a, b):
            if key not in runs:
                raise ValueError(f"rebasin_study: pair run {key!r} is not in the population; "
                                 f"runs: {runs[:6]}{'...' if len(runs) > 6 else ''}")
        if a == b:
            raise ValueError(f"rebasin_study: pair ({a!r}, {b!r}) pairs a run with itself")
        out.append((str(a), str(b)))
    if not out:
        raise ValueError("rebasin_study: pairs is empty")
    return out


@dataclass
class RebasinStudy:
    """Results of :func:`rebasin_study`.

    Attributes
    ----------
    pairs : list of dicts, one per pair
        ``a``, ``b`` (run keys), ``a_index``, ``b_index`` (population indices of the final
        models), ``partner_basin`` (A's basin), ``rebased_basin``, ``same_basin``,
        ``control_basin`` (B unpermuted), ``control_same``, ``rebased_code``,
        ``rebased_true_loss``, ``rebased_projected_loss``, ``rebased_abs_error`` (nats),
        ``distance_before`` = ``|B - A|``, ``distance_after`` = ``|P B - A|`` (parameter
        units), ``nearest_model`` (map index of the model whose code is nearest the
        re-basined code), ``nearest_is_partner``, and ``trajectory``: ``epochs``, ``codes``, ``true_loss``,
        ``projected_loss``, ``median_abs_error`` (nats) of B's permuted checkpoints.
    atlas : Atlas
        The joint map (its population: every pair's final models, A then B per pair,
        or every checkpoint with ``members="all"``).
    seconds : float
    """

    pairs: list[dict[str, Any]]
    atlas: Any
    seconds: float = 0.0

    @property
    def in_partner_basin(self) -> int:
        """Re-basined models that land in their partner's basin."""
        return sum(bool(p["same_basin"]) for p in self.pairs)

    @property
    def nearest_is_partner(self) -> int:
        """Re-basined models whose code is nearer the partner's code than any other
        model's (on the map, whatever the basins)."""
        return sum(bool(p["nearest_is_partner"]) for p in self.pairs)

    @property
    def control_in_partner_basin(self) -> int:
        """Unpermuted B models that land in their partner's basin."""
        return sum(bool(p["control_same"]) for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (counts, median errors in nats, per-pair rows)."""
        traj = [p["trajectory"]["median_abs_error"] for p in self.pairs if p.get("trajectory")]
        return {
            "num_pairs": len(self.pairs), "in_partner_basin": self.in_partner_basin,
            "control_in_partner_basin": self.control_in_partner_basin,
            "nearest_is_partner": self.nearest_is_partner,
            "num_basins": int(len(np.asarray(self.atlas.tree_.minima).reshape(-1))),
            "rebased_median_abs_error": float(np.median([p["rebased_abs_error"]
                                                         for p in self.pairs])),
            "trajectory_median_abs_error": float(np.median(traj)) if traj else None,
            "units": "nats", "seconds": round(self.seconds, 2), "pairs": self.pairs,
        }


def _vectors(models, space) -> torch.Tensor:
    return torch.stack([space.flatten(m) for m in models]).float()


def rebasin_study(
    population,
    data,
    out_dir: str | Path,
    pairs: Sequence[tuple[str, str]] | None = None,
    members: Literal["final", "all"] = "final",
    atlas=None,
    method: str = "ae",
    dim: int = 2,
    embed_kwargs: Mapping[str, Any] | None = None,
    resolution: int = 24,
    budget: int = 1500,
    threshold: float | str = 0.1,
    trajectories: bool = True,
    include: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RebasinStudy:
    """The seed's re-basin experiment on pairs of independently trained models.

    Parameters
    ----------
    population : Population
        Every checkpoint of the runs (``population.trajectories()``); the final checkpoint
        of each run is the pair's model.
    data : (X, y) tensors, Dataset or DataLoader
        The loss is measured on it; its first samples trace the permutation spec.
    out_dir : path
        Run directory of the joint map (created).
    pairs : [(run A, run B)] keys as in ``population.trajectories()``; default
        consecutive runs (see :func:`pair_runs`).
    members : ``"final"`` (default, as the seed: the map holds every pair's final models)
        or ``"all"`` (every checkpoint of the paired runs).
    atlas : Atlas, optional
        A prebuilt map with a merge tree (``topology()`` called) whose population is
        what ``members`` selects; else one is fitted in ``out_dir`` with ``method``,
        ``dim``, ``embed_kwargs`` (``Atlas.embed``), ``resolution``, ``budget``
        (``Atlas.field``) and ``threshold`` (``Atlas.topology``).
    trajectories : also project B's permuted training checkpoints.
    include : fit the re-basined models and the permuted trajectories into the map too
        (``Atlas.embed(include=...)``: not members, no part in basins); default the
        seed's protocol, projection onto a map of the models alone.
    seed, device : of the map's fit; where losses are measured.
    progress : a tqdm bar over pairs.

    Returns
    -------
    RebasinStudy (basins of the re-basined models vs their partners', errors in nats).
    The overlays are stored as ``OUT/overlays/rebasin.json``, ``rebasin-control.json``
    and ``rebasin-trajectories.json``.
    """
    from ..atlas import Atlas

    t0 = time.perf_counter()
    if members not in ("final", "all"):
        raise ValueError(f"rebasin_study: members must be 'final' or 'all', got {members!r}")
    keys = pair_runs(population, pairs)
    runs = population.trajectories()
    used = [k for pair in keys for k in pair]
    map_idx = ([runs[k][-1] for k in used] if members == "final"
               else [i for k in used for i in runs[k]])
    position = {i: n for n, i in enumerate(map_idx)}
    if atlas is not None and include:
        raise ValueError("rebasin_study: include=True fits its own map; give atlas= or "
                         "include, not both")
    if atlas is not None and not hasattr(atlas, "tree_"):
        raise ValueError("rebasin_study: the atlas given has no merge tree; call "
                         "atlas.topology() first")
    if atlas is not None and len(atlas.population) != len(map_idx):
        raise ValueError(f"rebasin_study: the atlas given maps {len(atlas.population)} models; "
                         f"members={members!r} of the pairs are {len(map_idx)}")
    space = population.space
    spec = permutation_spec(population.model(runs[keys[0][0]][-1]), data=data)
    rebased, control, partners, traj_pts, traj_of, rows = [], [], [], [], [], []
    for a, b in tqdm(keys, desc="re-basin", unit="pair", disable=not progress):
        ia, ib = runs[a][-1], runs[b][-1]
        model_a, model_b = population.model(ia), population.model(ib)
        aligned, perms = weight_matching(model_a, model_b, spec=spec, return_perms=True)
        rebased.append(aligned)
        control.append(model_b)
        partners.append(position[ia])
        w_a, w_b, w_p = (space.flatten(m).float() for m in (model_a, model_b, aligned))
        rows.append({"a": a, "b": b, "a_index": int(ia), "b_index": int(ib),
                     "distance_before": float((w_b - w_a).norm()),
                     "distance_after": float((w_p - w_a).norm())})
        if trajectories:
            for i in runs[b]:
                traj_pts.append(permute_model(population.model(i), spec, perms))
                traj_of.append((len(rows) - 1, population.labels[i].get("epoch", i)))
    rebased_pts = _vectors(rebased, space)
    traj = _vectors(traj_pts, space) if traj_pts else None
    if atlas is None:
        atlas = Atlas(population.subset(map_idx), data, out_dir, seed=seed, device=device,
                      overwrite=True)
        fit_too = ({"rebasin": rebased_pts, **({"rebasin-trajectories": traj}
                                               if traj is not None else {})}
                   if include else None)
        atlas.embed(method, dim, include=fit_too, **dict(embed_kwargs or {}))
        atlas.field(resolution=resolution, budget=budget)
        atlas.topology(threshold=threshold)
    ov = atlas.overlay(rebased_pts, "rebasin", partners=partners,
                       labels=[f"{b} onto {a}" for a, b in keys])
    ov_c = atlas.overlay(_vectors(control, space), "rebasin-control", partners=partners,
                         labels=[f"{b} (unpermuted)" for _, b in keys])
    codes = atlas.codes_.double()
    nearest = torch.cdist(torch.tensor(ov["codes"], dtype=torch.float64), codes).argmin(1)
    for k, row in enumerate(rows):
        row.update(nearest_model=int(nearest[k]),
                   nearest_is_partner=int(nearest[k]) == partners[k],
                   partner_basin=ov["partner_basin"][k], rebased_basin=ov["basin"][k],
                   same_basin=bool(ov["same_basin_as_partner"][k]),
                   control_basin=ov_c["basin"][k],
                   control_same=bool(ov_c["same_basin_as_partner"][k]),
                   rebased_code=ov["codes"][k], rebased_true_loss=ov["true_loss"][k],
                   rebased_projected_loss=ov["projected_loss"][k],
                   rebased_abs_error=abs(ov["projected_loss"][k] - ov["true_loss"][k]))
    if traj is not None:
        ov_t = atlas.overlay(traj, "rebasin-trajectories",
                             labels=[f"{rows[k]['b']} epoch {e} (permuted)"
                                     for k, e in traj_of])
        for k, row in enumerate(rows):
            sel = [n for n, (j, _) in enumerate(traj_of) if j == k]
            true = np.asarray([ov_t["true_loss"][n] for n in sel])
            proj = np.asarray([ov_t["projected_loss"][n] for n in sel])
            row["trajectory"] = {
                "epochs": [traj_of[n][1] for n in sel],
                "codes": [ov_t["codes"][n] for n in sel],
                "true_loss": true.tolist(), "projected_loss": proj.tolist(),
                "median_abs_error": float(np.median(np.abs(proj - true)))}
    log.info("rebasin_study: %d of %d re-basined models in the partner's basin",
             sum(r["same_basin"] for r in rows), len(rows))
    return RebasinStudy(rows, atlas, time.perf_counter() - t0)


def write_rebasin_study(study: RebasinStudy, run_dir: str | Path) -> Path:
    """Write ``RUN/rebasin.json``: :meth:`RebasinStudy.to_dict` and the map the report
    draws (field samples and log10 loss, model codes, labels and basins). Returns the
    file's path."""
    atlas = study.atlas
    out = study.to_dict()
    if atlas.codes_.shape[1] >= 2:
        f = atlas.field_
        out["map"] = {"samples": f.coords[:, :2].tolist(),
                      "log10_loss": f.values["log10_loss"].tolist(),
                      "box_lo": f.lo[:2].tolist(), "box_hi": f.hi[:2].tolist(),
                      "models": atlas.codes_[:, :2].tolist(),
                      "labels": [f"{lab.get('variant', '')}/seed{lab.get('seed', '')} "
                                 f"epoch {lab.get('epoch', '')}"
                                 for lab in atlas.population.labels],
                      "model_basin": [int(b) for b in atlas.basins_]}
    path = Path(run_dir) / STUDY_FILE
    atomic_write_json(path, out)
    return path


def run_rebasin(out_dir: str | Path, pairs: int = 16, hidden: Sequence[int] = (32,),
                epochs: int = 6, samples: int = 1000, include: bool = False, seed: int = 0,
                device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """The re-basin experiment as a study: ``2 * pairs`` MLPs trained on sklearn digits
    (:func:`train_pairs` into ``OUT/train``), :func:`rebasin_study` on the loss of the
    first ``samples`` training samples, written to ``OUT/rebasin.json``
    (:func:`write_rebasin_study`). Returns :meth:`RebasinStudy.to_dict` (counts, errors
    in nats) with ``run`` (the file written)."""
    from ..data import create

    pop = train_pairs(Path(out_dir) / "train", pairs=pairs, hidden=hidden, epochs=epochs,
                      device=device, progress=progress)
    splits = create("digits")
    xy = (splits.x_train[:samples], splits.y_train[:samples])
    study = rebasin_study(pop, xy, out_dir, include=include, seed=seed, device=device,
                          progress=progress)
    path = write_rebasin_study(study, out_dir)
    return {**study.to_dict(), "run": str(path)}
