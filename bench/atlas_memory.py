"""Benchmark: the atlas of a population several times larger than its memory budget (CPU).

Writes a population of N random MLPs (40 -> H -> H -> 10) straight into a population file,
one model at a time, then builds the atlas (PCA on the span coordinates, a grid field,
merge tree, faithfulness) in a child process per mode:

- ``mapped``: the population memory-mapped, ``Atlas(memory_budget=...)``, basis on disk;
- ``memory``: the population loaded into memory, no budget.

Printed per mode: seconds per stage and the growth of peak resident memory over set-up
(the kernel's ``VmHWM``, reset after set-up; Linux only), and whether the two modes agree.

Usage::

    python bench/atlas_memory.py --models 12 --hidden 6000 --budget 512MB
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CHILD = """
import json, sys, time
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[5]))
from lossatlas import Atlas, Population
from lossatlas.topology import merge_tree

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

path, run, mode, budget, _, kw = sys.argv[1:7]
kw = json.loads(kw)
mapped = mode == "mapped"
t0 = time.perf_counter()
pop = Population.from_safetensors(path, "mlp", kw, mmap=mapped)
load = time.perf_counter() - t0
g = torch.Generator().manual_seed(0)
xy = (torch.randn(200, kw["in_features"], generator=g), torch.randint(0, 10, (200,), generator=g))
atlas = Atlas(pop, xy, run, memory_budget=budget if mapped else None)
merge_tree(np.random.default_rng(0).random((6, 6)))  # compile numba's kernels
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
times = {"load population": load}
for name, stage in (("embed (span + PCA)", lambda: atlas.embed("pca", dim=2)),
                    ("field", lambda: atlas.field(resolution=RES, refine=False)),
                    ("topology", lambda: atlas.topology()),
                    ("faithfulness", lambda: atlas.faithfulness())):
    t0 = time.perf_counter()
    stage()
    times[name] = time.perf_counter() - t0
print(json.dumps({"grew": status("VmHWM") - base, "times": times,
                  "samples": int(atlas.field_.n),
                  "codes": atlas.codes_.tolist(),
                  "loss": atlas.field_.values["log10_loss"].tolist()}))
"""


def write_population(path: Path, n: int, kw: dict) -> int:
    """N random MLPs streamed into a population file; returns D."""
    from lossatlas import ParamSpace, Population
    from lossatlas.models import create
    from lossatlas.population import _file_metadata
    from lossatlas.vectors import VectorFileWriter

    space = ParamSpace(create("mlp", **kw))
    labels = [{"variant": f"m{i}", "seed": i} for i in range(n)]
    meta = _file_metadata(labels, None, space, "mlp", kw)
    with VectorFileWriter(path, (n, space.dim), metadata=meta) as w:
        for i in range(n):
            torch.manual_seed(i)
            m = create("mlp", **kw)
            w.write_rows(i, space.flatten(m))
    Population.from_safetensors(path, mmap=True)  # checks the file opens as a population
    return space.dim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=6000)
    ap.add_argument("--budget", default="512MB")
    ap.add_argument("--resolution", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    kw = {"in_features": 40, "hidden": (args.hidden, args.hidden), "num_classes": 10}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pop.safetensors"
        t0 = time.perf_counter()
        D = write_population(path, args.models, kw)
        gb = args.models * D * 4 / 1e9
        print(f"population: {args.models} x {D / 1e6:.1f}M parameters = {gb:.2f} GB "
              f"(written in {time.perf_counter() - t0:.1f} s); budget {args.budget}")
        results = {}
        for mode in ("mapped", "memory"):
            child = CHILD.replace("RES", str(args.resolution))
            out = subprocess.run(
                [sys.executable, "-c", child, str(path), str(Path(tmp) / mode), mode,
                 args.budget, str(args.threads), json.dumps(kw)],
                capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{mode} run failed:\n{out.stderr[-3000:]}")
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[mode]
            print(f"\n{mode}: peak resident memory grew {r['grew'] / 1e6:.0f} MB; "
                  f"{r['samples']} field samples")
            for k, v in r["times"].items():
                print(f"  {k:<20s} {v:7.2f} s")
        a, b = results["mapped"], results["memory"]
        codes = float((torch.tensor(a["codes"]) - torch.tensor(b["codes"])).abs().max())
        loss = float((torch.tensor(a["loss"]) - torch.tensor(b["loss"])).abs().max())
        print(f"\nmapped vs memory: codes differ by {codes:.1e}, log10 loss by {loss:.1e}")
        if args.json:
            args.json.write_text(json.dumps({"models": args.models, "dim": D, "gb": gb,
                                             "budget": args.budget, "results": {
                                                 k: {"grew_mb": v["grew"] / 1e6,
                                                     "times": v["times"]}
                                                 for k, v in results.items()},
                                             "codes_diff": codes, "loss_diff": loss},
                                            indent=1))


if __name__ == "__main__":
    main()
