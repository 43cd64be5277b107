"""Benchmark: the whole atlas of a population of ~100M-parameter transformers on one GPU.

A 12-layer pre-LN transformer (d_model 768, 12 heads, MLP 3072, 8192-token vocabulary,
sequences of 128 tokens; 98M parameters, ``lossatlas.models.ModularTransformer``) is
trained on synthetic tokens (the label of a sequence is its first token: the model must
carry it across 127 positions; it is one of 16 marker tokens). Several runs (own seeds and learning rates) checkpoint
along the way; the checkpoints are the population. Then the atlas, stage by stage: load
the population (streamed into one memory-mapped file with ``--mapped``), span reduction +
autoencoder, refined loss field, merge tree, faithfulness.

Printed: seconds per stage, and for the field stage the achieved matmul FLOP/s as a
fraction of the device's bf16 dense GEMM rate measured here (8192^3 products). Forward
FLOPs per sample are counted exactly from the shapes: the linear layers over all 128
positions, the two attention products (causal, computed in full), the unembedding at the
last position.

Usage::

    python bench/atlas_large.py --device cuda                    # the H100/H200 run
    python bench/atlas_large.py --device cuda --mapped --memory-budget 8GB
    python bench/atlas_large.py --device cpu --tiny              # a smoke test
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from lossatlas import Atlas, Population, Run
from lossatlas.models.transformer import ModularTransformer

SIZES = {
    "100m": {"p": 8192, "d_model": 768, "num_heads": 12, "num_layers": 12, "d_mlp": 3072,
             "seq_len": 128},
    "tiny": {"p": 64, "d_model": 32, "num_heads": 2, "num_layers": 2, "d_mlp": 64,
             "seq_len": 16},
}


def make_model(size: str) -> nn.Module:
    return ModularTransformer(norm="pre", activation="gelu", **SIZES[size])


def tokens(n: int, size: str, seed: int, classes: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of random tokens whose first token is one of ``classes`` marker tokens;
    the label is that marker (to be carried across the sequence by attention)."""
    cfg = SIZES[size]
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, cfg["p"], (n, cfg["seq_len"]), generator=g)
    x[:, 0] = torch.randint(0, classes, (n,), generator=g)
    return x, x[:, 0].clone()


def forward_flops(size: str) -> float:
    """Matmul FLOPs of one forward pass of one sequence."""
    c = SIZES[size]
    d, t, L = c["d_model"], c["seq_len"], c["num_layers"]
    linear = L * (4 * d * d + 2 * d * c["d_mlp"]) * t * 2
    attention = L * 2 * (t * t * d) * 2
    return float(linear + attention + 2 * d * c["p"])


