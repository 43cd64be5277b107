"""Points per second on a 2-D slice: lossatlas's Evaluator against loss-landscapes and landscaper.

One invocation times, on the same model, data and plane (two random directions):

- ours: ``lossatlas.Evaluator`` (backend "auto", bf16 by default) on the full
  ``--grid`` x ``--grid`` slice (or its first ``--our-points`` points);
- loss-landscapes 3.0.6 ``planar_interpolation`` (in this process; data on the
  device, one full batch, no autograd) on a ``--peer-grid`` sub-grid;
- landscaper 1.3.1 ``compute_loss_landscape`` in its own environment
  (``--landscaper-python``, it pins numpy<2) via ``bench/_peers/landscaper_runner.py``
  on the same saved inputs, same set-up;

and prints points/s, our speed-up over each peer, the floor (points x samples x
forward FLOPs over the device's measured matmul rate), our fraction of it, and the
max relative difference between our fp32 values and each peer's on the peer's points.

Example::

    python bench/eval_throughput.py --cases mlp,resnet56 --landscaper-python .bench/ls/bin/python
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lossatlas import Evaluator, ParamSpace  # noqa: E402
from lossatlas.backends import get_backend  # noqa: E402
from lossatlas.models import create  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return "CPU"


def matmul_rate(device: torch.device) -> tuple[float, str]:
    """Measured dense matmul rate (FLOP/s): bf16 8192^3 on CUDA, fp32 2048^3 on CPU."""
    if device.type == "cuda":
        n, dtype, reps = 8192, torch.bfloat16, 10
    else:
        n, dtype, reps = 2048, torch.float32, 3
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    dt = (time.perf_counter() - t) / reps
    return 2 * n**3 / dt, f"{str(dtype).replace('torch.', '')} {n}^3"


def forward_flops(model: nn.Module, x1: torch.Tensor) -> float:
    """Multiply-add FLOPs (2 per MAC) of Linear and Conv layers for one sample."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Linear):
            total += 2 * out.numel() * m.in_features
        elif isinstance(m, nn.modules.conv._ConvNd):
            k = math.prod(m.kernel_size) * m.in_channels // m.groups
            total += 2 * out.numel() * k

    hs = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x1)
    for h in hs:
        h.remove()
    return float(total)


def make_case(name: str, args) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict, str]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "mlp":
        spec = {"name": "mlp", "kwargs": {"in_features": 40, "hidden": [512, 512],
                                          "num_classes": 10}}
        model = create("mlp", in_features=40, hidden=(512, 512), num_classes=10)
        try:
            from lossatlas import data as ldata

            ds = ldata.create("mnist1d")
            x, y = ds.x_train[: args.mlp_samples], ds.y_train[: args.mlp_samples]
            what = f"MNIST-1D train, {len(x)} samples"
        except Exception as err:  # noqa: BLE001 - the benchmark works without the dataset
            x = torch.randn(args.mlp_samples, 40, generator=g)
            y = torch.randint(0, 10, (args.mlp_samples,), generator=g)
            what = f"random 40-dim inputs, {len(x)} samples (mnist1d unavailable: {err})"
    elif name == "resnet56":
        spec = {"name": "resnet56", "kwargs": {"num_classes": 10}}
        model = create("resnet56", num_classes=10)
        x = torch.randn(args.resnet_samples, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (args.resnet_samples,), generator=g)
        # Non-trivial BatchNorm statistics, then eval mode.
        model.train()
        with torch.no_grad():
            for i in range(0, min(len(x), 2048), 256):
                model(x[i : i + 256])
        what = f"random 3x32x32 inputs, {len(x)} samples"
    else:
        raise SystemExit(f"eval_throughput: unknown case {name!r}; use mlp or resnet56")
    return model.eval(), x, y, spec, what


