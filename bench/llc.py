"""Benchmark: local learning coefficient, lossatlas (chains vmapped together) vs
devinterp's ``estimate_learning_coeff_with_summary`` (chains one after another),
same model, data and SGLD hyper-parameters.

    python bench/llc.py --device cuda
    python bench/llc.py --quick
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossatlas.curvature import llc


def _problem(n: int, device: torch.device, train_steps: int, arch: str = "mlp"):
    """A briefly trained model on random labelled data (a point near a minimum): the MLP
    40-512-512-10, or a small CNN (1x16x16 inputs, convolutions 1-16-32, linear 2048-10)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if arch == "cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1, stride=2),
            nn.ReLU(), nn.Flatten(), nn.Linear(32 * 8 * 8, 10)
        ).to(device)
        x = torch.randn(n, 1, 16, 16, generator=g).to(device)
    else:
        model = nn.Sequential(
            nn.Linear(40, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        ).to(device)
        x = torch.randn(n, 40, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(train_steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(model, x, y, args, nbeta: float, hp: dict):
    return llc(model, (x, y), epsilon=args.epsilon, nbeta=nbeta, gamma=args.gamma,
               batch_size=args.batch_size, seed=0, **hp)


def run_devinterp(model, x, y, args, nbeta: float, hp: dict, init_loss: float, device):
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimate_learning_coeff_with_summary(
            model, loader, evaluate=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
            optimizer_kwargs=dict(lr=args.epsilon, nbeta=nbeta, localization=args.gamma),
            init_loss=init_loss, seed=0, device=device, verbose=False, **hp)


def timed(fn, device) -> tuple[float, object]:
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--burnin", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epsilon", type=float, default=1e-4)
    ap.add_argument("--gamma", type=float, default=100.0)
    ap.add_argument("--nbeta", type=float, default=None, help="default m / log m")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-devinterp", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.samples, args.draws, args.burnin, args.train_steps = 1000, 50, 20, 100
    device = torch.device(args.device)
    model, x, y = _problem(args.samples, device, args.train_steps, args.model)
    nbeta = args.nbeta or args.batch_size / torch.log(torch.tensor(float(args.batch_size))).item()
    hp = dict(num_chains=args.chains, num_draws=args.draws, num_burnin_steps=args.burnin)
    # each tool once on a few steps first: whichever ran first paid the process's warm-up
    # (kernel selection, allocator, thread pool): up to 1.7x on a small CNN on the CPU
    warm = dict(num_chains=args.chains, num_draws=2, num_burnin_steps=0)
    run_ours(model, x, y, args, nbeta, warm)
    t_ours, ours = timed(lambda: run_ours(model, x, y, args, nbeta, hp), device)
    rows = [("lossatlas", t_ours, ours.llc_mean, ours.llc_std)]
    if not args.no_devinterp:
        try:
            import devinterp  # noqa: F401
        except ImportError:
            print("note: devinterp is not installed; skipped")
        else:
            run_devinterp(model, x, y, args, nbeta, warm, ours.init_loss, device)
            t, theirs = timed(lambda: run_devinterp(model, x, y, args, nbeta, hp,
                                                    ours.init_loss, device), device)
            rows.append(("devinterp", t, theirs["llc/mean"], theirs["llc/std"]))

    D = sum(p.numel() for p in model.parameters())
    steps = args.burnin + args.draws
    what = "MLP 40-512-512-10" if args.model == "mlp" else "CNN 1-16-32 (16x16 inputs)"
    print(
        f"{what} (D={D}), n={args.samples}, batch {args.batch_size}, "
        f"{args.chains} chains x {steps} steps, eps={args.epsilon}, nbeta={nbeta:.3g}, "
        f"gamma={args.gamma}, device={device} (each tool warmed up on 2 steps first)"
    )
    print(f"{'method':10s} {'time s':>8s} {'ratio':>7s} {'llc mean':>9s} {'llc std':>8s}")
    for name, t, mean, std in rows:
        print(f"{name:10s} {t:8.2f} {t / t_ours:7.2f} {mean:9.3f} {std:8.3f}")


if __name__ == "__main__":
    main()
