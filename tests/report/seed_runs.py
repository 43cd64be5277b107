"""Stored results of issue 19's measurements, made by the real library functions on tiny
models, for the report tests: saddle checks of an atlas, Hessian-direction and random
slices, per-layer noise tolerance, and the studies (induction heads, batch size, the
grokking lead-time law). Built once per process (:func:`seed_results`, ~10 s on one
core), copied into a run by :func:`add_seed_results`."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

#: What :func:`add_seed_results` copies: fields, and the studies' sub-runs.
SEED_FIELDS = ("saddles", "hessian2d", "random2d_at_model", "layer_noise")
SEED_STUDIES = ("induction", "batch_size", "lead_time", "double_descent")

#: Lead times of the synthetic grokking runs: exactly ``LEAD_PREFACTOR * onset ** LEAD_EXPONENT``.
LEAD_EXPONENT = 1.15
LEAD_PREFACTOR = 0.5


def _tiny_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tanh MLP 4 -> 6 -> 3 trained on 64 random points (as tests/curvature)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x, y


def build_seed_results(root: Path) -> Path:
    """Write every seed result into ``root`` (an atlas run of three permuted copies of a
    tiny MLP) and return it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a busy machine
    try:
        return _build(root)
    finally:
        torch.set_num_threads(threads)


def _build(root: Path) -> Path:
    from lossatlas.atlas import Atlas
    from lossatlas.connectivity import layerwise_profile, write_layer_noise
    from lossatlas.curvature import atlas_saddles
    from lossatlas.dynamics import write_lead_time_law
    from lossatlas.evaluate import Evaluator
    from lossatlas.population import Population
    from lossatlas.store import Run
    from lossatlas.studies import run_batch_size, run_double_descent, run_induction_heads
    from lossatlas.surfaces import hessian_slice, random_slice, slice_field
    from lossatlas.symmetry import permutation_spec, permute_model, random_permutation

    with torch.random.fork_rng(devices=[]):
        model, x, y = _tiny_problem()
        spec = permutation_spec(model, x[:2])
        gen = torch.Generator().manual_seed(3)
        models = [model] + [permute_model(model, spec, random_permutation(spec, gen))
                            for _ in range(2)]
        atlas = Atlas(Population.from_models(models), (x, y), root)
        atlas.embed("pca", dim=2)
        atlas.field(resolution=12, refine=False)
        atlas.topology(threshold=0.01)
        atlas_saddles(atlas, k=2, progress=False)

        ev = Evaluator(model, (x, y))
        run = Run(root)
        slice_field(ev, hessian_slice(model, (x, y), dim=2, resolution=5, span=0.2), run,
                    "hessian2d")
        slice_field(ev, random_slice(model, dim=2, resolution=5, span=0.2, seed=0), run,
                    "random2d_at_model")

        write_layer_noise(root, layerwise_profile(models[0], models[1], (x, y),
                                                  scales=(0.1, 0.5, 1.0, 2.0), num_draws=2,
                                                  points=5))

        run_induction_heads(root / "induction", "tiny", steps=40, num_train=256,
                            num_checkpoints=6, llc_draws=5, llc_chains=1, d_model=8,
                            seq_len=12, segment=(4, 5), eval_every=10, progress=False,
                            defect_kwargs={"num_pairs": 1})
        run_batch_size(root / "batch_size", batch_sizes=(8, 64), num_train=64,
                       max_epochs=2, hidden=(8,), num_probes=4, exact_trace_max=0,
                       progress=False)
        run_double_descent(root / "double_descent", widths=(2, 16), num_train=64, steps=30,
                           dataset="digits", surfaces=True, surface_resolution=5,
                           exact_trace_max=0, num_probes=4, progress=False)
        onsets = [400.0, 700.0, 1000.0, 1600.0]
        rows = [{"p": p, "weight_decay": 1.0, "seed": 0, "onset_step": o,
                 "lead_time": LEAD_PREFACTOR * o ** LEAD_EXPONENT, "grokked": True,
                 "defect_rise_step": o - LEAD_PREFACTOR * o ** LEAD_EXPONENT}
                for p, o in zip((47, 53, 59, 71), onsets, strict=True)]
        rows.append({"p": 97, "weight_decay": 0.1, "seed": 0, "onset_step": None,
                     "lead_time": None, "grokked": False})
        write_lead_time_law(root / "lead_time", rows, num_bootstrap=200)
    return root


@functools.lru_cache(maxsize=1)
def seed_results() -> Path:
    """The seed results, built once per process in a temporary directory."""
    return build_seed_results(Path(tempfile.mkdtemp(prefix="seed_results_")) / "run")


def add_seed_results(dst: Path) -> Path:
    """Copy the seed results' fields and study sub-runs into the run ``dst``."""
    src = seed_results()
    (dst / "fields").mkdir(parents=True, exist_ok=True)
    for name in SEED_FIELDS:
        shutil.copytree(src / "fields" / f"{name}.zarr", dst / "fields" / f"{name}.zarr",
                        dirs_exist_ok=True)
    for name in SEED_STUDIES:
        shutil.copytree(src / name, dst / name, dirs_exist_ok=True)
    return dst