def random_directions(space: ParamSpace, model: nn.Module) -> torch.Tensor:
    """Two Gaussian directions [2, D], each tensor scaled to its parameter tensor's norm."""
    g = torch.Generator().manual_seed(1)
    w = space.flatten(model)
    d = torch.randn(2, space.dim, generator=g)
    for s in space.segments:
        sl = slice(s.start, s.stop)
        d[:, sl] *= (w[sl].norm() / d[:, sl].norm(dim=1, keepdim=True).clamp_min(1e-12))[:, :]
    return d


def our_rate(ev: Evaluator, origin: torch.Tensor, dirs: torch.Tensor, coords: torch.Tensor,
             reps: int) -> tuple[float, torch.Tensor]:
    """Points/s evaluating origin + coords @ dirs (points made on the device, chunk by chunk)."""
    dev = ev.device
    o, d, c = origin.to(dev), dirs.to(dev), coords.to(dev)

    def run() -> torch.Tensor:
        out = []
        step = max(ev.chunk_size, 1)
        for i in range(0, len(c), step):
            out.append(ev.evaluate(o + c[i : i + step] @ d)["loss"])
        return torch.cat(out)

    run_warm = min(len(c), max(ev.chunk_size, 1))
    ev.evaluate(o + c[:run_warm] @ d)  # warm-up (and compile)
    best = float("inf")
    losses = None
    for _ in range(reps):
        sync(dev)
        t = time.perf_counter()
        losses = run()
        sync(dev)
        best = min(best, time.perf_counter() - t)
    assert losses is not None
    return len(c) / best, losses


@contextlib.contextmanager
def tf32(on: bool):
    """PyTorch's TF32 switches for matmul and cuDNN (its defaults: matmul off, cuDNN on)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def run_loss_landscapes(model, x, y, origin_model_params, dirs, lo, hi, steps, device):
    """planar_interpolation on a steps x steps grid; returns (points/s, losses, coords)."""
    import copy

    from loss_landscapes import planar_interpolation
    from loss_landscapes.metrics import Loss
    from loss_landscapes.model_interface.model_wrapper import wrap_model

    h = (hi - lo) / (steps - 1)
    space = ParamSpace(model)
    start_vec = origin_model_params + lo * dirs[0] + lo * dirs[1]
    m0, m1, m2 = (copy.deepcopy(model).to(device) for _ in range(3))
    space.load_into(m0, start_vec.to(device))
    space.load_into(m1, (start_vec + steps * h * dirs[0]).to(device))
    space.load_into(m2, (start_vec + steps * h * dirs[1]).to(device))
    for m in (m0, m1, m2):
        m.eval().requires_grad_(False)
    xd, yd = x.to(device), y.to(device)
    metric = Loss(F.cross_entropy, xd, yd)
    with torch.no_grad():
        metric(wrap_model(m0))  # warm-up
        sync(device)
        t = time.perf_counter()
        grid = planar_interpolation(m0, m1, m2, metric, steps=steps, deepcopy_model=False)
        sync(device)
        dt = time.perf_counter() - t
    # Its points: row i at a = i; even rows at b = j + 1, odd rows at b = j (in-place walk).
    coords = []
    for i in range(steps):
        for j in range(steps):
            b = j + 1 if i % 2 == 0 else j
            coords.append((lo + i * h, lo + b * h))
    return steps * steps / dt, np.asarray(grid, dtype=np.float64).reshape(-1), torch.tensor(
        coords, dtype=torch.float64)


def run_landscaper(py: str, tmp: Path, spec: dict, model, x, y, dirs_flat, steps, distance,
                   device, allow_tf32: bool) -> dict:
    space = ParamSpace(model)
    torch.save({"spec": spec, "state": model.state_dict(), "x": x, "y": y,
                "dirs": [space.unflatten(d) for d in dirs_flat], "steps": steps,
                "distance": distance, "device": str(device), "tf32": allow_tf32},
               tmp / "inputs.pt")
    cmd = [py, str(ROOT / "bench" / "_peers" / "landscaper_runner.py"), str(tmp / "inputs.pt"),
           str(tmp / "landscaper_out.pt")]
    env = {**os.environ, "PYTHONPATH": os.environ.get("LANDSCAPER_PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3000)
    if proc.returncode != 0:
        return {"skipped": f"runner failed: {proc.stderr.strip().splitlines()[-3:]}"}
    out = torch.load(tmp / "landscaper_out.pt", weights_only=False)
    out["log"] = proc.stdout.strip().splitlines()[-2:]
    return out


def make_evaluator(model, x, y, device, kw: dict) -> Evaluator:
    """Our Evaluator with ``kw``; ``bn="own"`` evaluates each point with the model's stored
    statistics (the space then lays them out too)."""
    kw = dict(kw)
    if kw.get("bn") == "own":
        kw["space"] = ParamSpace(model, buffers=True)
    if kw.pop("nostats", False):  # recompute: the Triton convolutions without statistics
        from unittest import mock

        with mock.patch("lossatlas.kernels.bn_triton.fuse_batchnorm_statistics",
                        lambda gm: 0):
            return Evaluator(model, (x, y), device=device, **kw)
    return Evaluator(model, (x, y), device=device, **kw)


def in_layout(target: ParamSpace, space: ParamSpace, model: nn.Module, origin: torch.Tensor,
              dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``origin`` [D] and ``dirs`` [k, D] of ``space`` (parameters) in ``target``'s layout
    (which may also hold the BatchNorm statistics: the model's, along no direction)."""
    if target.dim == space.dim:
        return origin.double(), dirs.double()
    o = target.flatten(model).double()
    d = torch.zeros(len(dirs), target.dim, dtype=torch.float64)
    for seg in space.segments:
        t = target[seg.name]
        o[t.start : t.stop] = origin[seg.start : seg.stop].double()
        d[:, t.start : t.stop] = dirs[:, seg.start : seg.stop].double()
    return o, d


