"""The ``lossatlas`` command line: a thin layer over the Python API.

Every command prints a short summary table at the end (or, with ``--json``, one
JSON object on stdout) and exits non-zero with a one-line ``error:`` message on
bad input.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Map the loss landscape of a population of PyTorch models.")
surface_app = typer.Typer(no_args_is_help=True, help="1-D/2-D/3-D slices of the loss landscape.")
app.add_typer(surface_app, name="surface")

err = Console(stderr=True)
out = Console()


class UsageError(ValueError):
    """Bad command-line input (reported as one line)."""


def _handle(fn):
    """Turn expected errors into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .checkpoints import CheckpointError
        from .registry import FactoryError, UnknownNameError
        from .store import hold_locks

        hold_locks()  # the run directories a command writes into stay locked until it ends
        try:
            return fn(*args, **kwargs)
        except (UsageError, CheckpointError, FactoryError, UnknownNameError, ValueError,
                KeyError, FileNotFoundError, TypeError, RuntimeError, MemoryError,
                OverflowError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            line = str(msg).splitlines()[0] if str(msg).strip() else type(e).__name__
            sys.stderr.write(f"error: {line}\n")
            raise typer.Exit(1) from None
        except OSError as e:  # --out a file, a read-only directory, a name too long, ...
            where = f": {e.filename}" if e.filename else ""
            sys.stderr.write(f"error: {e.strerror or type(e).__name__}{where}\n")
            raise typer.Exit(1) from None
        finally:
            from .store import release_locks

            release_locks()  # the run directories this command wrote into

    return wrapper


def _refuse(message: str):
    """One line ``error: message`` on stderr and exit code 1 (for option callbacks, which
    run before `_handle`)."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(1)


def _option_name(param) -> str:
    return max(getattr(param, "opts", None) or [f"--{param.name}"], key=len)


def _number(kind: str = "finite", minimum: float | None = None):
    """A typer ``callback`` refusing a numeric option that is not a finite number, or
    (``kind``) not ``"positive"`` (> 0), ``"nonnegative"`` (>= 0), or below ``minimum``:
    one line naming the option."""
    import math

    def check(ctx, param, value):
        if value is None or getattr(ctx, "resilient_parsing", False):
            return value
        name = _option_name(param)
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite:
            _refuse(f"{name} must be a finite number, got {value}")
        if kind == "positive" and not value > 0:
            _refuse(f"{name} must be > 0, got {value}")
        if kind == "nonnegative" and not value >= 0:
            _refuse(f"{name} must be >= 0, got {value}")
        if minimum is not None and value < minimum:
            _refuse(f"{name} must be >= {minimum:g}, got {value}")
        return value

    return check


def _check_device(ctx, param, value):
    """``--device``: a device torch knows and this machine has (one line otherwise)."""
    if value is None or getattr(ctx, "resilient_parsing", False):
        return value
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError) as e:
        _refuse(f"--device {value!r}: {str(e).splitlines()[0] if str(e) else 'unknown device'}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            _refuse(f"--device {value}: CUDA is not available on this machine (torch "
                    f"{torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            _refuse(f"--device {value}: this machine has {torch.cuda.device_count()} CUDA "
                    "device(s)")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps")
                                    and torch.backends.mps.is_available()):
        _refuse(f"--device {value}: MPS is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        _refuse(f"--device {value}: only cpu, cuda[:N] and mps are supported")
    return value


def _check_name(ctx, param, value):
    """``--name``: a field name that is a plain, short file name."""
    if value is None or getattr(ctx, "resilient_parsing", False):
        return value
    bad = (not value or len(value) > 100 or value.startswith(".")
           or any(c in "/\\" or not c.isprintable() for c in value))
    if bad:
        shown = value if len(value) <= 40 else value[:37] + "..."
        _refuse(f"--name {shown!r} ({len(value)} characters): a field name must be 1 to 100 "
                "printable characters, without '/' or '\\', not starting with '.'")
    return value


def _check_out(ctx, param, value):
    """``--out``: a directory (or a path where one can be made), writable."""
    if value is None or getattr(ctx, "resilient_parsing", False):
        return value
    import os

    p = Path(value)
    if p.exists() and not p.is_dir():
        _refuse(f"--out {p} is a file, not a directory")
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        _refuse(f"--out {p}: directory {probe} is not writable")
    if not probe.is_dir():
        _refuse(f"--out {p}: {probe} is not a directory")
    return value


def _check_threshold(ctx, param, value):
    """``--threshold``: a finite number of decades >= 0, ``auto`` or ``N%`` (0 < N <= 100)."""
    if value is None or getattr(ctx, "resilient_parsing", False) or value == "auto":
        return value
    import math

    pct = value.endswith("%")
    try:
        number = float(value[:-1] if pct else value)
    except ValueError:
        _refuse(f"--threshold must be decades (a number >= 0), 'auto' or 'N%', got {value!r}")
    if not math.isfinite(number) or number < 0 or (pct and not 0 < number <= 100):
        _refuse(f"--threshold must be a finite number of decades >= 0, 'auto' or 'N%' with "
                f"0 < N <= 100, got {value!r}")
    return value


def _headline_finite(value: float, what: str, loss=None) -> None:
    """A command's headline figure must be a number: otherwise one line says why (how many
    of the losses it comes from are NaN/inf) and the command exits non-zero."""
    import math

    import numpy as np

    if math.isfinite(float(value)):
        return
    why = ""
    if loss is not None:
        arr = np.asarray(loss, dtype=float)
        bad = int((~np.isfinite(arr)).sum())
        why = f": the loss is non-finite (NaN/inf) at {bad} of {arr.size} points"
    raise UsageError(f"{what} is {float(value)}{why}; the weights or the data overflow "
                     "(try --precision fp32, check the checkpoints)")


def _kv(pairs: list[str] | None, option: str) -> dict[str, Any]:
    """Parse ``key=value`` options (values as JSON when possible)."""
    result: dict[str, Any] = {}
    for item in pairs or []:
        if "=" not in item:
            raise UsageError(f"{option} expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            result[k] = json.loads(v)
        except json.JSONDecodeError:
            result[k] = v
    return result


def _load_data(spec: str, args: list[str] | None, split: str, samples: int | None,
               test_spec: str | None = None, test_args: list[str] | None = None):
    """``(splits, (x, y))``: the `DatasetSplits` of ``--data`` (and ``--test-data``) and
    the ``--split`` of it, cut to ``--samples``. A factory's single set is the train split
    and, without ``--test-data``, the test split too (``splits.test_is_train``)."""
    from .batches import index_inputs
    from .data import load_data

    if split not in ("train", "test"):
        raise UsageError(f"--split must be 'train' or 'test', got {split!r}")
    if samples is not None and samples < 1:
        raise UsageError(f"--samples must be >= 1, got {samples}")
    kwargs = _kv(args, "--data-arg")
    test_kwargs = _kv(test_args, "--test-data-arg") if test_spec is not None else None
    # FactoryError / UnknownNameError name the spec; TypeError / ValueError from a
    # factory's return value name it too
    splits = load_data(spec, kwargs, test_spec, test_kwargs)
    x, y = (splits.x_train, splits.y_train) if split == "train" else (splits.x_test,
                                                                      splits.y_test)
    if samples is not None:
        x, y = index_inputs(x, slice(0, samples)), y[:samples]
    return splits, (x, y)


def _eval_options(bn: str | None, output_key: str | None, loss: str | None) -> dict[str, Any]:
    """Evaluator keyword arguments from ``--bn``, ``--output-key`` and ``--loss``
    (validated here, so a typo is one line naming the option)."""
    from .evaluate import LOSSES

    if bn is not None and bn not in ("own", "recompute"):
        raise UsageError(f"--bn must be 'recompute' or 'own', got {bn!r}")
    if loss is not None and loss not in LOSSES:
        raise UsageError(f"--loss must be one of {', '.join(sorted(LOSSES))}, got {loss!r}")
    output: str | int | None = output_key
    if output_key is not None and output_key.lstrip("-").isdigit():
        output = int(output_key)
    return {"bn": bn, "output": output, "loss_fn": loss}


def _model_factory(spec: str | None, args: list[str] | None, splits=None):
    from .population import resolve_model_factory

    spec = spec or _DEFAULT_MODEL
    kwargs = _kv(args, "--model-arg")
    if splits is not None and hasattr(splits, "num_classes"):
        from .train import _infer_model_kwargs

        kwargs = _infer_model_kwargs(spec, splits, kwargs)
    build, _ = resolve_model_factory(spec, kwargs)
    try:
        build()  # fail here, naming the options, rather than deep inside a command
    except (TypeError, ValueError) as e:
        raise UsageError(f"--model {spec!r} / --model-arg: {e}") from e
    return build, kwargs


def _load_population(source: str, model: str | None, kwargs: dict, trust_run: bool,
                     out: Path | None = None, bn: str | None = None):
    """``--population``: a train run (its own model unless --model names one; a factory its
    train.json names runs only if built in or with --trust-run), or checkpoints of --model
    (default mlp)."""
    from .population import is_train_run, load_population

    if model is None and not is_train_run(source):
        model = _DEFAULT_MODEL
    return load_population(source, model, None if model is None else kwargs,
                           trust_run=trust_run, out=out, bn=bn)


def _cell(v: Any) -> str:
    """A summary value as table text: floats to 4 significant digits, short lists of
    numbers joined."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
        shown = ", ".join(_cell(x) for x in v[:10])
        return shown + (f", ... ({len(v)} in all)" if len(v) > 10 else "")
    return str(v)


