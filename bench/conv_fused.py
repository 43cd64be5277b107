"""The fused 3x3 convolution (``lossatlas.kernels.conv_triton``) against cuDNN + separate
epilogues, per layer shape and on a whole ResNet's points.

    python bench/conv_fused.py --samples 10000 --points 16 --out conv_fused.json

Part 1, per shape of a CIFAR ResNet (16/32/64 channels at 32/16/8 pixels, bf16,
channels-last): milliseconds per call of
  - ``cudnn``: ``conv2d(x, w, b)`` then ``+ residual`` then ``relu`` (what the
    ``fast-bnfold`` backend runs eagerly: three passes over the activation);
  - ``cudnn+compile``: the same through ``torch.compile`` (inductor fuses the epilogue
    into one pointwise pass after cuDNN's convolution);
  - ``fused``: ``torch.ops.lossatlas.conv3x3_act`` (one pass);
with each output's max abs difference to an fp32 computation, and the activation bytes
each moves over the time (GB/s).

Part 2, the Evaluator on ResNet-56 with ``--samples`` random inputs (bf16): points/s of
``fast-bnfold`` and ``fast-bnfold-fused``, eager and ``compile=True``, and each one's
max relative loss difference to fp32 on the same points. The peers' figures on the same
work come from ``bench/eval_throughput.py`` (whose default backend is now the fused one).
Needs CUDA and Triton.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lossatlas import Evaluator, ParamSpace  # noqa: E402
from lossatlas.kernels import conv_triton  # noqa: E402,F401  (registers the op)
from lossatlas.models import create  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import in_layout, random_directions  # noqa: E402

SHAPES = [  # (C_in, C_out, H=W, residual)
    (16, 16, 32, False), (16, 16, 32, True),
    (32, 32, 16, False), (32, 32, 16, True),
    (64, 64, 8, False), (64, 64, 8, True),
]


def timed(fn, reps: int) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` calls after two warm-up calls."""
    fn(), fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def layer_shapes(n: int, reps: int) -> list[dict]:
    """Part 1: one row per shape."""
    rows = []
    dev = torch.device("cuda")
    cl = torch.channels_last
    for c_in, c_out, hw, res in SHAPES:
        g = torch.Generator(device=dev).manual_seed(0)
        x = torch.randn(n, c_in, hw, hw, device=dev, generator=g).to(torch.bfloat16, memory_format=cl)
        w = torch.randn(c_out, c_in, 3, 3, device=dev, generator=g) / (3 * c_in ** 0.5)
        b = torch.randn(c_out, device=dev, generator=g) * 0.1
        r = (torch.randn(n, c_out, hw, hw, device=dev, generator=g)
             .to(torch.bfloat16, memory_format=cl) if res else None)
        wb, bb = w.to(torch.bfloat16), b.to(torch.bfloat16)

        def cudnn(x=x, wb=wb, bb=bb, r=r):
            y = F.conv2d(x, wb, bb, padding=1)
            if r is not None:
                y = y + r
            return torch.relu(y)

        compiled = torch.compile(cudnn)

        def fused(x=x, w=w, b=b, r=r):
            return torch.ops.lossatlas.conv3x3_act(x, w, b, r, True)

        ref = F.conv2d(x.float(), wb.float(), padding=1) + b[:, None, None]
        if r is not None:
            ref = ref + r.float()
        ref = torch.relu(ref)
        moved = x.numel() * 2 + ref.numel() * 2 * (2 if res else 1)
        row = {"c_in": c_in, "c_out": c_out, "hw": hw, "residual": res, "samples": n}
        for name, fn in (("cudnn", cudnn), ("cudnn+compile", compiled), ("fused", fused)):
            ms = timed(fn, reps)
            err = (fn().float() - ref).abs().max().item()
            row[name] = {"ms": ms, "gb_per_s": moved / ms / 1e6, "max_abs_diff_fp32": err}
        row["autotuned"] = _tuned_config(c_in, c_out, hw, res)
        rows.append(row)
        print(f"autotune's choice: {row['autotuned']}", flush=True)
        print(f"{c_in:>2}->{c_out:<2} {hw:>2}px res={int(res)}: " + "  ".join(
            f"{k} {row[k]['ms']:.3f} ms ({row[k]['gb_per_s']:,.0f} GB/s, err {row[k]['max_abs_diff_fp32']:.1e})"
            for k in ("cudnn", "cudnn+compile", "fused")), flush=True)
        del x, r, ref
    return rows


def _tuned_config(c_in: int, c_out: int, hw: int, res: bool) -> str:
    """The launch configuration the kernel's autotuner chose for this shape."""
    cache = getattr(conv_triton._conv3x3_tuned, "cache", {})
    for key, cfg in cache.items():
        if tuple(key[:7]) == (c_in, c_out, hw, hw, True, res, True):
            return str(cfg)
    return "?"


def _configs() -> list[dict]:
    """The launch configurations :func:`sweep` times."""
    out = []
    for bm in (32, 64, 128, 256):
        for nw in (2, 4, 8):
            if (bm, nw) not in ((32, 8), (256, 2)):
                out += [{"BLOCK_M": bm, "PIPELINE": p, "num_warps": nw, "num_stages": 2}
                        for p in (0, 3)]
    for bm in (32, 64, 128, 256):  # the row sweep (whole image rows per program)
        for nw in (2, 4, 8):
            out += [{"BLOCK_M": bm, "ROWS": 1, "PIPELINE": p, "num_warps": nw,
                     "num_stages": 2} for p in (1, 2, 3)]
    return out


