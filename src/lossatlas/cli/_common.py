"""What every verb of the ``lossatlas`` command line shares: the options, their
callbacks (one-line refusals naming the option), the loaders of data, models and
populations, the summary tables (`_finish`) and the error handling (`_handle`).

Verb modules import this module and the library, never each other; the library never
imports the CLI. Imports of torch and friends happen inside the functions, so that
``lossatlas --help`` stays fast (tests/test_startup.py).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import LossatlasError

err = Console(stderr=True)
out = Console()

#: The model factory of ``--model`` when neither it nor a train run names one.
_DEFAULT_MODEL = "mlp"

BUG_HINT = ("this looks like a bug in lossatlas; please report it, with the command line "
            "and the traceback above")


class UsageError(LossatlasError, ValueError):
    """Bad command-line input (reported as one line)."""


def _expected(e: BaseException) -> bool:
    """An error about the input (reported as one line), not a bug in lossatlas: a
    `LossatlasError` (usage errors included), a ``ValueError``, a file that is missing
    or cannot be read or written (``OSError`` from a system call), or memory running out.
    """
    if isinstance(e, (LossatlasError, ValueError, MemoryError)):
        return True
    if isinstance(e, (FileNotFoundError, FileExistsError, IsADirectoryError,
                      NotADirectoryError, PermissionError)):
        return True
    return isinstance(e, OSError) and (e.errno is not None or e.filename is not None)


def _one_line(e: BaseException) -> str:
    """The first line of an expected error's message (an ``OSError`` as its reason and
    file, a ``KeyError`` without the quotes ``str`` adds)."""
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.strerror:
        return e.strerror + (f": {e.filename}" if e.filename else "")
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return str(msg).splitlines()[0] if str(msg).strip() else type(e).__name__


def _report_error(e: BaseException, verbose: bool) -> None:
    """On stderr: an expected error as one line ``error: ...`` (after its traceback with
    ``--verbose``); anything else (a bug) with its traceback and `BUG_HINT`."""
    if not _expected(e):
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        first = str(e).splitlines()[0] if str(e).strip() else ""
        sys.stderr.write(f"error: {type(e).__name__}{': ' + first if first else ''}\n"
                         f"{BUG_HINT}\n")
        return
    if verbose:
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    sys.stderr.write(f"error: {_one_line(e)}\n")


def _handle(fn):
    """Run a verb: its option groups (a parameter whose default is an `Options`) expanded
    into their options and passed back as an `Inputs`; the run directories it writes
    into locked until it ends; an error about the input one line on stderr, a bug its
    traceback (`_report_error`); either way exit code 1. ``--verbose`` always shows the
    traceback."""
    signature, groups = _expand_groups(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..store import hold_locks, release_locks

        for param, group in groups.items():
            kwargs[param] = group.collect(kwargs)
        hold_locks()  # the run directories a command writes into stay locked until it ends
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as e:  # noqa: BLE001 - every error ends as a message and exit 1
            _report_error(e, bool(kwargs.get("verbose")))
            raise typer.Exit(1) from None
        finally:
            release_locks()  # the run directories this command wrote into

    if groups:  # what typer reads: the groups' options in place of the group parameters
        wrapper.__signature__ = signature
        wrapper.__annotations__ = {p.name: p.annotation
                                   for p in signature.parameters.values()
                                   if p.annotation is not inspect.Parameter.empty}
    return wrapper


def _refuse(message: str):
    """One line ``error: message`` on stderr and exit code 1 (for option callbacks, which
    run before `_handle`)."""
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(1)


def _option_name(param) -> str:
    """The option's current name: its first long name (later ones are deprecated)."""
    opts = getattr(param, "opts", None) or [f"--{param.name}"]
    return next((o for o in opts if o.startswith("--")), max(opts, key=len))


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
    from ..batches import index_inputs
    from ..data import load_data

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