def _table(title: str, rows: dict[str, Any]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("", style="bold")
    t.add_column("")
    for k, v in rows.items():
        t.add_row(str(k), _cell(v))
    return t


def _matrix_table(title: str, names: list[str], values, columns: list[str] | None = None
                  ) -> Table:
    """A labelled matrix (rows ``names``, columns ``columns`` or ``names``) as a table."""
    t = Table(title=title, title_justify="left")
    t.add_column("")
    for c in columns or names:
        t.add_column(str(c), justify="right")
    for name, row in zip(names, values, strict=True):
        t.add_row(str(name), *(_cell(float(v)) for v in row))
    return t


def _finish(summary: dict, as_json: bool, title: str, tables: list[Table] | None = None
            ) -> None:
    """Print the summary (one JSON object with ``--json``, else a table of its scalar and
    short numeric-list entries, then ``tables``: matrices a researcher would copy)."""
    if as_json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        return
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict)
            and (not isinstance(v, (list, tuple)) or _cell(v) != str(v) or len(v) <= 10)}
    out.print(_table(title, flat))
    for t in tables or []:
        out.print(t)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


Verbose = typer.Option(False, "--verbose", "-v", help="Log what happens.")
Json = typer.Option(False, "--json", help="Print a machine-readable summary on stdout.")


# ------------------------------------------------------------------- list
@app.command("list")
@_handle
def list_cmd(what: str = typer.Argument("models", help="models | datasets")):
    """List the built-in models or datasets."""
    from . import data, models

    if what == "models":
        names = models.list_models()
    elif what == "datasets":
        names = data.list_datasets()
    else:
        raise UsageError(f"list: expected 'models' or 'datasets', got {what!r}")
    for n in names:
        out.print(n)


