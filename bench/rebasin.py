"""Benchmark: the seed's re-basin experiment (``lossatlas.symmetry.rebasin_study``).

16 pairs of independently initialised MLPs (64-H-10) trained with SGD on scikit-learn
digits, one joint AE map of the 32 final models, each B permuted onto its A by weight
matching. For each protocol: how many re-basined models land in their partner's basin,
how many unpermuted controls do, the number of basins, the median projection error
of the re-basined models and of B's permuted trajectories (nats), the seconds.

Protocols: ``projected`` (the seed's: a map of the models alone, AE defaults),
``projected-stress`` (the same with the AE's distance-preserving term, stress 0.1),
``included`` (re-basined models and permuted trajectories fitted into the map too).

    .venv/bin/python bench/rebasin.py [--pairs 16] [--hidden 128] [--epochs 5]
                                      [--protocols projected,included] [--work DIR]
                                      [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lossatlas.data import create
from lossatlas.symmetry.rebasin_study import rebasin_study, train_pairs

PROTOCOLS = {"projected": ({}, False), "projected-stress": ({"stress": 0.1}, False),
             "included": ({}, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lossatlas-rebasin"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pop = train_pairs(args.work / "train", pairs=args.pairs, hidden=(args.hidden,),
                      epochs=args.epochs, checkpoint_every=1)
    print(f"{len(pop)} checkpoints of {2 * args.pairs} runs in {time.perf_counter() - t0:.0f} s")
    sp = create("digits")
    xy = (sp.x_train[:args.samples], sp.y_train[:args.samples])
    results = {}
    for name in args.protocols.split(","):
        kwargs, include = PROTOCOLS[name]
        st = rebasin_study(pop, xy, args.work / name, embed_kwargs=kwargs, include=include,
                           progress=False)
        d = st.to_dict()
        d.pop("pairs")
        results[name] = d
        print(f"{name:17} re-basined in partner's basin {d['in_partner_basin']:2d}/"
              f"{d['num_pairs']}, control {d['control_in_partner_basin']:2d}/{d['num_pairs']}, "
              f"nearest code the partner's {d['nearest_is_partner']:2d}/{d['num_pairs']}, "
              f"{d['num_basins']} basins, re-basined MAE {d['rebased_median_abs_error']:.4f}, "
              f"trajectory MAE {d['trajectory_median_abs_error']:.4f} nats, "
              f"{d['seconds']:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
