"""Benchmark: a 2-D loss slice of a GPT-style decoder, lossatlas against loss-landscapes
and landscaper.

The model is GPT-2 small in shape (12 pre-LN layers, width 768, 12 heads, MLP 3072,
GELU, learned positions, LM head tied to the token embedding; vocabulary 50,304 as
nanoGPT pads it: 124M parameters), attention through ``scaled_dot_product_attention``
(causal). Data: ``--sequences`` x ``--tokens`` random tokens, next-token cross-entropy
over every position (nats). The slice: ``--grid`` x ``--grid`` points along two random
filter-normalised directions (``lossatlas.surfaces.random_direction``, seeds 0 and 1),
coordinates in [-1, 1].

Timed in one invocation (seconds for the whole grid after a warm-up on one row, which
is reported separately as it includes compiling):

- lossatlas ``Evaluator`` with ``--precision`` (default bf16 on CUDA, fp32 on the CPU,
  which has no fast bf16 products) on each backend given in ``--variants`` (``auto``, ``vmap``, ``sequential``, ``compiled``: ``compile=True``);
- loss-landscapes 3.0.6 ``planar_interpolation`` on the same grid (fp32 as it runs, and
  with TF32 matmuls allowed: ``--peer-tf32``);
- landscaper 1.3.1 ``compute_loss_landscape`` (``--landscaper-python``: the Python of
  its own environment, it pins numpy<2; ``bench/_peers/make_landscaper_env.sh`` makes
  one) through ``bench/_peers/landscaper_runner.py``, on the same model (rebuilt from
  ``bench/_gpt.py``), data and directions (which it normalises and scales itself,
  ``--landscaper-distance``) on a ``--landscaper-grid`` sub-grid, fp32 with TF32 off;
  its losses are compared with our fp32 ones at its points.

The floor: the model's forward matmul FLOPs per point (counted from the shapes: every
linear layer and the LM head over all tokens, the two attention products at half the
full T^2 cost as causal flash attention computes them) over the bf16 dense GEMM rate
measured in the same run (8192^3 products). Printed: points/s, speed-up over the
peers, the fraction of the floor, and the largest relative difference between our
losses and each peer's at the same points.

Usage::

    python bench/transformer_slice.py --device cuda --out transformer_slice.json
    python bench/transformer_slice.py --device cpu --tiny       # a smoke test
    python bench/transformer_slice.py --landscaper-python .bench/ls/bin/python
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _gpt import GPT, FlatLogits  # noqa: E402
from atlas_large import matmul_rate  # noqa: E402
from eval_throughput import (  # noqa: E402
    device_name,
    max_rel,
    run_landscaper,
    run_loss_landscapes,
    sync,
)

from lossatlas import Evaluator, ParamSpace  # noqa: E402
from lossatlas.surfaces.directions import random_direction  # noqa: E402

SIZES = {
    "124m": {"vocab": 50304, "d_model": 768, "num_heads": 12, "num_layers": 12},
    "tiny": {"vocab": 64, "d_model": 32, "num_heads": 2, "num_layers": 2},
}


def forward_flops(size: str, tokens: int) -> float:
    """Matmul FLOPs of one forward pass of one sequence of ``tokens`` tokens."""
    c = SIZES[size]
    d, L = c["d_model"], c["num_layers"]
    linear = L * 12 * d * d * tokens * 2  # qkv 3d^2, proj d^2, MLP 8d^2
    attention = L * 2 * (tokens * tokens * d) * 2 / 2  # QK^T and PV, causal half
    head = 2 * d * c["vocab"] * tokens
    return float(linear + attention + head)



def grid_points(origin: Tensor, dirs: Tensor, coords: np.ndarray, row: int) -> Tensor:
    """Points of grid row ``row`` ``[grid, D]`` on ``origin``'s device."""
    a = float(coords[row])
    b = torch.as_tensor(coords, dtype=origin.dtype, device=origin.device)
    return origin + a * dirs[0] + b[:, None] * dirs[1]


