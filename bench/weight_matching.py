"""Weight matching: time and memory on ResNet-20 by width, against the `rebasin` package;
and the loss barrier vs width of MLPs on MNIST-1D before and after matching.

Part 1 (one subprocess per width and implementation, so peak memory is clean):
lossatlas ``weight_matching`` vs rebasin 0.0.47 ``PermutationCoordinateDescent`` on two
independently initialised ResNet-20s of width 1, 4, 16, reporting seconds, peak memory
(CUDA: ``max_memory_allocated``; CPU: growth of the process's peak RSS), whether the
aligned model still computes model_b's function, the parameter distance to model_a
before / after, and whether a randomly permuted copy of model_a is recovered exactly.
rebasin is imported from its own environment (``--rebasin-site``, made with
``pip install --no-deps rebasin torchview graphviz`` into ``.bench/rebasin-venv``) on top
of our torch; if it is missing or fails on the model, a note is printed instead.

Part 2: pairs of MLPs 40-w-w-10 trained on MNIST-1D (seeds 0 and 1) for each width
``w``; test-set loss barrier (entezari) before and after weight matching; a PNG plot and
a JSON file are written to ``--out``.

Example::

    python bench/weight_matching.py --quick                 # CPU, widths 1 and 4, 3 MLPs
    python bench/weight_matching.py --device cuda           # widths 1, 4, 16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

REBASIN_SITE = ROOT / ".bench/rebasin-venv/lib/python3.11/site-packages"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])


def one_width(width: int, impl: str, device: str, rebasin_site: str) -> dict:
    """Match two random ResNet-20s of ``width`` with ``impl``; run in a fresh process."""
    from lossatlas import models
    from lossatlas.symmetry import (
        permutation_spec,
        permute_model,
        random_permutation,
        weight_matching,
    )

    if device == "cpu":
        torch.set_num_threads(1)  # stable timings on a shared machine; same for both
    torch.manual_seed(0)
    a = models.create("resnet20", width=width).to(device).eval()
    b = models.create("resnet20", width=width).to(device).eval()
    x = torch.randn(8, 3, 32, 32, device=device)
    spec = permutation_spec(a.cpu(), x.cpu())
    a.to(device)
    copy_b = permute_model(a, spec, random_permutation(spec, torch.Generator().manual_seed(1)))
    if impl == "rebasin":
        sys.path.append(rebasin_site)
        try:
            from rebasin import PermutationCoordinateDescent
        except ImportError as err:
            return {"impl": impl, "width": width, "note": f"rebasin not importable: {err}"}

        def match(m_a, m_b):
            m_b = __import__("copy").deepcopy(m_b)
            pcd = PermutationCoordinateDescent(m_a, m_b, x, device_a=device, device_b=device)
            pcd.rebasin()
            return m_b
    else:
        def match(m_a, m_b):
            return weight_matching(m_a, m_b, spec=spec, device=device)

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    try:
        aligned = match(a, b)
    except Exception as err:  # noqa: BLE001 - a peer failing on our model is a result
        return {"impl": impl, "width": width, "note": f"failed: {type(err).__name__}: {err}"}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _peak_rss_mb() - rss0
    with torch.no_grad():
        func = float((aligned.eval()(x) - b(x)).abs().max())
    d0 = float((_flat(a) - _flat(b)).norm())
    d1 = float((_flat(a) - _flat(aligned)).norm())
    recovered = match(a, copy_b)
    sa, sr = a.state_dict(), recovered.state_dict()
    exact = all(torch.equal(sa[k], sr[k]) for k in sa)
    return {
        "impl": impl, "width": width, "params": sum(p.numel() for p in a.parameters()),
        "seconds": seconds, "peak_mb": peak, "function_diff": func, "dist_before": d0,
        "dist_after": d1, "recovers_permuted_copy": exact,
    }


def part1(widths: list[int], device: str, rebasin_site: str) -> list[dict]:
    rows = []
    for width in widths:
        for impl in ("lossatlas", "rebasin"):
            cmd = [sys.executable, __file__, "--one-width", str(width), "--impl", impl,
                   "--device", device, "--rebasin-site", rebasin_site]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
                rows.append({"impl": impl, "width": width, "note": f"crashed: {tail}"})
            else:
                rows.append(json.loads(lines[-1]))
            print(_fmt_row(rows[-1]), flush=True)
    return rows


def _fmt_row(r: dict) -> str:
    if "note" in r:
        return f"{r['impl']:>9} width {r['width']:>2}: {r['note'][:150]}"
    return (f"{r['impl']:>9} width {r['width']:>2} ({r['params'] / 1e6:6.2f}M params): "
            f"{r['seconds']:8.2f} s, peak {r['peak_mb']:8.1f} MiB, function diff "
            f"{r['function_diff']:.1e}, distance {r['dist_before']:.1f} -> {r['dist_after']:.1f}, "
            f"recovers permuted copy: {r['recovers_permuted_copy']}")


def _train_mlp(width: int, seed: int, splits, steps: int, device: str) -> nn.Module:
    from lossatlas import models

    torch.manual_seed(seed)
    m = models.create("mlp", in_features=40, hidden=(width, width)).to(device)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    x, y = splits.x_train.to(device), splits.y_train.to(device)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen).to(device)
        loss = nn.functional.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def part2(widths: list[int], steps: int, device: str, out: Path) -> list[dict]:
    from lossatlas import data
    from lossatlas.connectivity import barrier
    from lossatlas.symmetry import weight_matching

    if device == "cpu":
        torch.set_num_threads(1)
    splits = data.create("mnist1d")
    test = (splits.x_test, splits.y_test)
    rows = []
    for w in widths:
        a = _train_mlp(w, 0, splits, steps, device)
        b = _train_mlp(w, 1, splits, steps, device)
        with torch.no_grad():
            acc = [float((m(splits.x_test.to(device)).argmax(1).cpu() == splits.y_test)
                         .float().mean()) for m in (a, b)]
        t0 = time.perf_counter()
        aligned = weight_matching(a, b, device=device)
        secs = time.perf_counter() - t0
        before = barrier(a, b, test, device=device)
        after = barrier(a, aligned, test, device=device)
        err_before = barrier(a, b, test, metric="error", device=device)
        err_after = barrier(a, aligned, test, metric="error", device=device)
        rows.append({"width": w, "test_acc_a": acc[0], "test_acc_b": acc[1],
                     "loss_barrier_before": before, "loss_barrier_after": after,
                     "error_barrier_before": err_before, "error_barrier_after": err_after,
                     "matching_s": secs})
        print(f"MLP 40-{w}-{w}-10: test acc {acc[0]:.3f}/{acc[1]:.3f}; loss barrier "
              f"{before:.4f} -> {after:.4f}; error barrier {err_before:.4f} -> "
              f"{err_after:.4f}; matching {secs:.2f} s", flush=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        ws = [r["width"] for r in rows]
        for ax, key, label in ((axes[0], "loss", "loss barrier (nats)"),
                               (axes[1], "error", "error barrier")):
            ax.plot(ws, [r[f"{key}_barrier_before"] for r in rows], "o-", label="naive")
            ax.plot(ws, [r[f"{key}_barrier_after"] for r in rows], "s-",
                    label="after weight matching")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("hidden width")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle(f"MLP 40-w-w-10 on MNIST-1D (test set, {steps} Adam steps, entezari)")
        fig.tight_layout()
        fig.savefig(out / "barrier_vs_width.png", dpi=120)
        plt.close(fig)
    except ImportError:
        print("matplotlib missing: no plot")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="widths 1 and 4; 3 MLP widths")
    p.add_argument("--widths", type=int, nargs="*", help="ResNet-20 widths (default 1 4 16)")
    p.add_argument("--mlp-widths", type=int, nargs="*")
    p.add_argument("--mlp-steps", type=int, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "runs/bench/weight_matching")
    p.add_argument("--rebasin-site", default=str(REBASIN_SITE))
    p.add_argument("--skip-resnet", action="store_true")
    p.add_argument("--skip-mlp", action="store_true")
    p.add_argument("--one-width", type=int, help=argparse.SUPPRESS)
    p.add_argument("--impl", default="lossatlas", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one_width is not None:
        print(json.dumps(one_width(args.one_width, args.impl, args.device, args.rebasin_site)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    widths = args.widths or ([1, 4] if args.quick else [1, 4, 16])
    mlp_widths = args.mlp_widths or ([32, 128, 512] if args.quick else [32, 64, 128, 256, 512, 1024])
    steps = args.mlp_steps or (1000 if args.quick else 3000)
    print(f"device {args.device}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    result: dict = {"device": args.device, "torch": torch.__version__}
    if not args.skip_resnet:
        print("== weight matching, ResNet-20 (two random inits) ==")
        result["resnet20"] = part1(widths, args.device, args.rebasin_site)
    if not args.skip_mlp:
        print(f"== barrier vs width, MLPs on MNIST-1D ({steps} steps) ==")
        result["mlp_mnist1d"] = part2(mlp_widths, steps, args.device, args.out)
    (args.out / "weight_matching.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'weight_matching.json'}")


if __name__ == "__main__":
    main()
