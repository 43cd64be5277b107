"""Run landscaper's ``compute_loss_landscape`` on inputs saved by ``run_landscaper``
(``bench/eval_throughput.py``; used by it and by ``bench/transformer_slice.py``).

Usage: ``PYTHON_OF_LANDSCAPER_ENV landscaper_runner.py inputs.pt out.pt``

Runs in landscaper's own environment (it pins numpy<2). The model is rebuilt from the
inputs' ``spec``: ``{"name", "kwargs"}`` through ``lossatlas.models`` without importing
the rest of lossatlas (whose dependencies that environment may lack), or
``{"file", "class", "kwargs"}``: the class ``class`` of the torch-only module at
``file`` (relative to the repository root, e.g. ``bench/_gpt.py``), loaded by path.
The loss is the mean cross-entropy over every position: outputs ``[n, ..., C]`` and
targets ``[n, ...]`` are flattened to ``[N, C]`` and ``[N]`` (token-level for a
decoder's ``[n, T, vocab]`` logits; unchanged for ``[n, C]``), as lossatlas computes it.
landscaper's package ``__init__`` imports its topology and plotting stack (topopy,
nglpy, gudhi, matplotlib); where those are missing, its ``compute.py`` (the timed
function, unchanged) is loaded on its own, and the output says so.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]


def _lossatlas_models():
    pkg = types.ModuleType("lossatlas")
    pkg.__path__ = [str(ROOT / "src" / "lossatlas")]  # type: ignore[attr-defined]
    sys.modules.setdefault("lossatlas", pkg)
    from lossatlas.models import create

    return create


def _model_class(spec: dict):
    """The model's class (or factory) named by ``spec``; see the module docstring."""
    if "file" not in spec:
        create = _lossatlas_models()
        return lambda **kw: create(spec["name"], **kw)
    path = Path(spec["file"])
    path = path if path.is_absolute() else ROOT / path
    mspec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(mspec)  # type: ignore[arg-type]
    sys.modules[path.stem] = mod
    mspec.loader.exec_module(mod)  # type: ignore[union-attr]
    return getattr(mod, spec["class"])


def _compute_module():
    try:
        from landscaper import compute

        return compute, "landscaper package import"
    except ImportError as err:
        spec = importlib.util.find_spec("landscaper")
        if spec is None or not spec.submodule_search_locations:
            raise
        where = Path(list(spec.submodule_search_locations)[0])
        pkg = types.ModuleType("landscaper")
        pkg.__path__ = [str(where)]  # type: ignore[attr-defined]
        sys.modules["landscaper"] = pkg
        mspec = importlib.util.spec_from_file_location("landscaper.compute", where / "compute.py")
        mod = importlib.util.module_from_spec(mspec)  # type: ignore[arg-type]
        sys.modules["landscaper.compute"] = mod
        mspec.loader.exec_module(mod)  # type: ignore[union-attr]
        return mod, f"landscaper/compute.py loaded alone ({err})"


def main() -> None:
    inp, out = sys.argv[1], sys.argv[2]
    d = torch.load(inp, weights_only=False)
    device = torch.device(d["device"])
    if not d.get("tf32", True):  # value checks: true fp32 convolutions
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = _model_class(d["spec"])(**d["spec"]["kwargs"])
    model.load_state_dict(d["state"])
    model = model.to(device).eval().requires_grad_(False)
    x, y = d["x"].to(device), d["y"].to(device)
    compute, how = _compute_module()
    names = [n for n, _ in model.named_parameters()]
    dirs = [[dd[n].to(device).clone() for n in names] for dd in d["dirs"]]
    steps, distance = int(d["steps"]), float(d["distance"])

    def scalar_fn(m, data):
        xx, yy = data
        out = m(xx)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), yy.reshape(-1)).item()

    # Its step vectors, computed exactly as compute_loss_landscape does (for value checks).
    with torch.no_grad():
        start = compute.get_model_parameters(model, False)
        scaled = []
        for dd in dirs:
            v = compute.normalize_direction([t.clone() for t in dd], start)
            compute.scale_direction(v, ((compute.get_model_norm(start) * distance) / (steps / 2))
                                    / compute.get_model_norm(v))
            scaled.append(torch.cat([t.reshape(-1) for t in v]).cpu())
        scalar_fn(model, (x, y))  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    losses, _ = compute.compute_loss_landscape(model, (x, y), dirs, scalar_fn, steps=steps,
                                               distance=distance, dim=2, device=device.type)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    torch.save({"points_per_s": steps * steps / dt, "losses": np.asarray(losses),
                "steps_flat": torch.stack(scaled),
                "env": f"{how}; numpy {np.__version__}; torch {torch.__version__}"}, out)
    print(f"landscaper: {steps * steps / dt:.2f} points/s ({how}; numpy {np.__version__})")


if __name__ == "__main__":
    main()
