"""Field throughput under the two BatchNorm policies: ``bn="recompute"`` against ``bn="own"``.

One invocation times, per model and precision, points/s of ``Evaluator.evaluate`` on the
first ``--points`` points of a 2-D random slice (``lossatlas.surfaces.random_slice``,
filter-normalised, seed 0) around a model whose BatchNorm running statistics were warmed
up on the data (train-mode passes), the points laid out with their statistics
(``ParamSpace(model, buffers=True)``; "recompute" ignores the stored ones):

- ``own``: ``bn="own"``, backend "auto" (``fast-bnfold``: BN folded into the convolutions,
  one point at a time over a large batch);
- ``own-vmap``: ``bn="own"``, ``backend="vmap"``, all samples in one batch;
- ``recompute``: ``bn="recompute"`` with all samples in one batch (one vmap pass: every
  BN layer normalises with the whole data's statistics under the point's weights);
- ``recompute-lbl``: ``bn="recompute"`` with ``batch_size = --lbl-batch`` (default a
  quarter of the samples): exact statistics layer by layer (one pass per BN layer, each
  stopping at its layer), then the evaluation pass;
- ``recompute-seq``: as ``recompute`` on the sequential backend (``functional_call`` one
  point after another, no vmap): what a per-point loop would give the recompute path;
- ``recompute-auto``: ``bn="recompute"`` with the Evaluator's own chunk and batch sizes
  (what a user gets; layer by layer whenever its default batch is below the samples);

``recompute-lbl`` and ``recompute-auto`` are timed on the first ``--slow-points``
points only (their cost per point does not depend on how many are timed);

and prints points/s, recompute/own ratios (against ``own``, the fastest own path), and
the max relative difference of each variant's losses to its policy's reference
(``recompute-lbl`` must equal ``recompute``; ``own-vmap`` must equal ``own``). The peer,
loss-landscapes 3.0.6 ``planar_interpolation`` (eval mode, the model's own statistics;
called as in ``bench/eval_throughput.py``), is timed on a ``--peer-grid`` sub-grid of
the models in ``--peer-models`` (default ResNet-20), so that issue 18's target
"recompute >= 5x the fastest peer's eval-mode throughput" can be read off.

``--profile`` adds, per model, the split of one recompute-lbl chunk into statistics
pass and evaluation pass, and torch.profiler's top operators for one chunk of
``recompute`` and of ``own``.

Example (GPU)::

    python bench/bn_policy.py --device cuda --precision fp32,bf16 --points 64 \\
        --samples 10000 --out bn_policy_h200.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from eval_throughput import device_name, max_rel, run_loss_landscapes, sync  # noqa: E402

from lossatlas import Evaluator, ParamSpace  # noqa: E402
from lossatlas.models import create  # noqa: E402
from lossatlas.surfaces import random_slice  # noqa: E402

VARIANTS = ("own", "own-vmap", "recompute", "recompute-lbl", "recompute-seq", "recompute-auto")
#: Variants that may compute statistics layer by layer: timed on ``--slow-points`` points.
SLOW = ("recompute-lbl", "recompute-auto")


class BNCNN(nn.Module):
    """Small BN CNN for 8x8 digits: (conv3x3-BN-ReLU-maxpool) x 2 (32, 64 channels), Linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, size: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(64 * (size // 4) ** 2, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def make_model(name: str, args) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """The model (eval mode, BN statistics warmed up on the data), inputs, targets, text."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    if name == "cnn":
        model: nn.Module = BNCNN()
        n = args.digits_samples
        x = torch.randn(n, 1, 8, 8, generator=g)
        what = f"BN CNN 1-32-64 (2 BN layers), {n} random 1x8x8 inputs (digits-size)"
    elif name in ("resnet20", "resnet56"):
        model = create(name, num_classes=10)
        n = args.samples
        x = torch.randn(n, 3, 32, 32, generator=g)
        nbn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        what = f"{name} ({nbn} BN layers), {n} random 3x32x32 inputs"
    else:
        raise SystemExit(f"bn_policy: unknown model {name!r}; use cnn, resnet20, resnet56")
    y = torch.randint(0, 10, (n,), generator=g)
    model.train()
    with torch.no_grad():  # non-trivial running statistics (momentum 0.1 over ~20 batches)
        for _ in range(2):
            for i in range(0, min(n, 2560), 256):
                model(x[i : i + 256])
    return model.eval(), x, y, what


def time_points(ev: Evaluator, points: torch.Tensor, reps: int, slow: bool = False
                ) -> tuple[float, torch.Tensor]:
    """Best-of-``reps`` points/s of ``ev.evaluate(points)`` after a warm-up: a whole chunk
    on CUDA (kernels, cuDNN autotuning, allocator), one point on the CPU or when ``slow``."""
    dev = ev.device
    warm = min(len(points), max(1, ev.chunk_size) if dev.type == "cuda" and not slow else 1)
    ev.evaluate(points[:warm])
    best, losses = float("inf"), None
    for _ in range(reps):
        sync(dev)
        t = time.perf_counter()
        losses = ev.evaluate(points)["loss"]
        sync(dev)
        best = min(best, time.perf_counter() - t)
    assert losses is not None
    return len(points) / best, losses


def make_evaluator(variant: str, model, x, y, space, device, precision, n, lbl_batch):
    common = dict(device=device, precision=precision, space=space)
    if variant == "own":
        return Evaluator(model, (x, y), bn="own", **common)
    if variant == "own-vmap":
        return Evaluator(model, (x, y), bn="own", backend="vmap", batch_size=n, **common)
    if variant == "recompute":
        # vmap as named (on the CPU "auto" runs recompute one point at a time)
        return Evaluator(model, (x, y), bn="recompute", backend="vmap", batch_size=n, **common)
    if variant == "recompute-lbl":
        return Evaluator(model, (x, y), bn="recompute", backend="vmap", batch_size=lbl_batch,
                         **common)
    if variant == "recompute-seq":
        return Evaluator(model, (x, y), bn="recompute", backend="sequential", batch_size=n,
                         **common)
    if variant == "recompute-auto":
        return Evaluator(model, (x, y), bn="recompute", **common)
    raise SystemExit(f"bn_policy: unknown variant {variant!r}; use {', '.join(VARIANTS)}")


def profile_lbl(model, x, y, space, points, device, precision, lbl_batch, n) -> dict:
    """Statistics pass vs evaluation pass of one chunk of recompute-lbl."""
    out: dict = {}
    ev = make_evaluator("recompute-lbl", model, x, y, space, device, precision, n, lbl_batch)
    chunk = points[: ev.chunk_size].to(ev.device, space.dtype)
    ev.evaluate(chunk[:1])
    with torch.no_grad():
        params = ev._point_params(chunk)
        sync(ev.device)
        t = time.perf_counter()
        stats = ev._statistics(params)
        sync(ev.device)
        t_stats = time.perf_counter() - t
        full = {**params, **stats}
        t = time.perf_counter()
        ev._accumulate(lambda xb: ev._point_outputs(full, xb), len(chunk))
        sync(ev.device)
        t_eval = time.perf_counter() - t
    out["lbl_chunk_points"] = len(chunk)
    out["lbl_statistics_s"], out["lbl_evaluation_s"] = t_stats, t_eval
    print(f"  profile recompute-lbl ({len(chunk)} points, batch {ev.batch_size}): statistics "
          f"{t_stats:.3f} s, evaluation {t_eval:.3f} s ({t_stats / t_eval:.1f}x)", flush=True)
    return out


def profile_model(model, x, y, space, points, device, precision, lbl_batch, n,
                  variants) -> dict:
    """Statistics vs evaluation pass of one recompute-lbl chunk; top operators of one
    chunk of recompute and of own (torch.profiler)."""
    out: dict = {}
    if "recompute-lbl" in variants:
        out.update(profile_lbl(model, x, y, space, points, device, precision, lbl_batch, n))
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for variant in ("recompute", "own"):
        ev = make_evaluator(variant, model, x, y, space, device, precision, n, lbl_batch)
        chunk = points[: ev.chunk_size]
        ev.evaluate(chunk[:1])
        with torch.profiler.profile(activities=acts) as prof:
            ev.evaluate(chunk)
            sync(device)
        try:
            table = prof.key_averages().table(sort_by=sort, row_limit=10)
        except Exception:  # noqa: BLE001 - newer PyTorch names it "device" time
            table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=10)
        out[f"profile_{variant}"] = table
        print(f"  profile {variant} ({len(chunk)} points, {ev.backend}):\n{table}", flush=True)
    return out


def bench_model(name: str, args, device: torch.device, precision: str) -> dict:
    model, x, y, what = make_model(name, args)
    space = ParamSpace(model, buffers=True)
    sl = random_slice(model, resolution=args.grid, span=1.0, seed=0, space=space)
    n_pts = min(args.points, args.grid ** 2)
    points = sl.source.points(0, n_pts).float()
    n = len(x)
    lbl_batch = args.lbl_batch or -(-n // 4)
    res: dict = {"model": name, "data": what, "samples": n, "precision": precision,
                 "points": n_pts, "dim": space.dim, "lbl_batch": lbl_batch, "variants": {}}
    print(f"\n== {what}; D = {space.dim:,} (with statistics); {n_pts} points of a "
          f"{args.grid}x{args.grid} random slice; {precision}", flush=True)
    losses: dict[str, torch.Tensor] = {}
    for variant in args.variants:
        ev = None
        try:
            ev = make_evaluator(variant, model, x, y, space, device, precision, n, lbl_batch)
            t0 = time.perf_counter()
            pts = points[: args.slow_points] if variant in SLOW else points
            pps, loss = time_points(ev, pts, args.reps, slow=variant in SLOW)
            entry = {"points_per_s": pps, "points": len(pts), "repr": repr(ev),
                     "backend": ev.backend,
                     "chunk_size": ev.chunk_size, "batch_size": ev.batch_size,
                     "wall_s": time.perf_counter() - t0}
            if variant in ("recompute", "recompute-seq") and ev.batch_size < n:
                entry["note"] = (f"batch size fell to {ev.batch_size} < {n} (out of memory): "
                                 "timed layer by layer")
            losses[variant] = loss
            print(f"{variant:14s} {pps:10.3f} points/s  {repr(ev)}", flush=True)
        except Exception as err:  # noqa: BLE001 - report and go on
            entry = {"skipped": f"{type(err).__name__}: {err}"}
            print(f"{variant:14s} skipped ({entry['skipped']})", flush=True)
        res["variants"][variant] = entry
        del ev
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for variant, ref in (("own-vmap", "own"), ("recompute-lbl", "recompute"),
                         ("recompute-seq", "recompute"), ("recompute-auto", "recompute")):
        if variant in losses and ref in losses:
            k = min(len(losses[variant]), len(losses[ref]))
            d = max_rel(losses[variant][:k].numpy(), losses[ref][:k].numpy())
            res["variants"][variant]["max_rel_diff_vs_" + ref] = d
            print(f"{variant} vs {ref}: max rel diff of the losses {d:.1e}", flush=True)
    if "own" in losses and "recompute" in losses:
        d = max_rel(losses["recompute"].numpy(), losses["own"].numpy())
        res["recompute_vs_own_loss_rel_diff"] = d  # different policies: not an error
    v = res["variants"]
    own = v.get("own", {}).get("points_per_s")
    if own:
        for variant in ("recompute", "recompute-lbl", "recompute-seq", "recompute-auto"):
            if "points_per_s" in v.get(variant, {}):
                v[variant]["ratio_vs_own"] = v[variant]["points_per_s"] / own
                print(f"{variant} / own: {100 * v[variant]['ratio_vs_own']:.1f}%", flush=True)
    if name in args.peer_models:
        try:
            pmask = space.mask(buffers=False)
            origin = ParamSpace(model).flatten(model)
            dirs = sl.directions[:, pmask].float()
            pps, _, _ = run_loss_landscapes(model, x, y, origin, dirs, -1.0, 1.0, args.peer_grid,
                                            device)
            res["peer"] = {"tool": "loss-landscapes 3.0.6 (eval mode, own statistics)",
                           "points_per_s": pps, "grid": args.peer_grid}
            rec = max((v[k].get("points_per_s", 0.0) for k in
                       ("recompute", "recompute-lbl", "recompute-seq", "recompute-auto")
                       if k in v), default=0.0)
            res["peer"]["best_recompute_over_peer"] = rec / pps
            print(f"loss-landscapes ({args.peer_grid}x{args.peer_grid}, eval mode): "
                  f"{pps:.3f} points/s; best recompute / peer = {rec / pps:.2f}x", flush=True)
        except Exception as err:  # noqa: BLE001 - report and go on
            res["peer"] = {"skipped": f"{type(err).__name__}: {err}"}
            print(f"loss-landscapes skipped ({res['peer']['skipped']})", flush=True)
    if args.profile:
        res["profile"] = profile_model(model, x, y, space, points, device, precision,
                                       lbl_batch, n, args.variants)
    return res


def table(results: list[dict], dev: str) -> str:
    def cell(r, k):
        e = r["variants"].get(k, {})
        if "points_per_s" not in e:
            return "-"
        ratio = f" ({100 * e['ratio_vs_own']:.0f}%)" if "ratio_vs_own" in e else ""
        return f"{e['points_per_s']:,.3g}{ratio}"

    lines = [f"Device: {dev}", "",
             "| model (samples) | precision | own (fast-bnfold) | own, vmap | recompute, 1 batch "
             "(% of own) | recompute, layer by layer (% of own) | recompute, sequential "
             "(% of own) | recompute, default sizes (% of own) | loss-landscapes (eval mode) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        p = r.get("peer", {})
        peer = (f"{p['points_per_s']:,.3g} (best recompute {p['best_recompute_over_peer']:.2f}x)"
                if "points_per_s" in p else "-")
        a = r["variants"].get("recompute-auto", {})
        auto = (f"{cell(r, 'recompute-auto')} (batch {a['batch_size']})" if "batch_size" in a
                else "-")
        lbl = cell(r, 'recompute-lbl')
        lbl += f" (batch {r['lbl_batch']})" if lbl != "-" else ""
        lines.append(f"| {r['model']} ({r['samples']:,}) | {r['precision']} | {cell(r, 'own')} | "
                     f"{cell(r, 'own-vmap')} | {cell(r, 'recompute')} | "
                     f"{lbl} | "
                     f"{cell(r, 'recompute-seq')} | {auto} | {peer} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="fp32",
                    help="comma-separated, from fp32, tf32, bf16 (bf16 is for the GPU)")
    ap.add_argument("--models", default="cnn,resnet20,resnet56")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--points", type=int, default=None,
                    help="points timed per variant (default 64 on CUDA, 8 on CPU)")
    ap.add_argument("--slow-points", type=int, default=None,
                    help="points timed for recompute-lbl and recompute-auto (default 8 on "
                         "CUDA, 2 on CPU)")
    ap.add_argument("--grid", type=int, default=51, help="the slice is grid x grid")
    ap.add_argument("--samples", type=int, default=None,
                    help="ResNet inputs (default 10,000 on CUDA, 2,000 on CPU)")
    ap.add_argument("--digits-samples", type=int, default=1797)
    ap.add_argument("--lbl-batch", type=int, default=0,
                    help="batch size of recompute-lbl (default: a quarter of the samples)")
    ap.add_argument("--peer-models", default="resnet20")
    ap.add_argument("--peer-grid", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    ap.add_argument("--out", default="", help="write the results as JSON to this file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bn_policy: --device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.points = args.points or (64 if device.type == "cuda" else 8)
    args.slow_points = args.slow_points or min(args.points, 8 if device.type == "cuda" else 2)
    args.samples = args.samples or (10000 if device.type == "cuda" else 2000)
    args.variants = [v for v in args.variants.split(",") if v]
    args.peer_models = [m for m in args.peer_models.split(",") if m]
    dev = device_name(device)
    print(f"device: {dev}; torch {torch.__version__}; threads {torch.get_num_threads()}",
          flush=True)
    results = []
    for precision in args.precision.split(","):
        for name in args.models.split(","):
            results.append(bench_model(name, args, device, precision))
            if args.out:  # partial results survive an interrupted run
                Path(args.out).write_text(json.dumps({"device": dev, "torch": torch.__version__,
                                                      "argv": sys.argv, "results": results},
                                                     indent=2, default=str))
    print("\n" + table(results, dev))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
