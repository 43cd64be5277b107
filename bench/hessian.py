"""Benchmark: top-k Hessian eigenvalues and trace, lossatlas vs PyHessian (and
hessian-eigenthings when installed).

    python bench/hessian.py --device cuda            # MLP 40-512-512-10 (4000 samples), ResNet-20
    python bench/hessian.py --quick                  # small sizes, CPU

Accuracy is measured against a tight lossatlas Lanczos run (residual tol 1e-7):
"eig rel" is the largest relative difference over the top-k eigenvalues; the
trace columns give the estimate and its difference to the Hutch++ estimate
with many probes. Times are wall-clock seconds (CUDA synchronised).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from torch import nn

from lossatlas.curvature import HVP, hutch_plusplus, lanczos
from lossatlas.curvature.trace import eigen_and_trace

try:
    from lossatlas.models import create as create_model
except ImportError:  # the models module is optional for this script
    create_model = None


# ---------------------------------------------------------------- models
class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


def _resnet20() -> nn.Module:
    if create_model is not None:
        return create_model("resnet20")
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    c = 16
    for c_out, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(_Block(c, c_out, stride if i == 0 else 1))
            c = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def _problem(name: str, n: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(
            nn.Linear(40, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )
        x = torch.randn(n, 40, generator=g)
    else:
        model = _resnet20()
        x = torch.randn(n, 3, 32, 32, generator=g)
        model.train()
        with torch.no_grad():  # non-trivial BatchNorm statistics
            model(x[:256])
    y = torch.randint(0, 10, (n,), generator=g)
    return model.to(device).eval(), x.to(device), y.to(device)


# ---------------------------------------------------------------- runners
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


REPEAT = {"n": 1}  # runs per timing (the median is reported); --repeat, MLP case only


def _timed(device, fn, *args):
    times = []
    for _ in range(REPEAT["n"]):
        _sync(device)
        t = time.perf_counter()
        out = fn(*args)
        _sync(device)
        times.append(time.perf_counter() - t)
    return out, float(np.median(times))


def _ours(model, x, y, k, batch_size, tol, probes, device, probe_batch, graphs=None,
          precision="fp32", method="lanczos", chunk=None, block=None):
    # bn="own": the model's stored statistics, as the peers (eval mode) use them
    H = HVP(model, (x, y), batch_size=batch_size, device=device, bn="own", graphs=graphs,
            precision=precision, chunk_size=chunk)
    if method == "krylov":  # one block Krylov space for both (batches of probes // 3)
        eig, tr = eigen_and_trace(H, k, probes, tol=tol, block_size=block)
        return eig.eigenvalues.double().cpu().numpy(), tr, eig.num_hvp, tr.num_hvp
    eig = lanczos(H, k, tol=tol)
    n_eig = H.num_hvp
    tr = hutch_plusplus(H, probes, probe_batch=probe_batch)
    return eig.eigenvalues.double().cpu().numpy(), tr, n_eig, H.num_hvp - n_eig


def _profile(model, x, y, k, batch_size, tol, probes, device, probe_batch) -> None:
    """Where one call's time goes: operator set-up, Lanczos, Hutch++, with and without
    CUDA graphs, and the time of one product of m vectors eager vs replayed."""
    for graphs in ((False, True) if device.type == "cuda" else (False,)):
        _sync(device)
        t0 = time.perf_counter()
        H = HVP(model, (x, y), batch_size=batch_size, device=device, bn="own", graphs=graphs)
        _sync(device)
        t1 = time.perf_counter()
        eig = lanczos(H, k, tol=tol)
        _sync(device)
        t2 = time.perf_counter()
        n_eig = H.num_hvp
        hutch_plusplus(H, probes, probe_batch=probe_batch)
        _sync(device)
        t3 = time.perf_counter()
        print(f"  profile graphs={graphs}: set-up {t1 - t0:.4f} s, lanczos {t2 - t1:.4f} s "
              f"({n_eig} HVPs, {eig.num_iter} steps), hutch++ {t3 - t2:.4f} s "
              f"({H.num_hvp - n_eig} HVPs), replays {getattr(H, 'num_replays', 0)}")
        for m in sorted({1, probe_batch or probes // 3}):
            V = torch.randn(m, H.dim, device=device)
            for i in range(4):  # eager, capture, replay, replay
                _sync(device)
                t = time.perf_counter()
                H(V)
                _sync(device)
                if i in (0, 3):
                    print(f"    m={m}: call {i + 1} {1e3 * (time.perf_counter() - t):.2f} ms")


def _profile_krylov(model, x, y, k, batch_size, tol, probes, device, precision, chunk,
                    block) -> None:
    """torch.profiler over one eigen_and_trace call: the top operations by host time
    and by device time."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    with profile(activities=acts) as prof:
        _ours(model, x, y, k, batch_size, tol, probes, device, None, None, precision,
              "krylov", chunk, block)
        _sync(device)
    avg = prof.key_averages()
    print(avg.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
    if device.type == "cuda":
        print(avg.table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))


