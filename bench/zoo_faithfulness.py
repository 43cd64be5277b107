"""Benchmark: atlas faithfulness on every family of the test model zoo (``tests/zoo.py``).

For each family: train its population (3 learning rates x 3 checkpoints, written to
disk as state dicts), read it back with ``Population.from_checkpoints``, build the atlas
with realistic settings (autoencoder with its defaults, refined field) on all samples
(the 1,797 digits; the 512 token sequences for the transformer), and report:

- decoded raw loss relative error, median over the models (target <= 1%);
- the field at held-out codes (``median_decades.field_loo``, target <= 0.05 decades);
- basins holding models against the number of variants (target: between #variants
  and #variants + 3) and basins mixing variants (target: none);
- the fraction of non-finite field samples; seconds (training, atlas).

    .venv/bin/python bench/zoo_faithfulness.py [--families mlp,resnet] [--resolution 32]
                                               [--budget 2000] [--threads 1] [--out FILE]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import zoo  # noqa: E402

import lossatlas  # noqa: E402
from lossatlas import Population  # noqa: E402


def run_family(name: str, work: Path, resolution: int, budget: int) -> dict:
    fam = zoo.FAMILIES[name]
    t0 = time.perf_counter()
    folder = zoo.population_dir(name, work / name / "ckpt")
    t_train = time.perf_counter() - t0
    pop = Population.from_checkpoints(folder, fam.factory)
    x, y = fam.data()
    t1 = time.perf_counter()
    atlas = lossatlas.Atlas(pop, (x, y), work / name / "atlas")
    atlas.embed("ae", dim=2)
    atlas.field(resolution=resolution, budget=budget)
    atlas.topology()
    faith = atlas.faithfulness()
    t_atlas = time.perf_counter() - t1
    basins = atlas.summary()["basins"]
    loss = np.asarray(atlas.field_.values["loss"])
    n_var = basins["num_variants"]
    return {
        "family": name, "bn": atlas.bn, "params": int(pop.space.dim), "models": len(pop),
        "samples": len(y), "variants": n_var,
        "decoded_rel_error_median": faith["decoded_loss_relative_error_median"],
        "field_loo_decades_median": faith["median_decades"]["field_loo"],
        "field_at_model_decades_median": faith["median_decades"]["field_at_model"],
        "basins_with_models": basins["num_model_basins"], "basins": basins["num_basins"],
        "mixing_basins": sum(1 for b in basins["variants_per_basin"] if len(b) > 1),
        "variants_per_basin": basins["variants_per_basin"],
        "nonfinite_fraction": float(np.mean(~np.isfinite(loss))),
        "field_samples": int(atlas.field_.n),
        "true_loss_range": [float(min(faith["per_model"]["true_loss"])),
                            float(max(faith["per_model"]["true_loss"]))],
        "seconds_train": round(t_train, 1), "seconds_atlas": round(t_atlas, 1),
        "targets_met": bool(
            faith["decoded_loss_relative_error_median"] <= 0.01
            and faith["median_decades"]["field_loo"] <= 0.05
            and n_var <= basins["num_model_basins"] <= n_var + 3
            and all(len(b) == 1 for b in basins["variants_per_basin"])),
    }


def table(rows: list[dict]) -> str:
    head = ("| family | BN policy | params | samples | decoded loss rel. err. (median) | "
            "field at held-out codes (decades, median) | basins with models / variants | "
            "mixing basins | non-finite | field samples | s train / atlas | targets |")
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['bn']} | {r['params']:,} | {r['samples']} | "
            f"{100 * r['decoded_rel_error_median']:.3f}% | {r['field_loo_decades_median']:.3f} | "
            f"{r['basins_with_models']} / {r['variants']} | {r['mixing_basins']} | "
            f"{r['nonfinite_fraction']:.3f} | {r['field_samples']} | "
            f"{r['seconds_train']:.0f} / {r['seconds_atlas']:.0f} | "
            f"{'met' if r['targets_met'] else 'missed'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(zoo.FAMILIES))
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--budget", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON file of the rows")
    ap.add_argument("--work", type=Path, default=None, help="Where checkpoints and runs go")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="zoo_faithfulness_"))
    rows = []
    for name in args.families.split(","):
        row = run_family(name, work, args.resolution, args.budget)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out is not None:
            args.out.write_text(json.dumps({"resolution": args.resolution,
                                            "budget": args.budget, "threads": args.threads,
                                            "torch": torch.__version__, "rows": rows}, indent=1))
    print(f"\nresolution {args.resolution}, budget {args.budget}, {args.threads} thread(s), "
          f"torch {torch.__version__}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