def _floats(text: str, option: str) -> tuple[float, ...]:
    """Comma-separated numbers of ``option`` (one line naming it otherwise)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated numbers, got {text!r}") from None


def _eval_options(bn: str | None, output_key: str | None, loss: str | None) -> dict[str, Any]:
    """Evaluator keyword arguments from ``--bn``, ``--output-key`` and ``--loss``
    (validated here, so a typo is one line naming the option)."""
    from ..evaluate import LOSSES

    if bn is not None and bn not in ("own", "recompute"):
        raise UsageError(f"--bn must be 'recompute' or 'own', got {bn!r}")
    if loss is not None and loss not in LOSSES:
        raise UsageError(f"--loss must be one of {', '.join(sorted(LOSSES))}, got {loss!r}")
    output: str | int | None = output_key
    if output_key is not None and output_key.lstrip("-").isdigit():
        output = int(output_key)
    return {"bn": bn, "output": output, "loss_fn": loss}


def _model_factory(spec: str | None, args: list[str] | None, splits=None):
    from ..population import resolve_model_factory

    spec = spec or _DEFAULT_MODEL
    kwargs = _kv(args, "--model-arg")
    if splits is not None and hasattr(splits, "num_classes"):
        from ..train import _infer_model_kwargs

        kwargs = _infer_model_kwargs(spec, splits, kwargs)
    build, _ = resolve_model_factory(spec, kwargs)
    try:
        build()  # fail here, naming the options, rather than deep inside a command
    except (TypeError, ValueError) as e:
        raise UsageError(f"--model {spec!r} / --model-arg: {e}") from e
    return build, kwargs


def _load_population(source: str, model: str | None, kwargs: dict, trust_run: bool,
                     stream_to: Path | None = None, bn: str | None = None):
    """``--population``: a train run (its own model unless --model names one; a factory its
    train.json names runs only if built in or with --trust-run), or checkpoints of --model
    (default mlp); streamed into the vector file ``stream_to`` when given."""
    from ..population import Population, is_train_run

    if model is None and not is_train_run(source):
        model = _DEFAULT_MODEL
    return Population.open(source, model, None if model is None else kwargs,
                           trust_run=trust_run, out=stream_to, bn=bn)


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


def _progress(as_json: bool) -> bool:
    """Whether a verb shows progress bars: not with ``--json`` (stdout is for the
    summary) nor under ``lossatlas --no-progress`` (``LOSSATLAS_PROGRESS=0``)."""
    import os

    return not as_json and os.environ.get("LOSSATLAS_PROGRESS", "").strip() != "0"


def _record_stage(out_dir: Path, stage: str, seconds: float, **info: Any) -> None:
    """Record ``stage`` and its wall time (seconds) in ``OUT/run.json`` (`Run.record_stage`,
    as the atlas records its stages)."""
    from ..store import Run

    Run(out_dir).record_stage(stage, seconds, **info)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _load_models(paths: list[Path], factory) -> list:
    """One model of ``factory`` per checkpoint path, its weights loaded (finite only)."""
    from ..checkpoints import load_for_model

    models = []
    for p in paths:
        m = factory()
        m.load_state_dict(load_for_model(p, m, finite=True))
        models.append(m)
    return models


Verbose = typer.Option(False, "--verbose", "-v",
                       help="Log what happens; on an error, show its traceback.")
Json = typer.Option(False, "--json", help="Print a machine-readable summary on stdout.")


# options shared by the verbs
_MODEL = typer.Option("mlp", "--model", help="Registered model name or package.module:function.")
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
_OVERWRITE_RUN = typer.Option(
    False, help="With --population: empty the run directory of earlier results and start "
    "afresh (needed when it holds another population's).")


# ------------------------------------------------------------ option groups
_SHARED: dict[str, tuple[str, Any, Any]] = {
    # key: (parameter name, type, typer option); "run_model" is --model for a train run
    "model": ("model", str, _MODEL),
    "run_model": ("model", str, _RUN_MODEL),
    "model_arg": ("model_arg", list[str], _MODEL_ARG),
    "data": ("data", str, _DATA),
    "trust_run": ("trust_run", bool, _TRUST_RUN),
    "data_arg": ("data_arg", list[str], _DATA_ARG),
    "test_data": ("test_data", str, _TEST_DATA),
    "split": ("split", str, _SPLIT),
    "samples": ("samples", int, _SAMPLES),
    "bn": ("bn", str, _BN),
    "output_key": ("output_key", str, _OUTPUT_KEY),
    "loss": ("loss", str, _LOSS),
    "device": ("device", str, _DEVICE),
    "precision": ("precision", str, _PRECISION),
}


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What a verb's shared options say: the models (``--model``, ``--model-arg``,
    ``--trust-run``), the data (``--data``, ``--data-arg``, ``--test-data``, ``--split``,
    ``--samples``) and how the loss is evaluated (``--bn``, ``--output-key``, ``--loss``,
    ``--device``, ``--precision``). An option the verb does not take keeps the default
    here. `load` turns them into data, a model factory, populations and Evaluators."""

    model: str | None = None
    model_arg: list[str] | None = None
    trust_run: bool = False
    data: str = "mnist1d"
    data_arg: list[str] | None = None
    test_data: str | None = None
    split: str = "train"
    samples: int | None = None
    bn: str | None = None
    output_key: str | None = None
    loss: str | None = None
    device: str | None = None
    precision: str = "fp32"

    def evaluation(self) -> dict[str, Any]:
        """The Evaluator's ``bn``, ``output`` and ``loss_fn`` (`_eval_options`: a bad
        ``--bn`` / ``--loss`` is one line naming the option)."""
        return _eval_options(self.bn, self.output_key, self.loss)

    def load(self) -> Loaded:
        """Check the evaluation options, load the data (`_load_data`) and build the model
        factory (`_model_factory`, its sizes inferred from the data)."""
        self.evaluation()
        splits, xy = _load_data(self.data, self.data_arg, self.split, self.samples,
                                self.test_data)
        factory, kwargs = _model_factory(self.model, self.model_arg, splits)
        return Loaded(self, splits, xy, factory, kwargs)


