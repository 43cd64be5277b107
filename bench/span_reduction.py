"""Benchmark: the Globscope autoencoder at full width vs on the exact span coordinates.

The full-width autoencoder (the paper's) reads every parameter: its first and last layers
are D x 128. The span-reduced one first maps the N models to their N-1 span coordinates
(exact on the population), trains the same autoencoder on those, and decodes back through
the basis. Same epochs, same seed. Reported per variant: reconstruction MSE over the
parameters (absolute and relative to the population's per-parameter variance), fit wall
time, peak memory of the fit, and decode throughput of a latent grid.

Population: ResNet-20 parameter vectors (``lossatlas.models.create("resnet20")``) of a
few "variants" (different initialisation seeds), each with a trajectory of checkpoints
moving from the initialisation towards a variant-specific endpoint, with noise that
decreases along the trajectory (N = variants x checkpoints, D = 272,474). Without
``lossatlas.models`` a random stand-in of the same size is used.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during the fit; on CPU the rise
of the process's peak RSS (``resource.getrusage``) during the fit, each variant in a fresh
process so the peaks do not mix.

Usage::

    python bench/span_reduction.py --quick                 # CPU, 25 epochs
    python bench/span_reduction.py --device cuda --epochs 2000
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import sys
import time

import torch

VARIANTS = ("full-width", "span-reduced")


def build_population(n_variants: int, per_variant: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """Tensor[n_variants * per_variant, D] float32 and a description of its source."""
    try:
        from lossatlas.models import create

        def init_vector(v: int) -> torch.Tensor:
            torch.manual_seed(seed * 1000 + v)
            net = create("resnet20")
            return torch.cat([p.detach().flatten() for p in net.parameters()])

        source = "resnet20 initialisations + synthetic trajectories"
    except ImportError:  # pragma: no cover - stand-in without the models module

        def init_vector(v: int) -> torch.Tensor:
            g = torch.Generator().manual_seed(seed * 1000 + v)
            return torch.randn(272_474, generator=g) * 0.1

        source = "random stand-in (lossatlas.models not available)"

    g = torch.Generator().manual_seed(seed)
    rows = []
    for v in range(n_variants):
        init = init_vector(v)
        std = float(init.std())
        delta = torch.randn(init.shape, generator=g) * 0.3 * std  # towards this variant's endpoint
        for k in range(per_variant):
            s = k / max(per_variant - 1, 1)
            progress = 1.0 - math.exp(-4.0 * s)
            noise = torch.randn(init.shape, generator=g) * 0.05 * std * math.exp(-3.0 * s)
            rows.append(init + progress * delta + noise)
    return torch.stack(rows), source


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_variant(variant: str, epochs: int, args: argparse.Namespace) -> dict:
    """Build the population, fit one variant for ``epochs``, measure; returns a result row."""
    from lossatlas.manifold import AutoencoderEmbedding, ReducedEmbedding

    torch.manual_seed(0)
    device = torch.device(args.device)
    X, source = build_population(args.variants, args.checkpoints, args.seed)
    X = X.to(device)
    N, D = X.shape
    ae = AutoencoderEmbedding(n_components=2, epochs=epochs, seed=args.seed, device=device)
    emb = ae if variant == "full-width" else ReducedEmbedding(ae)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = _peak_rss_bytes()
    t0 = time.perf_counter()
    emb.fit(X)
    if device.type == "cuda":
        torch.cuda.synchronize()
    fit_s = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = max(_peak_rss_bytes() - rss0, 0)

    errs = emb.reconstruction_errors(X)
    Xd = X.double()
    var = float((Xd - Xd.mean(dim=0)).square().mean())
    mse = float(errs.mean())

    # decode a latent grid over the codes' box, chunk by chunk (as a field computation does)
    Z = emb.encode(X).float()
    lo, hi = Z.min(dim=0).values, Z.max(dim=0).values
    side = int(math.isqrt(args.grid_points))
    axes = [torch.linspace(float(lo[i]), float(hi[i]), side) for i in range(2)]
    grid = torch.cartesian_prod(*axes).to(device)
    t0 = time.perf_counter()
    for start in range(0, len(grid), args.chunk):
        out = emb.decode(grid[start : start + args.chunk], device=device)
        del out
    if device.type == "cuda":
        torch.cuda.synchronize()
    decode_s = time.perf_counter() - t0

    inner = emb if variant == "full-width" else emb.inner_
    return {
        "variant": variant,
        "source": source,
        "device": str(device),
        "N": N,
        "D": D,
        "input_width": inner.n_features_in_,
        "epochs": epochs,
        "mse": mse,
        "relative_mse": mse / var,
        "final_train_loss": float(inner.loss_history_[-1]),
        "fit_s": fit_s,
        "peak_mem_MiB": peak / 2**20,
        "decode_points_per_s": len(grid) / decode_s,
        "threads": torch.get_num_threads(),
    }


def _child(variant: str, epochs: int, args: argparse.Namespace, queue: mp.Queue) -> None:
    queue.put(run_variant(variant, epochs, args))


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--quick",
        action="store_true",
        help="25 epochs and 256 grid points (default 2000 epochs, 1024 points): the "
        "full-width autoencoder takes seconds per epoch on a laptop CPU",
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--variants", type=int, default=7, help="number of variants (default 7)")
    p.add_argument(
        "--checkpoints", type=int, default=10, help="checkpoints per variant (default 10)"
    )
    p.add_argument("--grid-points", type=int, default=None, help="latent points to decode")
    p.add_argument("--chunk", type=int, default=256, help="latent points per decode chunk")
    p.add_argument(
        "--reduced-epochs",
        type=int,
        default=None,
        help="also run the span-reduced autoencoder for this many epochs (default with "
        "--quick: 2000, to show what it reaches in the time the full width takes for 25)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 25 if args.quick else 2000
    if args.reduced_epochs is None and args.quick:
        args.reduced_epochs = 2000
    if args.grid_points is None:
        args.grid_points = 256 if args.quick else 1024

    runs = [(variant, args.epochs) for variant in VARIANTS]
    if args.reduced_epochs:
        runs.append(("span-reduced", args.reduced_epochs))
    rows = []
    ctx = mp.get_context("spawn")
    for variant, epochs in runs:
        if args.device.startswith("cuda"):
            rows.append(run_variant(variant, epochs, args))
            continue
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(variant, epochs, args, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()

    r0 = rows[0]
    print(
        f"population: {r0['source']}; N={r0['N']}, D={r0['D']:,}; device {r0['device']}, "
        f"{r0['threads']} threads; latent 2"
    )
    header = (
        "variant",
        "epochs",
        "input width",
        "MSE",
        "rel. MSE",
        "fit s",
        "peak MiB",
        "decode pts/s",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(
            f"| {r['variant']} | {r['epochs']} | {r['input_width']:,} | {r['mse']:.3e} | {r['relative_mse']:.3e} "
            f"| {r['fit_s']:.1f} | {r['peak_mem_MiB']:.0f} | {r['decode_points_per_s']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