# ------------------------------------------------------------------ train
@app.command()
@_handle
def train(
    out_dir: Path = typer.Option(..., "--out", help="Run directory for checkpoints and metrics.",
                                 callback=_check_out),
    model: str = typer.Option("mlp", help="Registered model name or package.module:function."),
    model_arg: list[str] = typer.Option(None, help="Model factory argument key=value."),
    data: str = typer.Option("mnist1d", help="Registered dataset or package.module:function."),
    data_arg: list[str] = typer.Option(None, help="Dataset factory argument key=value."),
    seeds: str = typer.Option("0", help="Comma-separated seeds."),
    lr: str = typer.Option(None, help="Comma-separated learning rates (grid)."),
    batch_size: str = typer.Option(None, help="Comma-separated batch sizes (grid)."),
    weight_decay: str = typer.Option(None, help="Comma-separated weight decays (grid)."),
    epochs: int = typer.Option(8, help="Epochs per variant.", callback=_number(minimum=1)),
    every: int = typer.Option(2, help="Save a checkpoint every k epochs.",
                              callback=_number(minimum=1)),
    device: str = typer.Option(None, help="cpu, cuda, ... (default: cuda if available).",
                               callback=_check_device),
    as_json: bool = Json,
    verbose: bool = Verbose,
):
    """Train a population: variants over a grid of seeds, learning rates, batch sizes and
    weight decays (default: the 7 demo variants), with a checkpoint every k epochs."""
    from .train import read_metrics, train_population

    _setup_logging(verbose)
    t0 = time.perf_counter()
    grid = {}
    for key, val, cast in (("lr", lr, float), ("batch_size", batch_size, int),
                           ("weight_decay", weight_decay, float)):
        if val:
            try:
                grid[key] = [cast(v) for v in val.split(",")]
            except ValueError:
                raise UsageError(f"--{key.replace('_', '-')}: cannot parse {val!r}") from None
    try:
        seed_list = [int(s) for s in seeds.split(",")]
    except ValueError:
        raise UsageError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    pop = train_population(
        model, data, out_dir=out_dir, grid=grid or None, seeds=seed_list,
        checkpoint_every=every, epochs=epochs, model_kwargs=_kv(model_arg, "--model-arg"),
        data_kwargs=_kv(data_arg, "--data-arg"), device=device, progress=not as_json,
    )
    metrics = read_metrics(out_dir)
    summary = {"run": str(out_dir), "checkpoints": len(pop), "variants": len(pop.variants),
               "seconds": round(time.perf_counter() - t0, 2)}
    if not as_json:
        _print_training_table(metrics)
    _finish(summary, as_json, "train")


def _print_training_table(metrics: dict) -> None:
    runs = metrics.get("runs", metrics) if isinstance(metrics, dict) else {}
    t = Table(title="final metrics per variant", title_justify="left")
    for c in ("run", "train loss", "train acc", "test loss", "test acc"):
        t.add_column(c)
    for key, rec in (runs.items() if isinstance(runs, dict) else []):
        epochs = rec.get("epochs") if isinstance(rec, dict) else None
        if not epochs:
            continue
        last = epochs[-1]
        t.add_row(str(key), *(f"{last.get(k, float('nan')):.4g}" for k in
                              ("train_loss", "train_accuracy", "test_loss", "test_accuracy")))
    if t.row_count:
        out.print(t)


# ---------------------------------------------------------------- surface
def _surface_common(model, model_arg, data, data_arg, split, samples, device, precision,
                    test_data=None, ev_options: dict | None = None):
    from . import distributed
    from .evaluate import Evaluator

    if distributed.init_from_env() and device is None:
        device = str(distributed.device())
    splits, xy = _load_data(data, data_arg, split, samples, test_data)
    factory, kwargs = _model_factory(model, model_arg, splits)
    return splits, xy, factory, kwargs, functools.partial(
        Evaluator, data=xy, device=device, precision=precision, **(ev_options or {}))


def _load_models(paths: list[Path], factory) -> list:
    from .checkpoints import load_for_model

    models = []
    for p in paths:
        m = factory()
        m.load_state_dict(load_for_model(p, m, finite=True))
        models.append(m)
    return models


#: Grids of more points than this get an estimate of their time and memory (a warning),
#: and are refused when the estimate is over the machine's memory or a week.
WARN_GRID_POINTS = 10**6
#: Host bytes per grid point of a 2-D slice with its figures (measured: a 3000 x 3000
#: random slice took 3.8 GB, most of it matplotlib's contours and 3-D surface).
BYTES_PER_POINT = {1: 64, 2: 420, 3: 16}


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def _human_seconds(t: float) -> str:
    if t < 120:
        return f"{t:.0f} s"
    if t < 7200:
        return f"{t / 60:.0f} min"
    return f"{t / 3600:.1f} h" if t < 172800 else f"{t / 86400:.1f} days"


def _check_grid_cost(sl, ev) -> None:
    """A grid of over `WARN_GRID_POINTS` points: estimate its memory (`BYTES_PER_POINT`)
    and time (a few points timed on this device) and warn, or refuse (one line with the
    estimate) when it would not fit the machine's memory or would take over a week."""
    import math
    import os

    shape = tuple(int(n) for n in sl.source.shape)
    points = math.prod(shape)
    if points <= WARN_GRID_POINTS:
        return
    memory = points * BYTES_PER_POINT.get(len(shape), 16)
    probe = min(32, points)
    x = sl.source.points(0, probe)
    ev.evaluate(x[:4])  # warm-up
    t = time.perf_counter()
    ev.evaluate(x)
    seconds = (time.perf_counter() - t) / probe * points
    grid = " x ".join(map(str, shape))
    estimate = (f"a grid of {grid} = {points:.3g} points: about {_human_bytes(memory)} of "
                f"memory and {_human_seconds(seconds)} on {ev.device}")
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = None
    if available is not None and memory > available:
        raise UsageError(f"{estimate}, over the {_human_bytes(available)} of free memory; "
                         "lower --resolution")
    if seconds > 7 * 86400:
        raise UsageError(f"{estimate}; lower --resolution")
    sys.stderr.write(f"warning: {estimate}\n")


