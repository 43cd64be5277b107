"""Check: the ``fast-bnrecompute`` backend's losses against the sequential backend's
(fp32 reference, statistics recomputed over all samples) on a ResNet, on the device.

    python bench/bn_recompute_check.py --device cuda --samples 2000 --points 4
"""

from __future__ import annotations

import argparse
import time

import torch

from lossatlas import Evaluator
from lossatlas.models import create


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--compile", default="false,true",
                    help="compile settings of ours, comma-separated: false, true or a mode")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = create(args.model, num_classes=10)
    x = torch.randn(args.samples, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.samples,), generator=g)
    ref = Evaluator(model, (x, y), device=args.device, backend="sequential", precision="fp32")
    w = ref.space.flatten(model)
    pts = w + 0.05 * w.norm() / w.numel() ** 0.5 * torch.randn(args.points, w.numel(),
                                                                 generator=g)
    want = ref.evaluate(pts)["loss"]
    print(f"reference (sequential, fp32): {want.tolist()}")
    for setting in args.compile.split(","):
        comp = {"false": False, "true": True}.get(setting, setting)
        for precision in ("fp32", "bf16"):
            ev = Evaluator(model, (x, y), device=args.device, precision=precision,
                           compile=comp)
            t = time.perf_counter()
            got = ev.evaluate(pts)["loss"]
            rel = float(((got - want).abs() / want.abs()).max())
            print(f"{ev.backend} compile={comp} {precision}: max rel diff {rel:.2e} "
                  f"({time.perf_counter() - t:.1f} s with compiling)", flush=True)


if __name__ == "__main__":
    main()