def profile(ev: Evaluator, origin: torch.Tensor, dirs: torch.Tensor, coords: torch.Tensor,
            path: Path) -> None:
    """torch.profiler over evaluating ``coords``' points (after a warm-up): the kernels
    by total device time, written to ``path`` (and the top lines printed)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    dev = ev.device
    pts = (origin.to(dev) + coords.to(dev) @ dirs.to(dev))
    ev.evaluate(pts)
    sync(dev)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    t = time.perf_counter()
    with torch_profile(activities=acts) as prof:
        ev.evaluate(pts)
        sync(dev)
    wall = time.perf_counter() - t
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{ev!r}\n{len(pts)} points, {wall:.3f} s under the profiler\n\n{table}\n")
    print(f"profile of {len(pts)} points ({wall:.3f} s) -> {path}", flush=True)
    print("\n".join(table.splitlines()[:14]), flush=True)


def use_gemm_path(ev: Evaluator) -> None:
    """Make an Evaluator that chose the fused MLP kernel run the batched-GEMM MLP path
    instead (the same plan and sizes), to time the two side by side."""
    ev._backend = get_backend("fast-mlp")
    ev.backend = ev._backend.name


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """Max relative difference over the points where both values are finite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return float("nan")
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-12)))


def bench_case(name: str, args, device: torch.device, rate: float, rate_desc: str) -> dict:
    model, x, y, spec, what = make_case(name, args)
    space = ParamSpace(model)
    origin = space.flatten(model)
    dirs = random_directions(space, model)
    lo, hi = -1.0, 1.0
    ax = torch.linspace(lo, hi, args.grid, dtype=torch.float64)
    coords = torch.cartesian_prod(ax, ax)
    limit = args.our_points_resnet if name == "resnet56" else args.our_points
    n_ours = min(len(coords), limit or len(coords))
    flops = forward_flops(model, x[:1])
    floor = rate / (len(x) * flops)
    res: dict = {"case": name, "data": what, "samples": len(x), "params": space.dim,
                 "forward_gflop_per_sample": flops / 1e9, "grid": args.grid, "our_points": n_ours,
                 "floor_points_per_s": floor, "matmul_rate_tflops": rate / 1e12,
                 "matmul": rate_desc, "variants": {}}
    print(f"\n== {name}: {what}; D = {space.dim:,}; grid {args.grid}x{args.grid} "
          f"(ours on {n_ours} points)", flush=True)

    if "bn" not in args.variants_text and name == "resnet56":
        print(f"BatchNorm policy of ours: {args.bn} (variant tokens own / recompute change it)")
    variants = [(args.precision, dict(precision=args.precision), False)]
    if args.compile:
        variants.append((f"{args.precision} compile", dict(precision=args.precision,
                                                           compile=True), False))
    for extra in args.variants:
        kw: dict = dict(precision=args.precision)
        gemm = False
        for tok in extra.split("+"):
            if tok == "vmap":
                kw["backend"] = "vmap"
            elif tok == "nocl":
                kw["channels_last"] = False
            elif tok == "nofuse":  # without the Triton convolutions (cuDNN's)
                kw["backend"] = "nofuse"
            elif tok == "compile":
                kw["compile"] = True
            elif tok == "autotune":  # Triton conv templates timed against cuDNN
                kw["compile"] = "max-autotune-no-cudagraphs"
            elif tok == "gemm":
                gemm = True
            elif tok.startswith("chunk"):
                kw["chunk_size"] = int(tok[5:])
            elif tok.startswith("batch"):
                kw["batch_size"] = int(tok[5:])
            elif tok == "nostats":  # recompute: BatchNorm statistics not taken in the conv
                kw["nostats"] = True
            elif tok in ("own", "recompute"):
                kw["bn"] = tok
            else:
                raise SystemExit(f"eval_throughput: unknown variant {tok!r}")
        if kw.get("backend") == "nofuse":
            recompute = kw.get("bn", args.bn) == "recompute"
            kw["backend"] = "fast-bnrecompute" if recompute else "fast-bnfold"
        variants.append((f"{args.precision} {extra}", kw, gemm))
    best = 0.0
    best_kw: dict = {}
    for label, kw, gemm in variants:
        kw = {"bn": args.bn, **kw}
        ev = make_evaluator(model, x, y, device, kw)
        if gemm and ev.backend == "fast-mlp-fused":
            use_gemm_path(ev)  # the batched-GEMM path, for comparison
        o, d = in_layout(ev.space, space, model, origin, dirs)
        t0 = time.perf_counter()
        pps, _ = our_rate(ev, o, d, coords[:n_ours], args.reps)
        res["variants"][label] = {"points_per_s": pps, "repr": repr(ev), "bn": ev.bn,
                                  "wall_s": time.perf_counter() - t0}
        print(f"ours [{label}, bn={ev.bn}] {repr(ev)}: {pps:,.1f} points/s", flush=True)
        if args.profile_dir:
            profile(ev, o, d, coords[: min(n_ours, 8)], Path(args.profile_dir) /
                    f"profile_{name}_{label.replace(' ', '_').replace('+', '_')}.txt")
        if pps > best:
            best, best_kw = pps, (kw, gemm)
        del ev
        if device.type == "cuda":
            torch.cuda.empty_cache()
    res["ours_points_per_s"] = best
    res["floor_fraction"] = best / floor
    res["best_variant"] = str(best_kw)

    # Our fast setting against our own fp32 reference on a few points.
    kw, gemm = best_kw
    ev = make_evaluator(model, x, y, device, {**kw, "compile": False})
    if gemm and ev.backend == "fast-mlp-fused":
        use_gemm_path(ev)
    few_c = coords[:: max(1, len(coords) // 16)][:16]
    o, d = in_layout(ev.space, space, model, origin, dirs)
    fast_vals = ev.evaluate((o + few_c @ d).float())["loss"].numpy()
    del ev

    # the reference: fp32, the same BatchNorm policy as the peers (eval mode, stored
    # statistics) on the peers' points, and the best variant's policy for the check above
    ref = make_evaluator(model, x, y, device, {"precision": "fp32", "bn": kw.get("bn", "own")})
    o, d = in_layout(ref.space, space, model, origin, dirs)
    few = (o + few_c @ d).float()
    res["ours_fast_vs_fp32_max_rel_diff"] = max_rel(fast_vals, ref.evaluate(few)["loss"].numpy())
    if ref.bn == "recompute":  # the peers' values are eval-mode ones
        ref = make_evaluator(model, x, y, device, {"precision": "fp32", "bn": "own"})
    o_ref, d_ref = in_layout(ref.space, space, model, origin, dirs)
    print(f"ours [{kw.get('precision')}] vs ours [fp32] on 16 points: max rel diff "
          f"{res['ours_fast_vs_fp32_max_rel_diff']:.2e}", flush=True)
    peer_steps = args.peer_grid_mlp if name == "mlp" else args.peer_grid_resnet
    peers: dict = {}
    # ---- loss-landscapes (same process; pure Python)
    try:
        pps, vals, pc = run_loss_landscapes(model, x, y, origin, dirs, lo, hi, peer_steps, device)
        note = ""
        if device.type == "cuda":  # the timed run used PyTorch's defaults (TF32 convolutions)
            with tf32(False):
                _, vals, pc = run_loss_landscapes(model, x, y, origin, dirs, lo, hi, 3, device)
            note = "values from a 3x3 re-run with TF32 off"
        ours = ref.evaluate((o_ref + pc @ d_ref).float())["loss"].numpy()
        peers["loss-landscapes"] = {"points_per_s": pps, "grid": peer_steps,
                                    "max_rel_diff_fp32": max_rel(ours, vals), "note": note}
    except Exception as err:  # noqa: BLE001 - report and go on
        peers["loss-landscapes"] = {"skipped": f"{type(err).__name__}: {err}"}
    # ---- landscaper (its own environment)
    if not args.landscaper_python:
        peers["landscaper"] = {"skipped": "no --landscaper-python given (it pins numpy<2 and "
                                          "runs only from its own environment)"}
    elif not Path(args.landscaper_python).exists():
        peers["landscaper"] = {"skipped": f"{args.landscaper_python} does not exist"}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = run_landscaper(args.landscaper_python, Path(tmp), spec, model, x, y, dirs,
                                 peer_steps, args.landscaper_distance, device, True)
            check = out
            if device.type == "cuda" and "skipped" not in out:
                check = run_landscaper(args.landscaper_python, Path(tmp), spec, model, x, y, dirs,
                                       3, args.landscaper_distance, device, False)
        if "skipped" in out or "skipped" in check:
            peers["landscaper"] = out if "skipped" in out else check
        else:
            steps_vec = check["steps_flat"]  # [2, D]: its scaled step directions
            cs = int(round(math.sqrt(np.asarray(check["losses"]).size)))
            c = cs // 2
            idx = torch.tensor([(i - c, j - c) for i in range(cs)
                                for j in range(cs)], dtype=torch.float64)
            _, steps_ref = in_layout(ref.space, space, model, origin, steps_vec.double())
            pts = (o_ref + idx @ steps_ref).float()
            ours = ref.evaluate(pts)["loss"].numpy()
            theirs = np.asarray(check["losses"], np.float64).reshape(-1)
            keep = theirs != theirs.max()  # it adds noise to the maximum value(s)
            peers["landscaper"] = {"points_per_s": out["points_per_s"], "grid": peer_steps,
                                   "max_rel_diff_fp32": max_rel(ours[keep], theirs[keep]),
                                   "env": out.get("env", ""),
                                   "note": "values from a 3x3 re-run with TF32 off"
                                   if check is not out else ""}
    res["peers"] = peers
    fastest = max((p["points_per_s"] for p in peers.values() if "points_per_s" in p),
                  default=float("nan"))
    res["speedup_vs_fastest_peer"] = best / fastest
    for pname, p in peers.items():
        if "points_per_s" in p:
            p["our_speedup"] = best / p["points_per_s"]
            print(f"{pname} ({p['grid']}x{p['grid']}): {p['points_per_s']:,.2f} points/s; ours "
                  f"{p['our_speedup']:,.1f}x; max rel diff (fp32) {p['max_rel_diff_fp32']:.2e}",
                  flush=True)
        else:
            print(f"{pname}: skipped ({p['skipped']})", flush=True)
    print(f"floor {floor:,.0f} points/s ({flops / 1e6:,.1f} MFLOP/sample x {len(x)} samples at "
          f"{rate / 1e12:,.3f} TFLOP/s {rate_desc}); ours {100 * best / floor:.2f}% of it",
          flush=True)
    return res


def table(results: list[dict], dev: str) -> str:
    lines = [f"Device: {dev}", "",
             "| case | ours (points/s) | loss-landscapes | landscaper | ours / fastest peer | "
             "floor (points/s) | ours / floor | max rel diff fp32 (ll / ls) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        ll, ls = r["peers"].get("loss-landscapes", {}), r["peers"].get("landscaper", {})

        def cell(p):
            if "points_per_s" in p:
                return f"{p['points_per_s']:,.2f} ({p['grid']}x{p['grid']}; ours {p['our_speedup']:,.1f}x)"
            return "skipped"

        def diff(p):
            return f"{p['max_rel_diff_fp32']:.1e}" if "max_rel_diff_fp32" in p else "-"

        lines.append(
            f"| {r['case']} ({r['samples']} samples) | {r['ours_points_per_s']:,.1f} | {cell(ll)} | "
            f"{cell(ls)} | {r['speedup_vs_fastest_peer']:,.1f}x | {r['floor_points_per_s']:,.0f} | "
            f"{100 * r['floor_fraction']:.2f}% | {diff(ll)} / {diff(ls)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="mlp,resnet56")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--grid", type=int, default=51)
    ap.add_argument("--our-points", type=int, default=0,
                    help="time ours on the first N grid points only (0: all)")
    ap.add_argument("--our-points-resnet", type=int, default=0,
                    help="as --our-points, for the ResNet-56 case")
    ap.add_argument("--peer-grid-mlp", type=int, default=21)
    ap.add_argument("--peer-grid-resnet", type=int, default=5)
    ap.add_argument("--mlp-samples", type=int, default=4000)
    ap.add_argument("--resnet-samples", type=int, default=10000)
    ap.add_argument("--precision", default=None, choices=["fp32", "tf32", "bf16"],
                    help="ours: default bf16 on CUDA, fp32 on CPU (no fast bf16 there)")
    ap.add_argument("--compile", action="store_true", help="also time ours with torch.compile")
    ap.add_argument("--variants", default="",
                    help="extra variants of ours, comma-separated, tokens joined by '+': "
                         "vmap, nocl, nofuse, nostats, compile, autotune, gemm, chunkN, batchN, "
                         "own, recompute")
    ap.add_argument("--bn", default="own", choices=["own", "recompute"],
                    help="BatchNorm policy of ours (the peers use the stored statistics: own)")
    ap.add_argument("--profile-dir", default="",
                    help="write a torch.profiler kernel table of each variant of ours here")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--landscaper-python", default="")
    ap.add_argument("--landscaper-distance", type=float, default=0.5)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    args.variants_text = args.variants
    args.variants = [v for v in args.variants.split(",") if v]
    device = torch.device(args.device)
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    dev = device_name(device)
    rate, rate_desc = matmul_rate(device)
    print(f"device: {dev}; torch {torch.__version__}; matmul {rate / 1e12:.3f} TFLOP/s "
          f"({rate_desc})", flush=True)
    results = [bench_case(c, args, device, rate, rate_desc) for c in args.cases.split(",")]
    text = table(results, dev)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev, "torch": torch.__version__,
                                               "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