def run_ours(variant: str, model, x, y, origin, dirs, coords, device, precision: str) -> dict:
    kw = {"compile": True} if variant == "compiled" else {
        "backend": "auto" if variant == "auto" else variant}
    ev = Evaluator(model, (x, y), device=device, precision=precision, **kw)
    sync(device)
    t0 = time.perf_counter()
    ev.evaluate(grid_points(origin, dirs, coords, 0))  # warm-up row (compiles)
    sync(device)
    warm = time.perf_counter() - t0
    losses = []
    t0 = time.perf_counter()
    for i in range(len(coords)):
        losses.append(ev.evaluate(grid_points(origin, dirs, coords, i))["loss"])
    sync(device)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "points_per_s": len(coords) ** 2 / dt, "warmup_s": warm,
            "backend": ev.backend, "chunk_size": ev.chunk_size, "batch_size": ev.batch_size,
            "losses": torch.cat(losses).double().numpy()}


def run_landscaper_peer(py: str, spec: dict, model, x, y, origin: Tensor, dirs: Tensor,
                        steps: int, distance: float, device: torch.device) -> dict:
    """landscaper on a ``steps`` x ``steps`` grid in its own environment: its points/s and
    the max relative difference between its losses and our fp32 ones at its points, or
    ``{"skipped": reason}``."""
    if not py:
        return {"skipped": "no --landscaper-python given (it pins numpy<2 and runs only "
                           "from its own environment)"}
    if not Path(py).exists():
        return {"skipped": f"{py} does not exist"}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = run_landscaper(py, Path(tmp), spec, model, x, y, dirs.cpu(), steps, distance,
                                 device, False)
    except Exception as err:  # noqa: BLE001 - a peer failing is reported, not fatal
        return {"skipped": f"{type(err).__name__}: {err}"}
    if "skipped" in out:
        return out
    # its point (i, j) is origin + (i - c) s_0 + (j - c) s_1, its scaled steps s_k
    c = steps // 2
    idx = torch.tensor([(i - c, j - c) for i in range(steps) for j in range(steps)],
                       dtype=torch.float64)
    pts = (origin.double().cpu() + idx @ out["steps_flat"].double()).float()
    ref = Evaluator(model, (x, y), device=device, precision="fp32")
    ours = ref.evaluate(pts.to(device))["loss"].double().numpy()
    theirs = np.asarray(out["losses"], np.float64).reshape(-1)
    keep = theirs != theirs.max()  # it adds noise to the maximum value(s)
    return {"points_per_s": out["points_per_s"], "grid": steps,
            "max_rel_diff_fp32": max_rel(ours[keep], theirs[keep]), "env": out.get("env", "")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default=None, choices=["fp32", "tf32", "bf16"],
                    help="ours (default: bf16 on CUDA, fp32 on the CPU)")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer width-32 model (smoke test)")
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--grid", type=int, default=11)
    ap.add_argument("--variants", default="auto,sequential,compiled")
    ap.add_argument("--peer", default="loss-landscapes", help="'' to skip the peer")
    ap.add_argument("--peer-tf32", action="store_true", help="also time the peer with TF32")
    ap.add_argument("--landscaper-python", default="",
                    help="the Python of landscaper's environment ('' skips it)")
    ap.add_argument("--landscaper-grid", type=int, default=3)
    ap.add_argument("--landscaper-distance", type=float, default=0.5)
    ap.add_argument("--out", default="", help="write the results as JSON to this file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    size = "tiny" if args.tiny else "124m"
    torch.manual_seed(0)
    gpt_kwargs = {"context": args.tokens, **SIZES[size]}
    model = GPT(**gpt_kwargs).to(device).eval()
    space = ParamSpace(model)
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, SIZES[size]["vocab"], (args.sequences, args.tokens + 1), generator=g)
    x, y = seq[:, :-1].to(device), seq[:, 1:].to(device)
    dirs = torch.stack([random_direction(model, "filter", "biasbn",
                                         generator=torch.Generator().manual_seed(s),
                                         space=space) for s in (0, 1)]).to(device)
    origin = space.flatten(model).to(device)
    coords = np.linspace(-1.0, 1.0, args.grid)
    flops = forward_flops(size, args.tokens) * args.sequences
    rate = matmul_rate(device)
    floor = flops / rate
    res: dict = {"device": device_name(device), "torch": torch.__version__,
                 "params": space.dim, "sequences": args.sequences, "tokens": args.tokens,
                 "grid": args.grid, "flops_per_point": flops, "matmul_rate": rate,
                 "floor_s_per_point": floor, "ours": {}, "peer": {}}
    print(f"device: {res['device']}; torch {torch.__version__}; GPT {space.dim / 1e6:.1f}M "
          f"parameters, {args.sequences} x {args.tokens} tokens, {args.grid}x{args.grid} slice")
    print(f"forward {flops / 1e12:.3f} TFLOP per point; bf16 GEMM {rate / 1e12:.0f} TFLOP/s; "
          f"floor {1e3 * floor:.2f} ms per point ({1 / floor:.1f} points/s)")

    peer_losses = None
    if args.peer:
        flat = FlatLogits(model).eval()
        for tf32 in ((False, True) if args.peer_tf32 else (False,)):
            old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                pps, losses, pc = run_loss_landscapes(
                    flat, x, y.reshape(-1), origin.cpu(), dirs.cpu(), -1.0, 1.0, args.grid,
                    device)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old
            key = "loss-landscapes" + (" (tf32)" if tf32 else "")
            res["peer"][key] = {"points_per_s": pps}
            print(f"{key:28s} {pps:9.3f} points/s")
            if not tf32:
                peer_losses, peer_coords = losses, pc
        best_peer = max(v["points_per_s"] for v in res["peer"].values())
    spec = {"file": "bench/_gpt.py", "class": "GPT", "kwargs": gpt_kwargs}
    ls = run_landscaper_peer(args.landscaper_python, spec, model, x, y, origin, dirs,
                             args.landscaper_grid, args.landscaper_distance, device)
    res["peer"]["landscaper"] = ls
    if "skipped" in ls:
        print(f"{'landscaper':28s} skipped ({ls['skipped']})")
    else:
        print(f"{'landscaper':28s} {ls['points_per_s']:9.3f} points/s "
              f"({ls['grid']}x{ls['grid']}, fp32); max rel diff vs ours (fp32) "
              f"{ls['max_rel_diff_fp32']:.1e}; {ls['env']}")
    for variant in [v for v in args.variants.split(",") if v]:
        try:
            r = run_ours(variant, model, x, y, origin, dirs, coords, device, precision)
        except Exception as err:  # noqa: BLE001 - one variant failing is a result too
            print(f"lossatlas {variant}: failed ({type(err).__name__}: {err})")
            res["ours"][variant] = {"failed": f"{type(err).__name__}: {err}"}
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        losses = r.pop("losses")
        line = (f"lossatlas {variant:18s} {r['points_per_s']:9.3f} points/s "
                f"(warm-up row {r['warmup_s']:.1f} s; backend {r['backend']}, chunk "
                f"{r['chunk_size']}, batch {r['batch_size']}); "
                f"{100 * r['points_per_s'] * floor:.1f}% of the floor")
        r["floor_fraction"] = floor * r["points_per_s"]
        if peer_losses is not None:
            # the peer's points in our grid order: a = coords[i], b = coords[j]
            h = 2.0 / (args.grid - 1)
            ij = np.rint((peer_coords.numpy() + 1.0) / h).astype(int)
            inside = (ij >= 0).all(1) & (ij < args.grid).all(1)
            ij = ij.clip(0, args.grid - 1)
            ours_at = losses.reshape(args.grid, args.grid)[ij[:, 0], ij[:, 1]]
            r["max_rel_vs_peer"] = max_rel(ours_at[inside], peer_losses[inside])
            r["speedup_vs_best_peer"] = r["points_per_s"] / best_peer
            line += (f"; {r['speedup_vs_best_peer']:.2f}x loss-landscapes (best run); "
                     f"max rel diff {r['max_rel_vs_peer']:.1e}")
        if "points_per_s" in ls:
            r["speedup_vs_landscaper"] = r["points_per_s"] / ls["points_per_s"]
            line += f"; {r['speedup_vs_landscaper']:,.1f}x landscaper"
        print(line)
        res["ours"][variant] = r
        if device.type == "cuda":
            torch.cuda.empty_cache()
    done = [v["points_per_s"] for v in res["ours"].values() if "points_per_s" in v]
    if "points_per_s" in ls and done:
        ls["our_speedup"] = max(done) / ls["points_per_s"]
        print(f"landscaper: ours (fastest variant) {ls['our_speedup']:,.1f}x its points/s")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