def matmul_rate(device: torch.device) -> float:
    """Dense GEMM FLOP/s: bf16 8192^3 on CUDA, fp32 1024^3 on CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_population(size: str, runs: int, steps: int, every: int, device: torch.device,
                     out: Path) -> list[Path]:
    """Checkpoints (safetensors) of ``runs`` training runs, every ``every`` steps."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    lrs = [3e-4, 1e-4, 6e-4, 2e-4, 4e-4, 1.5e-4, 5e-4, 2.5e-4]
    for r in range(runs):
        torch.manual_seed(r)
        model = make_model(size).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=lrs[r % len(lrs)], weight_decay=0.01)
        x, y = tokens(steps * 32, size, seed=100 + r)
        x, y = x.to(device), y.to(device)
        for step in range(1, steps + 1):
            xb, yb = x[(step - 1) * 32: step * 32], y[(step - 1) * 32: step * 32]
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=device.type == "cuda"):
                loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % every == 0:
                p = out / f"run{r}_seed{r}_step{step:05d}.safetensors"
                save_file({k: v.detach().contiguous().cpu() for k, v in
                           model.state_dict().items()}, str(p))
                (out / f"{p.stem}.json").write_text(json.dumps(
                    {"variant": f"lr{lrs[r % len(lrs)]:g}", "seed": r, "step": step,
                     "train_loss": loss.item()}))
                paths.append(p)
        print(f"  run {r}: final train loss {loss.item():.3f}", flush=True)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a small model (smoke test)")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--samples", type=int, default=256, help="evaluation sequences")
    ap.add_argument("--resolution", type=int, default=24)
    ap.add_argument("--budget", type=int, default=1200, help="field samples")
    ap.add_argument("--epochs", type=int, default=4000, help="autoencoder epochs")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--compare-backends", action="store_true")
    ap.add_argument("--compile", action="store_true",
                    help="Atlas(compile=True): each point's forward through torch.compile")
    ap.add_argument("--mapped", action="store_true",
                    help="stream the checkpoints into a memory-mapped population file")
    ap.add_argument("--memory-budget", default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_atlas_large"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    size = "tiny" if args.tiny else "100m"
    device = torch.device(args.device)
    shutil.rmtree(args.out, ignore_errors=True)
    rate = matmul_rate(device)
    n_params = sum(p.numel() for p in make_model(size).parameters())
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; "
          f"model {n_params / 1e6:.1f}M parameters; GEMM rate {rate / 1e12:.0f} TFLOP/s")

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    paths = train_population(size, args.runs, args.steps, args.every, device,
                             args.out / "checkpoints")
    stages["train population (not atlas)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pop = Population.from_checkpoints(
        [str(p) for p in paths], lambda: make_model(size),
        out=args.out / "atlas" / "population.safetensors" if args.mapped else None)
    stages["load population"] = time.perf_counter() - t0
    print(f"population: {len(pop)} models x {pop.dim / 1e6:.1f}M parameters "
          f"({len(pop) * pop.dim * 4 / 1e9:.1f} GB fp32{', mapped' if pop.is_mapped else ''})")

    data = tokens(args.samples, size, seed=999)
    atlas = Atlas(pop, data, args.out / "atlas", device=device, precision="bf16",
                  memory_budget=args.memory_budget, backend=args.backend, compile=args.compile)
    print(f"evaluator backend: {atlas.evaluator.backend}")
    t0 = time.perf_counter()
    atlas.embed("ae", dim=2, epochs=args.epochs)
    sync(device)
    stages["embed (span reduction + autoencoder)"] = time.perf_counter() - t0

    before = atlas.evaluator.points_evaluated
    t0 = time.perf_counter()
    atlas.field(resolution=args.resolution, budget=args.budget, progress=True)
    sync(device)
    field_s = time.perf_counter() - t0
    points = atlas.evaluator.points_evaluated - before
    stages["field (decode + evaluate, refined)"] = field_s

    # evaluation alone, on decoded points already on the device
    z = torch.as_tensor(atlas.field_.coords[:64], dtype=torch.float32, device=device)
    pts = atlas.decode(z)
    atlas.evaluator.evaluate(pts[:4])
    sync(device)
    t0 = time.perf_counter()
    atlas.evaluator.evaluate(pts)
    sync(device)
    eval_s = (time.perf_counter() - t0) / len(pts)
    del pts

    backends = {}
    if args.compare_backends:
        from lossatlas import Evaluator

        pts = atlas.decode(z[:32])
        for b in ("vmap", "sequential", "compiled"):
            ev = Evaluator(pop.model(0), data, device=device, precision="bf16", backend=b,
                           compile=b == "compiled")
            ev.evaluate(pts[:2])
            sync(device)
            t1 = time.perf_counter()
            ev.evaluate(pts)
            sync(device)
            backends[b] = len(pts) / (time.perf_counter() - t1)
            print(f"  backend {b}: {backends[b]:.1f} points/s "
                  f"(chunk {ev.chunk_size}, batch {ev.batch_size})")
        del pts

    t0 = time.perf_counter()
    atlas.topology()
    stages["topology (merge tree)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    faith = atlas.faithfulness()
    stages["faithfulness"] = time.perf_counter() - t0

    flops_point = forward_flops(size) * args.samples
    field_rate = points * flops_point / field_s
    eval_rate = flops_point / eval_s
    summary = atlas.summary()
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "params": n_params, "models": len(pop),
        "mapped": pop.is_mapped, "memory_budget": args.memory_budget,
        "backend": atlas.evaluator.backend, "samples": args.samples,
        "tokens_per_point": args.samples * SIZES[size]["seq_len"],
        "gemm_tflops": rate / 1e12, "stages_s": {k: round(v, 2) for k, v in stages.items()},
        "field_points": points, "field_points_per_s": points / field_s,
        "field_tflops": field_rate / 1e12, "field_fraction_of_gemm": field_rate / rate,
        "eval_only_points_per_s": 1 / eval_s, "eval_only_tflops": eval_rate / 1e12,
        "eval_only_fraction_of_gemm": eval_rate / rate, "backends_points_per_s": backends,
        "basins": summary["basins"]["num_basins"],
        "basins_with_models": summary["basins"]["num_model_basins"],
        "decoded_loss_rel_error_median": faith["decoded_loss_relative_error_median"],
        "field_loo_decades_median": faith["median_decades"]["field_loo"],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "peak_gpu_gb": (torch.cuda.max_memory_allocated() / 1e9
                        if device.type == "cuda" else None),
        "stored_stages": Run(args.out / "atlas").read().get("stages", {}),
    }
    print("\nstage                                   seconds")
    for k, v in stages.items():
        print(f"  {k:<38s} {v:8.2f}")
    print(f"field: {points} points, {points / field_s:.1f} points/s, "
          f"{field_rate / 1e12:.0f} TFLOP/s = {100 * field_rate / rate:.1f}% of GEMM")
    print(f"evaluation alone: {1 / eval_s:.1f} points/s, {eval_rate / 1e12:.0f} TFLOP/s = "
          f"{100 * eval_rate / rate:.1f}% of GEMM")
    print(f"basins {result['basins']} (with models {result['basins_with_models']}); "
          f"decoded loss rel. error {result['decoded_loss_rel_error_median']:.2e}; "
          f"peak RSS {result['peak_rss_gb']:.1f} GB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
