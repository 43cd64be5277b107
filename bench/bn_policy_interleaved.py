"""BatchNorm ``recompute`` against ``own`` on a shared machine: interleaved rounds.

``bench/bn_policy.py`` times one variant after another, so on a shared CPU whose load
changes by minutes its ratios mix loads. Here every variant is built once, warmed up on
one point, and then timed in rounds (own, recompute-vmap, recompute-seq,
recompute-auto, own, ...); each variant's best round counts. Points: ``--points``
points of a 2-D random slice around the model (``random_slice``, seed 0) laid out
with their statistics (``ParamSpace(model, buffers=True)``).

Usage::

    OMP_NUM_THREADS=2 python bench/bn_policy_interleaved.py --models resnet20,cnn \\
        --samples 256 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from bn_policy import make_model  # noqa: E402

from lossatlas import Evaluator, ParamSpace  # noqa: E402
from lossatlas.surfaces import random_slice  # noqa: E402

VARIANTS = {
    "own": {"bn": "own"},
    "recompute-vmap": {"bn": "recompute", "backend": "vmap"},
    "recompute-seq": {"bn": "recompute", "backend": "sequential"},
    "recompute-auto": {"bn": "recompute"},
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="resnet20,cnn")
    ap.add_argument("--samples", type=int, default=256, help="ResNet inputs")
    ap.add_argument("--digits-samples", type=int, default=1797, help="BN CNN inputs")
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; {torch.get_num_threads()} threads; device {args.device}")
    for name in args.models.split(","):
        model, x, y, what = make_model(name, args)
        space = ParamSpace(model, buffers=True)
        sl = random_slice(model, 2, 51, space=space)
        pts = sl.points_at([[0.1 * i, -0.05 * i] for i in range(args.points)])
        evs = {k: Evaluator(model, (x, y), space=space, device=args.device, **kw)
               for k, kw in VARIANTS.items()}
        for ev in evs.values():
            ev.evaluate(pts[:1])
        best = dict.fromkeys(evs, float("inf"))
        for _ in range(args.rounds):
            for k, ev in evs.items():
                t = time.perf_counter()
                ev.evaluate(pts)
                best[k] = min(best[k], time.perf_counter() - t)
        print(f"\n== {what}; {len(pts)} points, best of {args.rounds} interleaved rounds")
        for k, ev in evs.items():
            print(f"{k:16s} {len(pts) / best[k]:9.4f} points/s  {best['own'] / best[k]:6.0%} "
                  f"of own  (backend {ev.backend}, chunk {ev.chunk_size}, "
                  f"batch {ev.batch_size})")


if __name__ == "__main__":
    main()
