"""Benchmark: the atlas of small populations on the CPU against ``surface random``.

A new user's case (issue #17): 3 variants x 4 checkpoints of a small CNN with
BatchNorm and of a small transformer (``tests/zoo.py``: ``bn_cnn`` 1,818 parameters on
scikit-learn's digits, 1,797 images; ``transformer`` 2,612 parameters on 512 synthetic
token sequences), trained here and written to disk as state dicts, read back with
``Population.from_checkpoints``. Then, in one process and on the same model and data:

- ``surface random``'s library path (``random_slice`` + ``slice_field`` into a run) on
  the first checkpoint: points per second;
- the atlas as ``lossatlas atlas`` runs it (embed with the autoencoder, refined field,
  topology, faithfulness, the uncorrected check, figures), stage by stage: the field
  stage's points per second, its ratio to ``surface random``'s, and the end-to-end
  time (checkpoint loading included, training not).

``--profile`` adds a cProfile of the field stage (top functions by own time).
On a shared machine absolute seconds are inflated by the others' load: the ratio is
measured in one process, minutes apart at most.

Usage::

    OMP_NUM_THREADS=2 python bench/atlas_small.py                 # both families
    OMP_NUM_THREADS=2 python bench/atlas_small.py --family bn_cnn --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import zoo  # noqa: E402  (tests/zoo.py: the model families)

from lossatlas import Atlas, Evaluator, Population, Run  # noqa: E402
from lossatlas.atlas_plot import (  # noqa: E402
    plot_atlas_persistence,
    plot_atlas_tree,
    plot_landscape,
)
from lossatlas.plotting import save_figure  # noqa: E402
from lossatlas.surfaces import random_slice  # noqa: E402
from lossatlas.surfaces.slices import slice_field  # noqa: E402


def surface_random(model: torch.nn.Module, data, out: Path, resolution: int, bn: str | None
                   ) -> dict:
    """``surface random``'s library path: Evaluator, 2-D random slice, stored field."""
    t0, c0 = time.perf_counter(), time.process_time()
    ev = Evaluator(model, data, bn=bn)
    sl = random_slice(model, dim=2, resolution=resolution, span=1.0, space=ev.space)
    t1 = time.perf_counter()
    ds = slice_field(ev, sl, Run(out), "random2d")
    t2, c2 = time.perf_counter(), time.process_time()
    n = int(ds["loss"].size)
    return {"points": n, "seconds": t2 - t0, "eval_seconds": t2 - t1, "cpu_s": c2 - c0,
            "points_per_s": n / (t2 - t0), "points_per_cpu_s": n / (c2 - c0),
            "backend": ev.backend, "chunk_size": ev.chunk_size, "batch_size": ev.batch_size}


def atlas(pop: Population, data, out: Path, resolution: int, budget: int,
          profile: bool) -> tuple[dict, str]:
    """The stages of ``lossatlas atlas`` (as its ``build_atlas``) with their seconds."""
    stages: dict[str, float] = {}
    cpu: dict[str, float] = {}
    t, c = time.perf_counter(), time.process_time()

    def lap(name: str) -> None:
        nonlocal t, c
        now, now_c = time.perf_counter(), time.process_time()
        stages[name], cpu[name] = now - t, now_c - c
        t, c = now, now_c

    a = Atlas(pop, data, out, overwrite=True)
    lap("setup")
    a.embed("ae", dim=2)
    lap("embed")
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    field = a.field(resolution=resolution, budget=budget, tol=0.1)
    if prof:
        prof.disable()
    lap("field")
    a.topology(threshold=0.1)
    lap("topology")
    a.faithfulness()
    lap("faithfulness")
    a.raw_check(resolution=min(resolution, 32))
    lap("raw_check")
    save_figure(plot_landscape(a), out / "landscape.png")
    save_figure(plot_atlas_tree(a), out / "merge_tree.png")
    save_figure(plot_atlas_persistence(a), out / "persistence.png")
    lap("figures")
    text = ""
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        text = s.getvalue()
    raw = a.run.read()["stages"].get("raw_check", {})
    return {"stages": stages, "cpu": cpu, "samples": field.n, "rounds": field.rounds,
            "raw_samples": raw.get("samples"),
            "field_points_per_s": field.n / stages["field"],
            "backend": a.evaluator.backend, "chunk_size": a.evaluator.chunk_size,
            "batch_size": a.evaluator.batch_size}, text


def run_family(name: str, root: Path, resolution: int, budget: int, slice_res: int,
               profile: bool, cache: Path | None) -> dict:
    t0 = time.perf_counter()
    folder = (cache or root) / name
    if not (folder.is_dir() and len(list(folder.glob("*.pt"))) == 12):
        zoo.population_dir(name, folder, checkpoints=4)
    train_s = time.perf_counter() - t0
    data = zoo.data(name)
    t0 = time.perf_counter()
    pop = Population.from_checkpoints(folder, zoo.FAMILIES[name].factory)
    load_s = time.perf_counter() - t0
    params = int(pop.space.dim)
    surf = surface_random(pop.model(0), data, root / f"{name}-surface", slice_res,
                          getattr(pop, "bn", None))
    res, prof = atlas(pop, data, root / f"{name}-atlas", resolution, budget, profile)
    total = load_s + sum(res["stages"].values())
    total_cpu = load_s + sum(res["cpu"].values())
    out = {"family": name, "models": len(pop), "parameters": params, "train_s": train_s,
           "load_s": load_s, "surface": surf, "atlas": res, "end_to_end_s": total,
           "end_to_end_cpu_s": total_cpu,
           "field_vs_surface": res["field_points_per_s"] / surf["points_per_s"]}
    print(f"\n== {name}: {len(pop)} checkpoints of {params:,} parameters, "
          f"{len(data[0])} samples")
    print(f"surface random: {surf['points']} points, {surf['points_per_s']:.1f} points/s "
          f"({surf['backend']}, chunks of {surf['chunk_size']} points x {surf['batch_size']} samples)")
    print(f"atlas field:    {res['samples']} samples in {res['rounds']} rounds, "
          f"{res['field_points_per_s']:.1f} points/s ({res['backend']}, chunks of {res['chunk_size']} "
          f"points x {res['batch_size']} samples)")
    print(f"ratio field / surface random: {out['field_vs_surface']:.2f}")
    print(f"atlas stages (s): load {load_s:.1f}, " + ", ".join(
        f"{k} {v:.1f}" for k, v in res["stages"].items()) + f"; end to end {total:.1f}")
    print("process CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in res["cpu"].items())
          + f"; end to end {total_cpu:.1f} (surface random {surf['cpu_s']:.1f} for "
          f"{surf['points']} points)")
    if prof:
        print(prof)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", action="append", choices=sorted(zoo.FAMILIES),
                   help="zoo family (repeatable; default bn_cnn and transformer)")
    p.add_argument("--resolution", type=int, default=48, help="atlas base grid per axis")
    p.add_argument("--budget", type=int, default=6000, help="atlas field samples")
    p.add_argument("--slice-resolution", type=int, default=51, help="surface random grid")
    p.add_argument("--profile", action="store_true", help="cProfile the field stage")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--cache", type=Path, help="keep the trained checkpoints here (reused)")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_family(f, Path(tmp), args.resolution, args.budget,
                              args.slice_resolution, args.profile, args.cache)
                   for f in args.family or ["bn_cnn", "transformer"]]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