def _write_slice(kind, sl, ev, out_dir: Path, name: str, overwrite: bool, as_json: bool,
                 extra: dict | None = None, show: bool = True):
    from . import distributed
    from .store import Run
    from .surfaces import plot_contour, plot_curve, plot_surface, plot_trajectory, save_figure
    from .surfaces.slices import slice_field

    t0 = time.perf_counter()
    run = Run(out_dir)
    if overwrite or not run.has_field(name):
        _check_grid_cost(sl, ev)
    ds = slice_field(ev, sl, run, name, progress=not as_json, overwrite=overwrite)
    if not distributed.is_main():
        return ds
    figs = []
    small = any(n < 2 for n in ds["loss"].shape)
    ndim = len(sl.dims)
    if ndim == 1:
        figs.append(save_figure(plot_curve(ds), out_dir / f"{name}.png"))
    elif ndim == 2 and not small:
        if kind == "pca":
            figs.append(save_figure(plot_trajectory(sl, ds), out_dir / f"{name}.png"))
        else:
            figs.append(save_figure(plot_contour(ds, points=sl.anchors or None),
                                    out_dir / f"{name}.png"))
        figs.append(save_figure(plot_surface(ds), out_dir / f"{name}_3d.png"))
    loss = ds["loss"].values
    import numpy as np

    finite = loss[np.isfinite(loss)]
    summary = {
        "field": name, "kind": kind, "shape": "x".join(map(str, ds["loss"].shape)),
        "points": int(loss.size), "min_loss": float(finite.min()) if finite.size else None,
        "max_loss": float(finite.max()) if finite.size else None,
        "nonfinite": int(ds.attrs.get("nonfinite", 0)),
        "seconds": round(time.perf_counter() - t0, 2),
        "points_per_second": round(loss.size / max(time.perf_counter() - t0, 1e-9), 1),
        "store": str(run.field_path(name)), "figures": [str(f) for f in figs], **(extra or {}),
    }
    if show:
        _finish(summary, as_json, f"surface {kind}")
    return ds


_MODEL = typer.Option("mlp", "--model", help="Registered model name or package.module:function.")
_DEFAULT_MODEL = "mlp"
_RUN_MODEL = typer.Option(None, "--model", help="Registered model name or package.module:function "
                          "(default: a train run's own, else mlp).")
_TRUST_RUN = typer.Option(False, "--trust-run", help="Let a train run's train.json name a "
                          "package.module:function model or data factory to import and call "
                          "(without it only built-in names are used; a --model or --data you "
                          "give always wins).")
_MODEL_ARG = typer.Option(None, "--model-arg", help="Model factory argument key=value.")
_DATA = typer.Option("mnist1d", "--data", help="Registered dataset or package.module:function.")
_TEST_DATA = typer.Option(
    None, "--test-data",
    help="Test-data factory (package.module:function or file.py:function); default: the "
         "--data factory's test split, or its one set.")
_DATA_ARG = typer.Option(None, "--data-arg", help="Dataset factory argument key=value.")
_BN = typer.Option(
    None, "--bn",
    help="BatchNorm statistics: recompute (the default for models with BatchNorm: "
         "re-estimated at every point from the data, train-mode BatchNorm over all samples) "
         "| own (each checkpoint's stored statistics, interpolated between models).")
_OUTPUT_KEY = typer.Option(
    None, "--output-key",
    help="Key, attribute or tuple index of the model's output the loss uses (default: a "
         "tensor output as is, else its logits).")
_LOSS = typer.Option(None, "--loss", help="cross_entropy | mse (default: cross-entropy for "
                     "integer targets, MSE for float targets).")
_SPLIT = typer.Option("train", help="Evaluate on the train or test split.")
_SAMPLES = typer.Option(None, help="Use only the first N samples.", callback=_number(minimum=1))
_DEVICE = typer.Option(None, help="cpu, cuda, ... (default: cuda if available).",
                       callback=_check_device)
_PRECISION = typer.Option("fp32", help="fp32 | tf32 | bf16")
_OUT = typer.Option(Path("runs/surface"), "--out", help="Run directory.", callback=_check_out)
_NAME = typer.Option(None, help="Field name in the run (default: the slice kind).",
                     callback=_check_name)
_OVERWRITE = typer.Option(False, help="Recompute a stored field from scratch.")
_RES = typer.Option(51, help="Grid points per axis.", callback=_number(minimum=1))


@surface_app.command("interp")
@_handle
def surface_interp(
    a: Path, b: Path, steps: int = typer.Option(25, help="Points on [0, 1].", callback=_number(minimum=2)),
    extrapolate: float = typer.Option(0.0, help="Extend t by this much on both sides.",
                                      callback=_number("nonnegative")),
    model: str = _MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    data_arg: list[str] = _DATA_ARG, test_data: str = _TEST_DATA, split: str = _SPLIT,
    samples: int = _SAMPLES, bn: str = _BN, output_key: str = _OUTPUT_KEY, loss: str = _LOSS,
    device: str = _DEVICE, precision: str = _PRECISION, out_dir: Path = _OUT,
    name: str = _NAME, overwrite: bool = _OVERWRITE, as_json: bool = Json,
    verbose: bool = Verbose,
):
    """Loss along the straight line between checkpoints A and B."""
    import math

    from .points import MAX_GRID_POINTS
    from .surfaces import interpolation

    _setup_logging(verbose)
    if not math.isfinite(extrapolate) or extrapolate < 0:
        raise UsageError(f"--extrapolate must be a finite number >= 0, got {extrapolate}")
    if steps < 2 or (steps - 1) * (1 + 2 * extrapolate) + 1 > MAX_GRID_POINTS:
        raise UsageError(f"--steps {steps} with --extrapolate {extrapolate}: need 2 to "
                         f"{MAX_GRID_POINTS} points on the path")
    _, _, factory, _, make_ev = _surface_common(model, model_arg, data, data_arg, split,
                                                samples, device, precision, test_data,
                                                _eval_options(bn, output_key, loss))
    ma, mb = _load_models([a, b], factory)
    ev = make_ev(ma)
    sl = interpolation(ma, mb, steps=steps, extrapolate=extrapolate, space=ev.space)
    _write_slice("interp", sl, ev, out_dir, name or "interp", overwrite, as_json)