def _pyhessian(model, x, y, k, device):
    from pyhessian import hessian

    m = copy.deepcopy(model)
    ref = hessian(m, nn.CrossEntropyLoss(), data=(x, y), cuda=device.type == "cuda")
    vals, _ = ref.eigenvalues(top_n=k)
    samples = np.asarray(ref.trace(), dtype=np.float64)
    std = float(samples.std(ddof=1) / np.sqrt(len(samples))) if len(samples) > 1 else np.nan
    return np.sort(np.array(vals))[::-1], float(np.mean(samples)), len(samples), std


def _eigenthings(model, x, y, k, device, probes):
    import hessian_eigenthings as he

    op = he.HessianOperator(
        copy.deepcopy(model), [(x, y)], he.supervised_loss(nn.functional.cross_entropy)
    )
    res = he.lanczos(op, k=k, max_iter=max(4 * k, k + 40), seed=0, which="LA")
    tr = he.hutch_plus_plus(op, num_matvecs=probes, seed=0)
    return res.eigenvalues.double().cpu().numpy(), float(tr.estimate)


def _rel(a, ref):
    return float(np.max(np.abs(np.asarray(a) - ref) / np.abs(ref)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="mlp,resnet20")
    ap.add_argument("--samples", type=int, default=4000, help="MLP samples")
    ap.add_argument("--resnet-samples", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=None, help="HVP batch (default: all)")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--tol", type=float, default=1e-4, help="our Lanczos residual tolerance")
    ap.add_argument("--probes", type=int, default=99, help="Hutch++ probes")
    ap.add_argument("--settings", default="",
                    help="our settings to time, 'tol:probes:precision[:method]' separated by "
                         "commas (e.g. 1e-4:99:fp32,1e-3:24:tf32:krylov; method 'lanczos' "
                         "(default: Lanczos, then Hutch++) or 'krylov[B]' (eigen_and_trace: "
                         "one block Krylov space for both, blocks of B vectors, default "
                         "ceil(probes / 9))); default: --tol, --probes, fp32")
    ap.add_argument("--chunk", type=int, default=0,
                    help="HVP vectors per vmap pass for the ResNet (memory; default 11 on "
                         "CUDA, all on the CPU)")
    ap.add_argument("--probe-batch", type=int, default=0,
                    help="Hutch++ probes per operator call (default: all 33 at once for the "
                         "MLP on CUDA, 10 for the ResNet on CUDA, 3 on the CPU)")
    ap.add_argument("--no-graphs", action="store_true", help="eager products (no CUDA graphs)")
    ap.add_argument("--profile", action="store_true",
                    help="print the split of one call (set-up, Lanczos, Hutch++) and the time "
                         "of one product eager vs replayed")
    ap.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time the MLP case's runs (ours and peers) this many times each and "
                         "report the median (fractions of a second: one run is noisy)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.samples, args.resnet_samples = min(args.samples, 256), min(args.resnet_samples, 16)
        args.probes = min(args.probes, 15)
    device = torch.device(args.device)
    rows = []
    for name in args.models.split(","):
        n = args.samples if name == "mlp" else args.resnet_samples
        model, x, y = _problem(name, n, device)
        D = sum(p.numel() for p in model.parameters())
        common = (model, x, y, args.k, args.batch_size)
        settings = [(float(f[0]), int(f[1]), f[2], f[3] if len(f) > 3 else "lanczos")
                    for f in (item.split(":") for item in args.settings.split(",") if item)] or [
            (args.tol, args.probes, "fp32", "lanczos")]
        graphs = False if args.no_graphs else None
        top = max(s[1] for s in settings)
        chunk = args.chunk or (11 if name != "mlp" and device.type == "cuda" else None)

        def probe_batch(probes: int, name: str = name) -> int:
            return args.probe_batch or (
                3 if device.type != "cuda" else (probes // 3 if name == "mlp" else 10))

        REPEAT["n"] = 1
        (ref, ref_tr, _, _), t_ref = _timed(
            device, _ours, *common, 1e-7, 3 * top, device, probe_batch(3 * top), graphs)
        REPEAT["n"] = max(1, args.repeat) if name == "mlp" else 1
        for tol, probes, prec, method in settings:
            (vals, tr, n_eig, n_tr), t_ours = _timed(
                device, _ours, *common, tol, probes, device, probe_batch(probes), graphs, prec,
                "krylov" if method.startswith("krylov") else method, chunk,
                int(method[6:]) if method[6:].isdigit() else None)
            label = f"ours {tol:g}/{probes}/{prec}" + (f"/{method}" if method != "lanczos"
                                                       else "")
            rows.append((name, D, n, label, t_ours, _rel(vals, ref),
                         tr.trace, tr.std, n_eig + n_tr))
            if args.profile and method.startswith("krylov"):
                _profile_krylov(*common, tol, probes, device, prec, chunk,
                                int(method[6:]) if method[6:].isdigit() else None)
            if args.profile and (tol, probes, prec, method) == settings[0]:
                _profile(*common, tol, probes, device, probe_batch(probes))
        torch.manual_seed(0)
        (pvals, ptr, pn, pstd), t_py = _timed(device, _pyhessian, model, x, y, args.k, device)
        rows.append((name, D, n, "pyhessian", t_py, _rel(pvals, ref), ptr, pstd, None))
        try:
            (evals, etr), t_e = _timed(
                device, _eigenthings, model, x, y, args.k, device, top
            )
            rows.append((name, D, n, "eigenthings", t_e, _rel(evals, ref), etr, float("nan"),
                         None))
        except ImportError:
            print("note: hessian-eigenthings is not installed; skipped")
        print(
            f"{name}: reference top-{args.k} {np.array2string(ref, precision=4)}, "
            f"trace (Hutch++ x{3 * top}) {ref_tr.trace:.4g} +- {ref_tr.std:.2g}, "
            f"{t_ref:.1f} s; PyHessian trace samples {pn}"
        )
    print()
    hdr = f"{'model':10s} {'D':>8s} {'N':>6s} {'method':12s} {'time s':>8s} {'ratio':>7s} "
    print(hdr + f"{'eig rel':>9s} {'trace':>10s} {'+-':>8s} {'HVPs':>6s}")
    base: dict[str, float] = {}
    for r in rows:
        if r[3].startswith("ours"):
            base.setdefault(r[0], r[4])  # ratios against our first setting
    for name, D, n, method, t, rel, tr, std, nh in rows:
        print(
            f"{name:10s} {D:8d} {n:6d} {method:22s} {t:8.3f} {t / base[name]:7.2f} "
            f"{rel:9.1e} {tr:10.4g} {std:8.2g} {'' if nh is None else nh:>6}"
        )


if __name__ == "__main__":
    main()