def _sweep_shape(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, r: torch.Tensor,
                 reps: int) -> dict:
    """Milliseconds of each configuration on one shape (the error's name if it fails)."""
    from lossatlas.kernels.conv_triton import _launch

    times: dict = {}
    for cfg in _configs():
        name = (f"{'rows' if cfg.get('ROWS') else 'taps'} BM{cfg['BLOCK_M']} "
                f"w{cfg['num_warps']} pipe{cfg['PIPELINE']}")
        try:
            if _launch(x, w, b, r, True, config=cfg) is None:
                continue  # a row sweep whose block is narrower than an image row
            times[name] = timed(lambda cfg=cfg: _launch(x, w, b, r, True, config=cfg), reps)
        except Exception as err:  # noqa: BLE001 - a config that does not compile
            times[name] = type(err).__name__
    return times


def sweep(n: int, reps: int) -> list[dict]:
    """Part 0: every launch configuration of the kernel on the residual shapes (ms)."""
    dev, cl, rows = torch.device("cuda"), torch.channels_last, []
    for c_in, c_out, hw, _ in [s for s in SHAPES if s[3]]:
        x = torch.randn(n, c_in, hw, hw, device=dev).to(torch.bfloat16, memory_format=cl)
        w = torch.randn(c_out, c_in, 3, 3, device=dev) / (3 * c_in ** 0.5)
        r = torch.randn(n, c_out, hw, hw, device=dev).to(torch.bfloat16, memory_format=cl)
        times = _sweep_shape(x, w, torch.zeros(c_out, device=dev), r, reps)
        ok = {k: v for k, v in times.items() if isinstance(v, float)}
        best = min(ok, key=ok.get)
        rows.append({"c_in": c_in, "c_out": c_out, "hw": hw, "ms": times, "best": best})
        print(f"{c_in}->{c_out} {hw}px: " + ", ".join(
            f"{k} {v:.3f}" for k, v in sorted(ok.items(), key=lambda kv: kv[1])[:6]), flush=True)
    return rows


def resnet_points(n: int, points: int, variants: list[str]) -> dict:
    """Part 2: points/s of each backend on ResNet-56 and its loss error against fp32."""
    torch.manual_seed(0)
    model = create("resnet56", num_classes=10).eval()
    x = torch.randn(n, 3, 32, 32)
    y = torch.randint(0, 10, (n,))
    params = ParamSpace(model)
    space = ParamSpace(model, buffers=True)  # bn="own": each point carries its statistics
    origin, dirs = in_layout(space, params, model, params.flatten(model),
                             random_directions(params, model))
    coords = torch.rand(points, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    pts = (origin + (2 * coords - 1) @ dirs).float()
    ref = Evaluator(model, (x, y), device="cuda", precision="fp32", bn="own", space=space)
    ref_loss = ref.evaluate(pts)["loss"].double()
    del ref
    out = {"samples": n, "points": points, "variants": {}}
    for label in variants:
        backend = "fast-bnfold-fused" if label.startswith("fused") else "fast-bnfold"
        compile_ = ("max-autotune-no-cudagraphs" if label.endswith("autotune")
                    else label.endswith("compile"))
        print(f"[{time.strftime('%H:%M:%S')}] {label} ...", flush=True)
        ev = Evaluator(model, (x, y), device="cuda", precision="bf16", bn="own",
                       backend=backend, compile=compile_, space=space)
        t0 = time.perf_counter()
        loss = ev.evaluate(pts)["loss"].double()  # warm-up (and compile)
        first = time.perf_counter() - t0
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = ev.evaluate(pts)["loss"].double()
        torch.cuda.synchronize()
        pps = points / (time.perf_counter() - t0)
        rel = ((loss - ref_loss).abs() / ref_loss.abs()).max().item()
        out["variants"][label] = {"points_per_s": pps, "first_call_s": first,
                                  "max_rel_diff_fp32": rel, "repr": repr(ev)}
        print(f"{label}: {pps:.1f} points/s (first call {first:.1f} s); max rel diff to "
              f"fp32 {rel:.1e}", flush=True)
        del ev
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--parts", default="sweep,layers,resnet")
    ap.add_argument("--variants", default="plain,plain+compile,fused,fused+compile",
                    help="ResNet-56 variants: plain / fused, optionally +compile or +autotune")
    ap.add_argument("--stacks", type=float, default=0,
                    help="print every thread's stack every this many seconds (0: never)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or conv_triton.triton is None:
        raise SystemExit("conv_fused: needs CUDA and Triton")
    res: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if args.stacks:
        faulthandler.dump_traceback_later(args.stacks, repeat=True)
    if "sweep" in args.parts:
        res["sweep"] = sweep(args.samples, args.reps)
    if "layers" in args.parts:
        res["layers"] = layer_shapes(args.samples, args.reps)
    if "resnet" in args.parts:
        res["resnet56"] = resnet_points(args.samples, args.points, args.variants.split(","))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"summary: {res['device']}, {args.samples} samples", flush=True)


if __name__ == "__main__":
    main()