@surface_app.command("random")
@_handle
def surface_random(
    checkpoint: Path, dim: int = typer.Option(2, help="1, 2 or 3 random directions."),
    resolution: int = _RES, span: float = typer.Option(1.0, help="Coordinates in [-span, span].",
                               callback=_number("positive")),
    normalization: str = typer.Option("filter", help="filter | layer | model | none"),
    ignore: str = typer.Option("biasbn", help="biasbn (zero 1-D parameters) or none"),
    seed: int = typer.Option(0, help="Seed of the directions."),
    model: str = _MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    data_arg: list[str] = _DATA_ARG, test_data: str = _TEST_DATA, split: str = _SPLIT,
    samples: int = _SAMPLES, bn: str = _BN, output_key: str = _OUTPUT_KEY, loss: str = _LOSS,
    device: str = _DEVICE, precision: str = _PRECISION, out_dir: Path = _OUT,
    name: str = _NAME, overwrite: bool = _OVERWRITE, as_json: bool = Json,
    verbose: bool = Verbose,
):
    """Slice around one checkpoint along random (filter-normalised) directions."""
    from .surfaces import random_slice

    _setup_logging(verbose)
    _, _, factory, _, make_ev = _surface_common(model, model_arg, data, data_arg, split,
                                                samples, device, precision, test_data,
                                                _eval_options(bn, output_key, loss))
    (m,) = _load_models([checkpoint], factory)
    ev = make_ev(m)
    sl = random_slice(m, ndim=dim, resolution=resolution, span=span,
                      normalization=normalization, ignore=None if ignore == "none" else ignore,
                      seed=seed, space=ev.space)
    _write_slice("random", sl, ev, out_dir, name or f"random{dim}d", overwrite, as_json)


@surface_app.command("plane")
@_handle
def surface_plane(
    a: Path, b: Path, c: Path, resolution: int = _RES,
    margin: float = typer.Option(0.2, help="Extra room around the three models.",
                                 callback=_number("nonnegative")),
    model: str = _MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    data_arg: list[str] = _DATA_ARG, test_data: str = _TEST_DATA, split: str = _SPLIT,
    samples: int = _SAMPLES, bn: str = _BN, output_key: str = _OUTPUT_KEY, loss: str = _LOSS,
    device: str = _DEVICE, precision: str = _PRECISION, out_dir: Path = _OUT,
    name: str = _NAME, overwrite: bool = _OVERWRITE, as_json: bool = Json,
    verbose: bool = Verbose,
):
    """The plane through three checkpoints."""
    from .surfaces import plane

    _setup_logging(verbose)
    _, _, factory, _, make_ev = _surface_common(model, model_arg, data, data_arg, split,
                                                samples, device, precision, test_data,
                                                _eval_options(bn, output_key, loss))
    ma, mb, mc = _load_models([a, b, c], factory)
    ev = make_ev(ma)
    sl = plane(ma, mb, mc, resolution=resolution, margin=margin, space=ev.space)
    _write_slice("plane", sl, ev, out_dir, name or "plane", overwrite, as_json)


@surface_app.command("pca")
@_handle
def surface_pca(
    trajectory: list[Path] = typer.Argument(..., help="Checkpoints in training order "
                                            "(files, a directory or a glob)."),
    resolution: int = _RES, margin: float = typer.Option(0.2, help="Extra room.",
                                                         callback=_number("nonnegative")),
    model: str = _MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    data_arg: list[str] = _DATA_ARG, test_data: str = _TEST_DATA, split: str = _SPLIT,
    samples: int = _SAMPLES, bn: str = _BN, output_key: str = _OUTPUT_KEY, loss: str = _LOSS,
    device: str = _DEVICE, precision: str = _PRECISION, out_dir: Path = _OUT,
    name: str = _NAME, overwrite: bool = _OVERWRITE, as_json: bool = Json,
    verbose: bool = Verbose,
):
    """The PCA plane of a training trajectory, with the checkpoints projected onto it."""
    from .population import Population
    from .surfaces import pca_plane

    _setup_logging(verbose)
    opts = _eval_options(bn, output_key, loss)
    _, _, factory, kwargs, make_ev = _surface_common(model, model_arg, data, data_arg, split,
                                                     samples, device, precision, test_data,
                                                     opts)
    src = [str(p) for p in trajectory] if len(trajectory) > 1 else str(trajectory[0])
    pop = Population.from_checkpoints(src, model, factory_kwargs=kwargs, bn=bn)
    if len(pop) < 4:
        raise UsageError(f"surface pca: need at least 4 checkpoints (two directions from the "
                         f"differences to the last, centred), got {len(pop)}")
    sl = pca_plane(pop.as_points(), resolution=resolution, margin=margin, space=pop.space)
    extra = {"explained_variance": [round(float(v), 4) for v in sl.explained_variance],
             "max_projection_error": float(max(sl.projection_error))}
    _write_slice("pca", sl, make_ev(pop.model(len(pop) - 1), space=pop.space), out_dir,
                 name or "pca", overwrite, as_json, extra)


# ------------------------------------------------------------------ atlas
def build_atlas(pop, xy, out_dir: Path, method: str, dim: int, resolution: int, budget: int,
                tol: float, threshold: str, device, precision, progress: bool,
                embed_kwargs: dict | None = None, memory_budget: int | None = None,
                output=None, loss_fn=None, held_out=None, overwrite: bool = False,
                data: dict[str, str] | None = None):
    """Embed, field, topology, faithfulness (with the residual correction and without it,
    and at the ``held_out`` population's checkpoints, which the map was not fitted to)
    and figures; returns (atlas, summary). ``data`` describes the data
    (``DatasetSplits.describe()`` and what the loss is measured on), stored in
    ``atlas_summary.json`` for the report."""
    from . import distributed
    from .atlas import Atlas
    from .atlas_plot import plot_atlas_persistence, plot_atlas_tree
    from .store import atomic_write_json

    atlas = Atlas(pop, xy, out_dir, device=device, precision=precision,
                  memory_budget=memory_budget, output=output, loss_fn=loss_fn,
                  overwrite=overwrite)
    atlas.embed(method, dim=dim, **(embed_kwargs or {}))
    atlas.field(resolution=resolution, budget=budget, tol=tol, progress=progress)
    try:
        thr: float | str = float(threshold)
    except ValueError:
        thr = threshold
    atlas.topology(threshold=thr)
    faith = atlas.faithfulness()
    raw = atlas.raw_check(resolution=min(resolution, 32), progress=progress)
    held = None
    if held_out is not None and len(held_out):
        held = atlas.overlay(held_out.as_points(), "holdout",
                             labels=[str(lab.get("variant", i)) for i, lab in
                                     enumerate(held_out.labels)])
    if not distributed.is_main():  # under torchrun rank 0 draws and reports
        return atlas, None
    figs = []
    if dim == 2:
        figs.append(atlas.plot_landscape(out_dir / "landscape.png") and out_dir / "landscape.png")
    plot_atlas_tree(atlas, out_dir / "merge_tree.png")
    plot_atlas_persistence(atlas, out_dir / "persistence.png")
    figs += [out_dir / "merge_tree.png", out_dir / "persistence.png"]
    s = atlas.summary()
    summary = {
        "run": str(out_dir), "models": len(pop), "method": method, "dim": dim,
        "bn": atlas.bn, "bn_text": atlas.evaluator.bn_text, "loss": s["loss"], "samples": s["field"]["samples"], "basins": s["basins"]["num_basins"],
        "basins_with_models": s["basins"]["num_model_basins"],
        "variants": s["basins"]["num_variants"],
        "variants_per_basin": s["basins"]["variants_per_basin"],
        "reconstruction_mse": faith["reconstruction_mse_raw"],
        "decoded_loss_rel_error_median": faith["decoded_loss_relative_error_median"],
        "field_error_decades_median": faith["median_decades"]["field_loo"],
        "basins_with_models_uncorrected": raw["raw"]["num_model_basins"],
        "mixed_basins": raw["corrected"]["mixed_basins"],
        "mixed_basins_uncorrected": raw["raw"]["mixed_basins"],
        "figures": [str(f) for f in figs if f],
    }
    if held is not None:
        summary.update(holdout_models=len(held_out),
                       holdout_median_abs_error=held["median_abs_error"])
    if data:
        summary["data"] = dict(data)
    atomic_write_json(out_dir / "atlas_summary.json", summary)
    return atlas, summary


