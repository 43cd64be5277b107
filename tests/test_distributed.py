"""Distributed fields: 2 gloo ranks under torchrun give the single-process field, bitwise."""

import contextlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas import AffineSource, Evaluator, Run, compute_field, distributed

SETUP = textwrap.dedent(
    """
    import numpy as np, torch
    from torch import nn
    from lossatlas import AffineSource, Evaluator

    def setup():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        x, y = torch.randn(80, 6), torch.randint(0, 3, (80,))
        ev = Evaluator(model, (x, y), device="cpu")
        w = ev.space.flatten(model)
        dirs = torch.randn(2, ev.space.dim, generator=torch.Generator().manual_seed(1))
        src = AffineSource(w, dirs, [np.linspace(-1, 1, 13), np.linspace(-1, 1, 5)])
        return ev, src
    """
)

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from lossatlas import Run, compute_field, distributed, store
    from setup_field import setup

    chunks = []
    real_write = store.FieldWriter.write
    def write(self, k, values):
        chunks.append(k)
        real_write(self, k, values)
    store.FieldWriter.write = write

    assert distributed.init_from_env()
    ev, src = setup()
    ds = compute_field(ev, src, Run(sys.argv[1]), "plane", chunk_points=10)
    mem = compute_field(ev, src, chunk_points=10)   # in memory, sharded and gathered
    assert (ds["loss"].values.tobytes() == mem["loss"].values.tobytes())
    out = {"rank": distributed.rank(), "world": distributed.world_size(),
           "chunks": chunks, "points": ev.points_evaluated,
           "loss": ds["loss"].values.tolist(), "complete": bool(ds.sizes)}
    with open(os.path.join(sys.argv[2], f"rank{distributed.rank()}.json"), "w") as f:
        json.dump(out, f)
    """
)


@contextlib.contextmanager
def _one_thread():
    """Like the workers (bitwise equality needs the same reduction order)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _setup():
    scope: dict = {}
    exec(SETUP, scope)  # noqa: S102 - the same setup as the workers, from one source
    return scope["setup"]()


def _torchrun(tmp_path, run_dir, nproc=2, worker=WORKER, check=True):
    (tmp_path / "setup_field.py").write_text(SETUP)
    (tmp_path / "worker.py").write_text(worker)
    out = tmp_path / "ranks"
    out.mkdir(exist_ok=True)
    for f in out.glob("*.json"):
        f.unlink()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={nproc}", str(tmp_path / "worker.py"), str(run_dir), str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    if not check:
        return proc, out
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


def _reference(tmp_path):
    ev, src = _setup()
    with _one_thread():
        return compute_field(ev, src, Run(tmp_path / "ref"), "plane", chunk_points=10), src


def test_single_process_helpers():
    assert not distributed.init_from_env()
    assert distributed.rank() == 0 and distributed.world_size() == 1 and distributed.is_main()
    distributed.barrier()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.shard(list(range(7)), 1, 3) == [1, 4]
    assert distributed.device().type in ("cpu", "cuda")


def test_two_ranks_equal_single_process(tmp_path):
    ref, src = _reference(tmp_path)
    ranks = _torchrun(tmp_path, tmp_path / "dist")
    assert [r["world"] for r in ranks] == [2, 2]
    # every chunk computed by exactly one rank, shared out round-robin
    chunks = sorted(k for r in ranks for k in r["chunks"])
    assert chunks == list(range(7)), chunks
    assert ranks[0]["chunks"] == [0, 2, 4, 6] and ranks[1]["chunks"] == [1, 3, 5]
    # run-backed field (60 points) + in-memory field (65 points), each split between ranks
    assert sum(r["points"] for r in ranks) == 2 * src.size
    stored = Run(tmp_path / "dist").open_field("plane")
    assert stored["loss"].values.tobytes() == ref["loss"].values.tobytes()
    assert stored["accuracy"].values.tobytes() == ref["accuracy"].values.tobytes()
    for r in ranks:  # every rank opened the complete field
        np.testing.assert_array_equal(np.asarray(r["loss"], dtype=np.float32),
                                      ref["loss"].values)
    meta = Run(tmp_path / "dist").read()
    assert meta["stages"]["field:plane"]["ranks"] == 2
    assert (tmp_path / "dist" / "fields" / "plane.progress" / "complete").exists()


def test_two_ranks_resume_only_missing_chunks(tmp_path):
    ref, src = _reference(tmp_path)
    ev, _ = _setup()
    run = Run(tmp_path / "dist")
    writer = run.begin_field("plane", src, ["loss", "accuracy"], 10,
                             {"precision": "fp32", "samples": 80})
    for k in (0, 3, 4):  # pre-computed by an earlier (killed) run
        start, stop = writer.chunk_range(k)
        with _one_thread():
            res = ev.evaluate(src.points(start, stop))
        writer.write(k, {v: res[v].numpy() for v in ("loss", "accuracy")})
    ranks = _torchrun(tmp_path, tmp_path / "dist")
    # pending [1, 2, 5, 6]: the i-th goes to rank i % 2
    assert ranks[0]["chunks"] == [1, 5] and ranks[1]["chunks"] == [2, 6]
    stored = Run(tmp_path / "dist").open_field("plane")
    assert stored["loss"].values.tobytes() == ref["loss"].values.tobytes()
    assert Run(tmp_path / "dist").read()["stages"]["field:plane"]["chunks_resumed"] == 3