@dataclasses.dataclass(frozen=True)
class Loaded:
    """The shared options loaded (`Inputs.load`): ``splits`` (`DatasetSplits`), ``xy`` the
    ``(x, y)`` the loss is measured on, the model ``factory`` and its ``factory_kwargs``."""

    inputs: Inputs
    splits: Any
    xy: tuple
    factory: Callable[[], Any]
    factory_kwargs: dict[str, Any]

    def models(self, paths: list[Path]) -> list:
        """One model of the factory per checkpoint path, its weights loaded."""
        return _load_models(paths, self.factory)

    def population(self, source: str, stream_to: Path | None = None):
        """The `Population` of ``--population SOURCE`` (`_load_population`; streamed into
        the vector file ``stream_to`` when given)."""
        i = self.inputs
        return _load_population(source, i.model, self.factory_kwargs, i.trust_run,
                                stream_to=stream_to, bn=i.bn)

    def evaluator(self, model, **kwargs: Any):
        """An `Evaluator` of ``model`` on ``xy`` with the options' device, precision, BatchNorm
        policy, output and loss (``kwargs``, e.g. ``space``, added)."""
        from ..evaluate import Evaluator

        i = self.inputs
        return Evaluator(model, data=self.xy, device=i.device, precision=i.precision,
                         **self.inputs.evaluation(), **kwargs)

    def measured_on(self) -> dict[str, str]:
        """What the loss is measured on (`pipeline.measured_on`), for a run's records."""
        from ..pipeline import measured_on

        return measured_on(self.splits, self.inputs.split, len(self.xy[1]),
                           self.inputs.samples)


@dataclasses.dataclass(frozen=True)
class Options:
    """A group of the shared options (keys of `_SHARED`) that a verb takes as ONE
    parameter: ``inputs: Inputs = EVALUATION``. `_handle` puts the group's options in the
    verb's signature at that place (``--help`` lists them there) and passes their values
    as an `Inputs`; ``EVALUATION.without("loss")``, ``POPULATION.plus("precision")``
    change a group for one verb."""

    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [k for k in self.keys if k not in _SHARED]
        if unknown:
            raise ValueError(f"Options: unknown shared options {unknown}; known: "
                             f"{', '.join(_SHARED)}")

    def without(self, *keys: str) -> Options:
        return Options(tuple(k for k in self.keys if k not in keys))

    def plus(self, *keys: str) -> Options:
        return Options(self.keys + tuple(k for k in keys if k not in self.keys))

    def parameters(self) -> list[inspect.Parameter]:
        return [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                  default=option, annotation=kind)
                for name, kind, option in (_SHARED[k] for k in self.keys)]

    def collect(self, kwargs: dict[str, Any]) -> Inputs:
        """Pop this group's option values out of a verb's ``kwargs`` into an `Inputs`."""
        return Inputs(**{p.name: kwargs.pop(p.name) for p in self.parameters()})


#: Checkpoints of ``--model`` (default mlp) evaluated on data: the surface verbs.
EVALUATION = Options(("model", "model_arg", "data", "data_arg", "test_data", "split",
                      "samples", "bn", "output_key", "loss", "device", "precision"))
#: A population (a train run's own model unless --model) or checkpoints, measured on
#: data: atlas, connect, hessian, llc.
POPULATION = Options(("run_model", "model_arg", "data", "trust_run", "data_arg",
                      "test_data", "split", "samples", "bn", "device"))


def _expand_groups(fn) -> tuple[inspect.Signature, dict[str, Options]]:
    """``fn``'s signature with each `Options` parameter replaced by the group's options,
    and those parameters by name. (The verb's own annotations stay as written; typer
    resolves them in the verb's module.)"""
    signature = inspect.signature(fn)
    params: list[inspect.Parameter] = []
    groups: dict[str, Options] = {}
    for p in signature.parameters.values():
        if isinstance(p.default, Options):
            groups[p.name] = p.default
            params += p.default.parameters()
        else:
            params.append(p)
    names = [p.name for p in params]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"{fn.__name__}: options {clash} are both the verb's own and in "
                         "a shared group; drop them from one")
    return signature.replace(parameters=params), groups


def out_option(default: str, help: str = "Run directory.") -> Any:
    """``--out``: the directory a verb writes (``out_dir``), ``default`` unless given."""
    return typer.Option(Path(default), "--out", help=help, callback=_check_out)


_POPULATION_MODE = typer.Option(None, "--population", help="Population mode: dir or train run.")