@app.command()
@_handle
def atlas(
    population: str = typer.Option(..., help="Checkpoint directory, glob, or a train run."),
    model: str = _RUN_MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    trust_run: bool = _TRUST_RUN, data_arg: list[str] = _DATA_ARG,
    test_data: str = _TEST_DATA, split: str = _SPLIT, samples: int = _SAMPLES,
    bn: str = _BN, output_key: str = _OUTPUT_KEY, loss: str = _LOSS,
    method: str = typer.Option("ae", help="ae | pca | kpca | umap"),
    dim: int = typer.Option(2, help="Latent dimension (2 to 4)."),
    resolution: int = typer.Option(48, help="Base grid points per latent axis.",
                                   callback=_number(minimum=2)),
    budget: int = typer.Option(6000, help="Most field samples after refinement.",
                               callback=_number("positive")),
    tol: float = typer.Option(0.1, help="Refine cells whose corners differ by more (decades).",
                              callback=_number("positive")),
    threshold: str = typer.Option("0.1", help="Persistence threshold: decades, 'auto' or "
                                  "'N%' of the population's log-loss range.",
                                  callback=_check_threshold),
    device: str = _DEVICE, precision: str = _PRECISION,
    memory_budget: str = typer.Option(
        None, help="Host memory the stages may use, e.g. 4GB: the checkpoints are streamed "
        "into RUN/population.safetensors and read by blocks (populations larger than memory)."),
    holdout: float = typer.Option(
        0.0, help="Fraction of the checkpoints left out of the map's fit; their projection "
        "error (loss at the decoded projected point vs true, nats) is reported.",
        callback=_number("nonnegative")),
    out_dir: Path = typer.Option(Path("runs/atlas"), "--out", help="Run directory.",
                                 callback=_check_out),
    overwrite: bool = typer.Option(
        False, help="Empty the run directory of earlier results and start afresh (needed "
        "when it holds another population's, or fields computed on other data)."),
    as_json: bool = Json, verbose: bool = Verbose,
):
    """The global atlas: embedding, refined loss field, merge tree and basins."""
    from .points import MAX_GRID_POINTS
    from .vectors import parse_bytes

    _setup_logging(verbose)
    if not 1 <= dim <= 4:
        raise UsageError(f"--dim must be 1 to 4, got {dim}")
    if resolution < 2 or resolution**dim > MAX_GRID_POINTS:
        raise UsageError(f"--resolution {resolution} with --dim {dim}: the base grid must have "
                         f"2 to {MAX_GRID_POINTS} points per side^dim")
    opts = _eval_options(bn, output_key, loss)
    splits, xy = _load_data(data, data_arg, split, samples, test_data)
    factory, kwargs = _model_factory(model, model_arg, splits)
    mem = None if memory_budget is None else parse_bytes(memory_budget, "--memory-budget")
    stream = None if mem is None else out_dir / "population.safetensors"
    pop = _load_population(population, model, kwargs, trust_run, out=stream, bn=bn)
    if len(pop) < 3:
        raise UsageError(f"atlas: need at least 3 models, got {len(pop)} from {population}")
    held_out = None
    if holdout:
        if not 0.0 < holdout < 1.0:
            raise UsageError(f"--holdout must be a fraction in (0, 1), got {holdout}")
        from .fingerprint import population_fingerprint

        whole = population_fingerprint(pop)
        pop, held_out = pop.holdout(holdout)
        # the run holds the whole population's results (a later hessian/llc/connect of it
        # into the same --out is the same population)
        pop.__dict__["_lossatlas_fingerprint"] = whole
    _, summary = build_atlas(pop, xy, out_dir, method, dim, resolution, budget, tol, threshold,
                             device, precision, progress=not as_json, memory_budget=mem,
                             output=opts["output"], loss_fn=opts["loss_fn"], held_out=held_out,
                             overwrite=overwrite,
                             data=_measured_on(splits, split, len(xy[1]), samples))
    if summary is not None:  # rank 0 under torchrun
        _finish(summary, as_json, "atlas")


def _measured_on(splits, split: str, n: int, samples: int | None) -> dict[str, str]:
    """``splits.describe()`` plus the samples the landscape's loss is measured on."""
    part = "training data" if split == "train" else "test data"
    if split == "test" and splits.test_is_train:
        part = "training data (no held-out test data)"
    cut = f"the first {n} samples" if samples is not None else f"all {n} samples"
    return {**splits.describe(), "loss measured on": f"{cut} of the {part}"}