MISMATCH = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from lossatlas import AffineSource, Run, compute_field, distributed
    from setup_field import setup

    distributed.init_from_env()
    ev, src = setup()
    other = AffineSource(src.origin, src.directions * 2, list(src.coords.values()))
    try:
        compute_field(ev, other, Run(sys.argv[1]), "plane", chunk_points=10)
    except ValueError as err:
        with open(os.path.join(sys.argv[2], f"rank{distributed.rank()}.json"), "w") as f:
            json.dump({"error": str(err)}, f)
    """
)


def test_every_rank_reports_a_store_that_cannot_resume(tmp_path):
    ev, src = _setup()
    Run(tmp_path / "dist").begin_field("plane", src, ["loss", "accuracy"], 10)
    proc, out = _torchrun(tmp_path, tmp_path / "dist", worker=MISMATCH, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = [json.loads((out / f"rank{r}.json").read_text())["error"] for r in range(2)]
    assert all("different points" in e for e in errors), errors
    assert "rank 0" in errors[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_compute_field_unchanged_without_torchrun(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ev = Evaluator(model, (torch.randn(10, 3), torch.randint(0, 2, (10,))))
    w = ev.space.flatten(model)
    src = AffineSource(w, torch.randn(1, ev.space.dim), [np.linspace(-1, 1, 7)])
    a = compute_field(ev, src, Run(tmp_path), "line", chunk_points=3)
    b = compute_field(ev, src)
    np.testing.assert_array_equal(a["loss"].values, b["loss"].values)


def test_small_memory_budget_same_field_smaller_chunks(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    data = (torch.randn(80, 6), torch.randint(0, 3, (80,)))
    big = Evaluator(model, data, device="cpu")
    small = Evaluator(model, data, device="cpu", memory_budget=16 << 10)
    assert small.memory_budget == 16 << 10
    assert small.chunk_size < big.chunk_size and small.batch_size <= big.batch_size
    seen: list[int] = []
    real = small._evaluate_chunk

    def spy(chunk):
        seen.append(len(chunk))
        return real(chunk)

    small._evaluate_chunk = spy
    w = big.space.flatten(model)
    dirs = torch.randn(2, big.space.dim, generator=torch.Generator().manual_seed(1))
    src = AffineSource(w, dirs, [np.linspace(-1, 1, 11), np.linspace(-1, 1, 7)])
    ref = compute_field(big, src, Run(tmp_path / "big"), "plane")
    got = compute_field(small, src, Run(tmp_path / "small"), "plane")
    assert seen and max(seen) <= small.chunk_size < big.chunk_size
    assert sum(seen) == src.size
    np.testing.assert_allclose(got["loss"].values, ref["loss"].values, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got["accuracy"].values, ref["accuracy"].values)


ATLAS_ARGS = ["--model", "mlp", "--model-arg", "hidden=[16]", "--data", "blobs",
              "--data-arg", "num_features=40", "--data-arg", "num_classes=10",
              "--method", "pca", "--resolution", "8", "--budget", "100", "--json"]


@pytest.mark.parametrize("extra", [(), ("--memory-budget", "64kB")], ids=["memory", "budget"])
def test_atlas_cli_under_torchrun_equals_one_process(tmp_path, extra):
    """`lossatlas atlas` under torchrun (2 gloo ranks): rank 0 embeds and writes, both
    ranks evaluate every refinement round; the stored field, its edges and the basins
    equal a one-process run, bit for bit; only rank 0 reports."""
    from lossatlas.checkpoints import save_state_dict
    from lossatlas.models import create

    pop = tmp_path / "pop"
    pop.mkdir()
    for seed in range(4):
        torch.manual_seed(seed)
        save_state_dict(create("mlp", in_features=40, hidden=(16,), num_classes=10)
                        .state_dict(), pop / f"m{seed}.pt")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", MPLBACKEND="Agg")
    cli = ["-m", "lossatlas.cli", "atlas", "--population", str(pop / "m*.pt"), *ATLAS_ARGS,
           *extra]
    one = subprocess.run([sys.executable, *cli, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node=2", *cli, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    summaries = [ln for ln in two.stdout.splitlines() if ln.startswith("{")]
    assert len(summaries) == 1  # rank 0 alone reports
    a, b = Run(tmp_path / "one").open_field("atlas"), Run(tmp_path / "two").open_field("atlas")
    for var in ("loss", "accuracy", "edges", "z0", "z1"):
        assert a[var].values.tobytes() == b[var].values.tobytes(), var
    ta = json.loads((tmp_path / "one" / "topology.json").read_text())
    tb = json.loads((tmp_path / "two" / "topology.json").read_text())
    assert ta["model_basin"] == tb["model_basin"]
    stages = json.loads((tmp_path / "two" / "run.json").read_text())["stages"]
    assert stages["field"]["samples"] == a.sizes["sample"]
    assert any(s.get("ranks") == 2 for s in stages.values() if isinstance(s, dict))
