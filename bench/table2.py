"""Benchmark: the seed's Table 2 (curves projected onto the map) on the demo's populations.

Builds the populations ``lossatlas demo`` builds, without the rest of the demo:

- ``demo``: the 7 MLP variants A-G (40-128-128-10) on MNIST-1D, 8 epochs, a checkpoint
  every 2 (35 models), loss on the first 2000 training samples, AE map with the demo's
  settings (defaults: 4000 epochs);
- ``bn_cnn``: the demo's BatchNorm CNN sub-run (``cnn2d_bn`` on digits, 3 variants x
  epochs 0, 2, 4), loss on 500 samples, AE map at lr 1e-2, 1500 epochs (the demo's);

then :func:`lossatlas.connectivity.curve_table.curve_table` with the reference G (C for
the CNN) against every other variant, and prints per method and pair the true loss
range, the projected and included ranges and median absolute errors (nats), the span
floor and the seconds. The issue-15 target: included overlays within 0.01 nats.

    .venv/bin/python bench/table2.py [--populations demo,bn_cnn] [--methods ae,kpca,umap]
                                     [--work DIR] [--out FILE] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lossatlas.connectivity.curve_table import curve_table
from lossatlas.data import create as create_data
from lossatlas.population import load_population
from lossatlas.train import default_demo_variants, train_population

BN_VARIANTS = [  # as the demo's BatchNorm sub-run
    {"name": "A", "optimizer": "sgd", "lr": 0.05, "batch_size": 64, "init": "own"},
    {"name": "B", "optimizer": "adam", "lr": 3e-3, "batch_size": 64, "init": "own"},
    {"name": "C", "optimizer": "sgd", "lr": 0.2, "batch_size": 128, "init": "own"},
]


def population(name: str, work: Path):
    """(population, data, embed options of the AE) as the demo builds them."""
    if name == "demo":
        splits = create_data("mnist1d")
        variants = [{**v, "init": "own"} for v in default_demo_variants()]
        train_population("mlp", splits, out_dir=work / "demo", variants=variants, epochs=8,
                         checkpoint_every=2, model_kwargs={"hidden": (128, 128)})
        return (load_population(work / "demo"), (splits.x_train[:2000], splits.y_train[:2000]),
                {})
    if name == "bn_cnn":
        splits = create_data("digits")
        train_population("cnn2d_bn", splits, out_dir=work / "bn_cnn", variants=BN_VARIANTS,
                         epochs=4, checkpoint_every=2)
        return (load_population(work / "bn_cnn"), (splits.x_train[:500], splits.y_train[:500]),
                {"epochs": 1500, "lr": 1e-2})
    raise ValueError(f"table2 bench: unknown population {name!r}; use demo or bn_cnn")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--populations", default="demo,bn_cnn")
    ap.add_argument("--methods", default="ae,kpca,umap")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lossatlas-table2"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--points", type=int, default=15)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.populations.split(","):
        t0 = time.perf_counter()
        pop, xy, ae = population(name, args.work)
        t_train = time.perf_counter() - t0
        tab = curve_table(pop, xy, args.work / f"{name}-maps", methods=args.methods.split(","),
                          embed_kwargs={"ae": ae}, points=args.points,
                          curve_steps=args.steps, progress=False)
        res = tab.to_dict()
        res.update(population=name, models=len(pop), train_seconds=round(t_train, 1))
        results[name] = res
        print(f"\n== {name}: {len(pop)} models, reference {res['reference']}, "
              f"{res['seconds']} s (training {t_train:.0f} s)")
        print(f"{'method':6} {'pair':6} {'true range':>17} {'projected range':>17} "
              f"{'proj MAE':>9} {'span MAE':>9} {'incl MAE':>9} {'incl raw':>9}")
        for r in res["rows"]:
            tr, pr = r["true_range"], r["projected_range"]
            print(f"{r['method']:6} {r['pair']:6} {tr[0]:8.4f}-{tr[1]:<8.4f} "
                  f"{pr[0]:8.4f}-{pr[1]:<8.4f} {r['projected_mae']:9.4f} "
                  f"{r['span_mae']:9.4f} {r.get('included_mae', float('nan')):9.5f} "
                  f"{r.get('included_raw_mae', float('nan')):9.5f}")
        for m, e in res["median_abs_error"].items():
            print(f"{name} {m}: median over pairs: projected {e['projected']:.4f}, "
                  f"included {e['included']:.5f} nats")
        if res["skipped"]:
            print("skipped:", res["skipped"])
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