# ------------------------------------------------------------------- demo
@app.command()
@_handle
def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory.",
                                 callback=_check_out),
    epochs: int = typer.Option(8, help="Epochs per variant.", callback=_number(minimum=1)),
    every: int = typer.Option(2, help="Checkpoint every k epochs.", callback=_number(minimum=1)),
    samples: int = typer.Option(2000, help="Training samples the landscape is measured on.",
                                callback=_number(minimum=1)),
    resolution: int = typer.Option(40, help="Base grid of the atlas field.",
                                   callback=_number(minimum=2)),
    budget: int = typer.Option(4000, help="Field samples after refinement.",
                               callback=_number("positive")),
    threads: int = typer.Option(1, help="CPU threads (small models run best on one)."),
    device: str = _DEVICE, as_json: bool = Json, verbose: bool = Verbose,
):
    """Train 7 MLP variants on MNIST-1D, draw slices, build the atlas, measure connectivity
    and terrain, map a small BatchNorm CNN population on digits (sub-run RUN/bn_cnn) and
    write the reports."""
    import torch

    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    from .data import create as create_data
    from .evaluate import Evaluator
    from .population import load_population
    from .surfaces import interpolation, pca_plane, random_slice
    from .train import default_demo_variants, train_population

    _setup_logging(verbose)
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    splits = create_data("mnist1d")
    model_kwargs = {"hidden": (128, 128)}
    # independent initialisations, as in the Globscope setup
    variants = [{**v, "init": "own"} for v in default_demo_variants()]
    train_population("mlp", splits, out_dir=out_dir / "train", variants=variants,
                     epochs=epochs, checkpoint_every=every, model_kwargs=model_kwargs,
                     device=device, progress=not as_json)
    pop = load_population(out_dir / "train")
    stages["train"] = time.perf_counter() - t0
    xy = (splits.x_train[:samples], splits.y_train[:samples])
    final = pop.final_indices()
    ev = Evaluator(pop.model(final[0]), xy, device=device, space=pop.space)
    t1 = time.perf_counter()
    a, b = pop.model(final[0]), pop.model(final[1])
    quiet = {"overwrite": False, "as_json": True, "show": False}
    _write_slice("interp", interpolation(a, b, steps=25, extrapolate=0.25), ev,
                 out_dir / "slices", "interp", **quiet)
    _write_slice("random", random_slice(a, ndim=2, resolution=25, span=1.0), ev,
                 out_dir / "slices", "random2d", **quiet)
    traj = pop.trajectories()
    first = next(iter(traj.values()))
    sl = pca_plane(pop.as_points()[first], resolution=25, space=pop.space)
    _write_slice("pca", sl, ev, out_dir / "slices", "pca", **quiet)
    stages["slices"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    measured = {**splits.describe(),
                "loss measured on": f"the first {len(xy[1])} samples of the training data"}
    atlas_obj, summary = build_atlas(pop, xy, out_dir, "ae", 2, resolution, budget, 0.1,
                                     "0.1", device, "fp32", progress=not as_json,
                                     data=measured)
    atlas_obj.reconstruction_table(
        methods=("pca", "kpca", "umap", "ae"),
        variants={"ae-tanh": {"bounded": True, "epochs": 2000},
                  "ae-stress": {"stress": 0.1, "epochs": 2000}})
    stages["atlas"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    summary.update(demo_connectivity(atlas_obj, xy, out_dir, device,
                                     heldout=(splits.x_test, splits.y_test)))
    stages["connectivity"] = time.perf_counter() - t3
    from .dynamics import dynamics_report

    dyn = dynamics_report(out_dir / "train", data=splits, defect=False, figures=False)
    summary["transitions"] = sum(len(v) for e in dyn["runs"].values()
                                 for v in (e.get("transitions") or {}).values())
    t4 = time.perf_counter()
    summary.update(demo_terrain(pop, xy, out_dir, device))
    terrain_table = json.loads((out_dir / "terrain.json").read_text())
    if "top_eigenvalue" in terrain_table:
        atlas_obj.plot_landscape(
            out_dir / "landscape_terrain.png",
            marker_values=dict(zip(terrain_table["indices"], terrain_table["top_eigenvalue"],
                                   strict=True)),
            marker_label="top Hessian eigenvalue")
    stages["terrain"] = time.perf_counter() - t4
    t5 = time.perf_counter()
    summary["bn_cnn"] = demo_bn_cnn(out_dir / "bn_cnn", device, progress=not as_json)
    stages["bn_cnn"] = time.perf_counter() - t5
    summary.update({f"{k}_seconds": round(v, 1) for k, v in stages.items()})
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    summary["basins_vs_variants"] = (
        f"{summary['basins_with_models']} basins hold models, for {summary['variants']} variants "
        f"({summary['basins']} basins in all)")
    from .report import write_report

    summary["report"] = str(write_report(out_dir))
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    _finish(summary, as_json, "demo")
    if not as_json:
        bn_rows = {k: v for k, v in summary["bn_cnn"].items() if not isinstance(v, (dict, list))}
        out.print(_table("BatchNorm CNN population (sub-run bn_cnn)", bn_rows))
        out.print(f"figures and fields in {out_dir}")
        out.print(f"report: {summary['report']}")


def demo_connectivity(atlas_obj, xy, out_dir: Path, device=None, heldout=None) -> dict:
    """The demo's connectivity: barrier matrix of the variants' final models before and
    after weight matching, one trained Bezier curve and the re-basined models, both
    projected onto the atlas."""
    import torch

    from .cli_connect import population_barriers
    from .connectivity import curve_points, train_curve
    from .store import atomic_write_json
    from .symmetry import weight_matching

    pop = atlas_obj.population
    idx = pop.final_indices()
    names = [str(pop.labels[i].get("variant", i)) for i in idx]
    models = [pop.model(i) for i in idx]
    res = population_barriers(models, names, xy, out_dir, align_models=True, device=device)
    import numpy as np

    off = ~np.eye(len(idx), dtype=bool)
    before = float(np.asarray(res["before"])[off].mean())
    after = float(np.asarray(res["after"])[off].mean())
    curve = train_curve(models[0], models[1], xy, kind="bezier", steps=400, device=device)
    t = torch.linspace(0, 1, 61)
    w_a, w_b = pop.as_points()[idx[0]], pop.as_points()[idx[1]]
    pts = curve_points(curve.bends, w_a, w_b, t, "bezier")
    ov_curve = atlas_obj.overlay(pts, f"curve-{names[0]}-{names[1]}",
                                 labels=[f"t={v:.3f}" for v in t.tolist()])
    rebased = [weight_matching(models[0], m) for m in models[1:]]
    space = pop.space
    ov_rebasin = atlas_obj.overlay(torch.stack([space.flatten(m) for m in rebased]),
                                   "rebasin", labels=[f"{n} onto {names[0]}" for n in names[1:]],
                                   partners=[idx[0]] * len(rebased))
    from .store import Run

    Run(out_dir).save_dataset(f"curve-{names[0]}-{names[1]}", curve.curve)
    atomic_write_json(out_dir / "curves.json", {
        "pair": names[:2], "kind": "bezier", "barrier": curve.barrier,
        "line_barrier": curve.line_barrier, "arc_length": curve.arc_length,
        "t": curve.curve["t"].values.tolist(), "loss": curve.curve["loss"].values.tolist(),
        "line_loss": curve.line["loss"].values.tolist(),
    })
    from .dynamics import branches_report

    branches = branches_report(pop, data=heldout if heldout is not None else xy,
                               barrier_matrix=np.asarray(res["before"]),
                               out_dir=out_dir)
    nb = branches.get("num_branches", {})
    return {"branches": sum(nb.values()) if isinstance(nb, dict) else nb,
            "mean_barrier_before_matching": before, "mean_barrier_after_matching": after,
            "bezier_barrier": float(curve.barrier), "line_barrier": float(curve.line_barrier),
            "curve_projection_mae": ov_curve["mae"], "rebasin_projection_mae": ov_rebasin["mae"],
            "rebased_in_partner_basin": f"{sum(ov_rebasin.get('same_basin_as_partner', []))}"
                                        f" of {len(rebased)}"}


def demo_terrain(pop, xy, out_dir: Path, device=None) -> dict:
    """The demo's terrain table: top eigenvalue, trace, sharpness and LLC per variant."""
    from .cli_terrain import population_terrain

    table = population_terrain(pop, xy, out_dir, ("eigenvalues", "trace", "sharpness", "llc"),
                               k=1, num_probes=30,
                               llc_kwargs={"num_chains": 4, "num_draws": 100}, device=device)
    cols = [c for c in ("top_eigenvalue", "trace", "epsilon_sharpness", "adaptive_sharpness",
                        "llc_mean") if c in table]
    if cols:
        t = Table(title="terrain of the final models", title_justify="left")
        t.add_column("model")
        for c in cols:
            t.add_column(c)
        for i, name in enumerate(table["models"]):
            row = []
            for c in cols:
                v = table[c][i]
                v = v[0] if isinstance(v, list) else v
                row.append(f"{v:.4g}")
            t.add_row(name, *row)
        err.print(t)
    return {"terrain": str(out_dir / "terrain.json")}


DEMO_BN_VARIANTS = [
    {"name": "A", "optimizer": "sgd", "lr": 0.05, "batch_size": 64, "init": "own"},
    {"name": "B", "optimizer": "adam", "lr": 3e-3, "batch_size": 64, "init": "own"},
    {"name": "C", "optimizer": "sgd", "lr": 0.2, "batch_size": 128, "init": "own"},
]


def demo_bn_cnn(out_dir: Path, device=None, progress: bool = False, epochs: int = 4,
                samples: int = 500, resolution: int = 12, budget: int = 300,
                ae_epochs: int = 1500) -> dict:
    """The demo's BatchNorm population: 3 variants x 3 checkpoints (epochs 0, 2, 4) of a
    small BatchNorm CNN (``cnn2d_bn``) on scikit-learn digits, its own atlas in
    ``out_dir`` (statistics recomputed at every point, the default policy) and report.
    Returns its summary: basins against variants, decoded error, the policy, and how far
    each checkpoint's own eval-mode loss is from its loss under the policy."""
    import numpy as np

    from .data import create as create_data
    from .population import load_population
    from .report import write_report
    from .train import train_population

    splits = create_data("digits")
    train_population("cnn2d_bn", splits, out_dir=out_dir / "train", variants=DEMO_BN_VARIANTS,
                     epochs=epochs, checkpoint_every=max(1, epochs // 2), device=device,
                     progress=progress)
    pop = load_population(out_dir / "train")
    xy = (splits.x_train[:samples], splits.y_train[:samples])
    measured = {**splits.describe(),
                "loss measured on": f"the first {len(xy[1])} samples of the training data"}
    _, summary = build_atlas(pop, xy, out_dir, "ae", 2, resolution, budget, 0.1, "0.1",
                             device, "fp32", progress=progress,
                             embed_kwargs={"epochs": ae_epochs, "lr": 1e-2}, data=measured)
    per = json.loads((out_dir / "faithfulness.json").read_text())["per_model"]
    keep = {k: summary[k] for k in ("run", "models", "variants", "basins",
                                    "basins_with_models", "bn", "bn_text",
                                    "decoded_loss_rel_error_median",
                                    "field_error_decades_median") if k in summary}
    keep["basins_vs_variants"] = (f"{summary['basins_with_models']} basins hold models, "
                                  f"for {summary['variants']} variants")
    if per.get("eval_mode_loss"):
        gap = np.abs(np.log10(np.asarray(per["eval_mode_loss"], float)
                              / np.asarray(per["true_loss"], float)))
        keep["eval_mode_vs_policy_max_decades"] = float(np.nanmax(gap))
    keep["report"] = str(write_report(out_dir))
    return keep


@app.command()
@_handle
def report(run: Path = typer.Argument(..., help="Run directory."), as_json: bool = Json):
    """Write RUN/report.html (one self-contained page, opens offline) and RUN/summary.json,
    from what the run directory holds (nothing is recomputed)."""
    from .report import write_report

    path = write_report(run)
    _finish({"report": str(path), "summary": str(Path(run) / "summary.json")}, as_json,
            "report")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()


# verbs defined in their own modules register themselves on ``app``
from . import cli_connect, cli_dynamics, cli_studies, cli_terrain  # noqa: E402,F401
