"""Benchmark: lossatlas.topology (persistence, merge tree) against gudhi's cubical persistence.

Smooth random 2-D fields (Gaussian-filtered noise) of several sizes; best of ``--repeat``
runs each; JIT compile time is measured apart, in fresh processes with an empty numba cache
(compile) and with the cache filled (load), and excluded from the table.

    .venv/bin/python bench/merge_tree.py [--sizes 41 101 512 1001] [--repeat 3]
                                         [--landscaper-venv PATH]

``--landscaper-venv`` points at a virtual environment with ``topopy`` and ``nglpy`` (they pin
numpy<2, so never in ours); landscaper's merge tree (``topopy.MergeTree`` over
``nglpy.EmptyRegionGraph(beta=1.0, relaxed=False, p=2.0)``, as in ``landscaper.tda``) is then
timed in a subprocess on the same saved fields, with ``--landscaper-timeout`` seconds per size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

WARMUP = """
import time, numpy as np
t = time.perf_counter()
import lossatlas.topology as T
t1 = time.perf_counter()
T.merge_tree(np.random.default_rng(0).random((8, 8)))
T.graph_merge_tree(np.random.default_rng(0).random(8), np.array([[0, 1], [1, 2]]))
print(t1 - t, time.perf_counter() - t1)
"""

TOPOPY = """
import sys, time, numpy as np, nglpy as ngl, topopy as tp
f = np.load(sys.argv[1])
n0, n1 = f.shape
coords = np.array([[float(i), float(j)] for i in range(n0) for j in range(n1)])
t = time.perf_counter()
tree = tp.MergeTree(graph=ngl.EmptyRegionGraph(beta=1.0, relaxed=False, p=2.0))
tree.build(coords, f.reshape(-1))
print(time.perf_counter() - t, len(tree.leaves))
"""


def smooth_field(n: int, seed: int) -> np.ndarray:
    """float64 [n, n]: white noise filtered with a Gaussian of n / 64 cells (at least 1)."""
    return gaussian_filter(np.random.default_rng(seed).standard_normal((n, n)), max(1.0, n / 64))


def best_time(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall s, best process CPU s, result): CPU time is less sensitive to a busy host."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu, out


def jit_cost() -> tuple[float, float, float]:
    """(import s, first call with an empty cache s, first call with a filled cache s)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", WARMUP], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            runs.append((float(out[0]), float(out[1])))
    return runs[0][0], runs[0][1], runs[1][1]


def gudhi_pairs(f: np.ndarray) -> np.ndarray:
    import gudhi

    cc = gudhi.CubicalComplex(vertices=f)
    cc.persistence()
    return cc.persistence_intervals_in_dimension(0)


def run_topopy(venv: Path, f: np.ndarray, tmp: Path, timeout: float) -> str:
    path = tmp / f"field_{f.shape[0]}.npy"
    np.save(path, f)
    try:
        out = subprocess.run([str(venv / "bin" / "python"), "-c", TOPOPY, str(path)],
                             check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"> {timeout:.0f} s"
    except subprocess.CalledProcessError as err:
        return "failed: " + err.stderr.strip().splitlines()[-1][:60]
    seconds, leaves = out.stdout.split()
    return f"{float(seconds):.3f} s ({leaves} leaves)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[41, 101, 512, 1001])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--landscaper-venv", type=Path, default=None)
    parser.add_argument("--landscaper-timeout", type=float, default=120.0)
    args = parser.parse_args()

    import gudhi

    import lossatlas.topology as T

    imp, cold, warm = jit_cost()
    print(f"lossatlas.topology import {imp:.2f} s; JIT compile (empty numba cache) {cold:.2f} s; "
          f"first call with cache filled {warm:.2f} s (excluded below)")
    T.merge_tree(np.random.default_rng(0).random((8, 8)))  # warm-up in this process
    print(f"gudhi {gudhi.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; best of {args.repeat}; "
          f"field = gaussian-filtered noise (sigma n/64)\n")

    header = (f"{'grid':>13} | {'pairs':>5} | {'persistence':>11} | {'merge_tree':>10} | "
              f"{'tree auto':>9} | {'gudhi':>8} | {'gudhi/pers':>10} | {'gudhi/tree':>10} | "
              f"{'cpu ratio':>9} | match")
    print(header)
    print("-" * len(header))
    topopy_rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for n in args.sizes:
            f = smooth_field(n, args.seed)
            t_p, _, pairs = best_time(lambda f=f: T.persistence(f), args.repeat)
            t_t, c_t, _ = best_time(lambda f=f: T.merge_tree(f), args.repeat)
            t_a, _, _ = best_time(lambda f=f: T.merge_tree(f, threshold="auto"), args.repeat)
            t_g, c_g, g = best_time(lambda f=f: gudhi_pairs(f), args.repeat)
            g = g[(g[:, 1] > g[:, 0]) | np.isinf(g[:, 1])]
            same = pairs.shape == g.shape and np.array_equal(
                np.sort(pairs, axis=0), np.sort(g, axis=0))
            print(f"{n:>5} x {n:<5} | {pairs.shape[0]:>5} | {t_p:>9.4f} s | {t_t:>8.4f} s | "
                  f"{t_a:>7.4f} s | {t_g:>6.3f} s | {t_g / t_p:>9.1f}x | {t_g / t_t:>9.1f}x | "
                  f"{c_g / c_t:>8.1f}x | {'yes' if same else 'NO'}")
            if args.landscaper_venv is not None:
                topopy_rows.append((n, t_t, T.merge_tree(f).n_leaves, run_topopy(args.landscaper_venv, f, Path(tmpdir),
                                                       args.landscaper_timeout)))
    print("\nseconds are wall clock. persistence: pairs only; merge_tree: tree + basin labels, "
          "threshold 0; tree auto: threshold='auto' (cut at the largest persistence gap);\n"
          "cpu ratio: gudhi / merge_tree in process CPU time; match: same pairs as gudhi")
    if topopy_rows:
        print("\nlandscaper's merge tree (topopy.MergeTree, EmptyRegionGraph beta=1), own venv:")
        for n, t_t, leaves, res in topopy_rows:
            print(f"{n:>5} x {n:<5} | topopy {res} | lossatlas merge_tree {t_t:.4f} s "
                  f"({leaves} leaves)")


if __name__ == "__main__":
    main()
