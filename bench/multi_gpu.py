"""Benchmark: the atlas evaluation stage on 1, 2, ... N GPUs under torchrun (issue 9).

The launcher prepares a population and its embedding once (PCA on the span coordinates,
stored in a run directory), then for every world size N runs
``torchrun --standalone --nproc-per-node N`` over the evaluation stage: every rank decodes
and evaluates its share of the chunks of a latent grid (``compute_field`` with a
``LatentSource``), writing them into its own copy of the run (hard links of the prepared
one). Reported per N: points per second and the speed-up over N=1, and whether the field
equals the N=1 field bit for bit. ``--kill`` then runs the largest N with one rank
SIGKILLed after a few chunks, runs it again, and checks that the second run computed only
the missing chunks and that the field equals the N=1 field.

Cases: ``resnet56`` (CIFAR-shaped synthetic images) and ``transformer`` (the ~100M
model of ``bench/atlas_large.py``, synthetic tokens); populations are perturbations of
one initialisation (evaluation cost does not depend on training).

With one GPU, ``--backend gloo --gpus 1,2`` runs two ranks on the same GPU: the
distributed path (sharding, kill, resume, equality) is checked there, but the timings
are not a scaling measurement.

Usage::

    python bench/multi_gpu.py --case resnet56 --gpus 1,2,4,8 --kill
    python bench/multi_gpu.py --case transformer --gpus 1,2 --backend gloo --kill
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a smoke test of the script


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def make_case(case: str, n_samples: int):
    """(factory, data) for a case; data is generated from a fixed seed (same on every rank)."""
    g = torch.Generator().manual_seed(0)
    if case == "resnet56":
        from lossatlas.models import create

        def factory():
            return create("resnet56")

        data = (torch.randn(n_samples, 3, 32, 32, generator=g),
                torch.randint(0, 10, (n_samples,), generator=g))
        return factory, data
    sys.path.insert(0, str(HERE))
    from atlas_large import make_model, tokens

    return (lambda: make_model("100m")), tokens(n_samples, "100m", seed=0)


def prepare(args) -> Path:
    """Population file + PCA embedding in ``args.out / 'prepared'``."""
    from lossatlas import Atlas, Population

    base = args.out / "prepared"
    shutil.rmtree(args.out, ignore_errors=True)
    factory, data = make_case(args.case, args.samples)
    torch.manual_seed(0)
    model = factory()
    models = []
    for i in range(args.models):
        m = factory()
        m.load_state_dict(model.state_dict())
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.02 * (1 + i % 3) * p.detach().std().clamp_min(1e-3))
        models.append(m)
    pop = Population.from_models(models)
    pop.to_safetensors(base / "population.safetensors")
    pop = Population.from_safetensors(base / "population.safetensors", factory, mmap=True)
    atlas = Atlas(pop, data, base, device=DEVICE, precision="bf16")
    atlas.embed("pca", dim=2)
    np.save(base / "grid.npy", grid(atlas.box(0.2), args.resolution))
    return base


def grid(box, resolution: int) -> np.ndarray:
    lo, hi = box
    axes = [np.linspace(lo[i], hi[i], resolution) for i in range(len(lo))]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(lo))


def worker(args) -> None:
    """One rank: the evaluation stage over the prepared grid, into ``args.rundir``."""
    from lossatlas import Atlas, Population, Run, compute_field, distributed, store
    from lossatlas.points import LatentSource

    distributed.init_from_env()
    if args.deterministic:
        torch.backends.cudnn.deterministic = True
    kill_after = int(os.environ.get("BENCH_KILL_AFTER", "0"))
    kill_rank = int(os.environ.get("BENCH_KILL_RANK", "1"))
    written = []
    real_write = store.FieldWriter.write

    def write(self, k, values):
        real_write(self, k, values)
        written.append(k)
        if kill_after and distributed.rank() == kill_rank and len(written) >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    store.FieldWriter.write = write
    factory, data = make_case(args.case, args.samples)
    pop = Population.from_safetensors(args.rundir / "population.safetensors", factory, mmap=True)
    atlas = Atlas(pop, data, args.rundir, device=distributed.device(), precision="bf16")
    atlas.embed("pca", dim=2)  # reused from the prepared run
    # fixed sizes: the defaults follow free memory, which differs between set-ups
    atlas.evaluator.use_sizes(args.eval_chunk, min(args.samples, args.eval_batch))
    codes = np.load(args.rundir / "grid.npy")
    src = LatentSource(lambda c: atlas.decode(c), codes, "bench")
    atlas.evaluator.evaluate(atlas.decode(torch.as_tensor(codes[:2], dtype=torch.float32,
                                                          device=atlas.device)))  # warm-up
    sync()
    distributed.barrier()
    t0 = time.perf_counter()
    compute_field(atlas.evaluator, src, Run(args.rundir), "grid", chunk_points=args.chunk)
    sync()
    distributed.barrier()
    seconds = time.perf_counter() - t0
    mine = {"rank": distributed.rank(), "chunks": len(written), "seconds": seconds}
    (args.rundir / f"rank{distributed.rank()}.json").write_text(json.dumps(mine))


def launch(args, base: Path, n: int, tag: str, env_extra: dict | None = None,
           fresh: bool = True) -> tuple[int, Path]:
    run = args.out / tag
    if fresh:
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run, copy_function=os.link)
    env = {**os.environ, "LOSSATLAS_DIST_BACKEND": args.backend, **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={n}", str(Path(__file__).resolve()), "--worker",
           "--case", args.case, "--samples", str(args.samples), "--chunk", str(args.chunk),
           *(["--deterministic"] if args.deterministic else []),
           "--eval-chunk", str(args.eval_chunk), "--eval-batch", str(args.eval_batch),
           "--rundir", str(run)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode and not env_extra:
        print(proc.stdout[-2000:], proc.stderr[-4000:])
    return proc.returncode, run


def field_values(run: Path) -> np.ndarray:
    from lossatlas import Run

    return Run(run).open_field("grid")["loss"].values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=("resnet56", "transformer"), default="resnet56")
    ap.add_argument("--gpus", default="1,2")
    ap.add_argument("--backend", default="nccl", choices=("nccl", "gloo"))
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=8, help="points per stored chunk")
    ap.add_argument("--eval-chunk", type=int, default=8, help="points per forward")
    ap.add_argument("--eval-batch", type=int, default=1024, help="samples per forward")
    ap.add_argument("--kill", action="store_true")
    ap.add_argument("--deterministic", action="store_true",
                    help="cuDNN deterministic algorithms (no per-process autotuning)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_multi_gpu"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rundir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    sizes = [int(s) for s in args.gpus.split(",")]
    base = prepare(args)
    points = len(np.load(base / "grid.npy"))
    print(f"{args.case}: {args.models} models, {points} grid points, backend {args.backend}, "
          f"{torch.cuda.device_count()} x {device_name()}")
    rows, reference = [], None
    for n in sizes:
        code, run = launch(args, base, n, f"n{n}")
        if code:
            raise SystemExit(f"torchrun with {n} ranks failed (exit {code})")
        seconds = max(json.loads((run / f"rank{r}.json").read_text())["seconds"]
                      for r in range(n))
        values = field_values(run)
        reference = values if reference is None else reference
        rel = np.abs(values / reference - 1)
        rows.append({"ranks": n, "seconds": round(seconds, 3), "points_per_s": points / seconds,
                     "identical_to_1": bool(values.tobytes() == reference.tobytes()),
                     "max_rel_diff": float(np.nanmax(rel))})
    t1 = rows[0]["points_per_s"]
    print("\nranks  seconds  points/s  speed-up  efficiency  identical  max rel diff")
    for r in rows:
        r["speedup"] = r["points_per_s"] / t1
        r["efficiency"] = r["speedup"] / r["ranks"]
        print(f"{r['ranks']:5d} {r['seconds']:8.2f} {r['points_per_s']:9.1f} "
              f"{r['speedup']:8.2f}x {r['efficiency']:10.2f}  {r['identical_to_1']}  "
              f"{r['max_rel_diff']:.1e}")
    result = {"case": args.case, "backend": args.backend, "points": points, "rows": rows,
              "device": device_name(), "gpus": torch.cuda.device_count()}
    if args.kill:
        n = max(sizes) if max(sizes) > 1 else 2
        total = -(-points // args.chunk)
        code, run = launch(args, base, n, "kill", {"BENCH_KILL_AFTER": "2",
                                                   "BENCH_KILL_RANK": str(n - 1)})
        code2, run = launch(args, base, n, "kill", fresh=False)
        again = sum(json.loads((run / f"rank{r}.json").read_text())["chunks"]
                    for r in range(n))
        same = bool(code2 == 0 and field_values(run).tobytes() == reference.tobytes())
        result["kill"] = {"ranks": n, "first_exit": code, "second_exit": code2,
                          "chunks_total": total, "chunks_recomputed": again,
                          "identical_to_1": same}
        print(f"\nkill: {n} ranks, rank {n - 1} SIGKILLed after 2 chunks (exit {code}); "
              f"re-run (exit {code2}) computed {again} of {total} chunks; "
              f"field identical to 1 rank: {same}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
