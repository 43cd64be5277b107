"""The options of every verb in ``cli/atlas.py``, ``surface.py``, ``connect.py``,
``terrain.py``, ``dynamics.py`` and ``report.py``: names (with their deprecated aliases)
and defaults, written down from ``--help`` before the shared options moved into
``cli/_common.py``'s groups, so that the refactoring can be seen to change none of them.
A verb that gains or renames an option updates its row here on purpose. (Arguments are
keyed by their Python name: ``report`` and ``dynamics`` call theirs ``run_dir``, shown
as ``RUN``.)"""

from __future__ import annotations

from pathlib import PosixPath

import pytest
import typer

from lossatlas.cli import app

_EVAL = {"--model": "mlp", "--model-arg": None, "--data": "mnist1d", "--data-arg": None,
         "--test-data": None, "--split": "train", "--samples": None, "--bn": None,
         "--output-key": None, "--loss": None, "--device": None, "--precision": "fp32"}
_SLICE = {"--out": PosixPath("runs/surface"), "--name": None,
          "--overwrite --no-overwrite": False, "--json": False, "--verbose -v": False}
_POP = {"--population": None, "--model": None, "--model-arg": None, "--data": "mnist1d",
        "--trust-run": False, "--data-arg": None, "--test-data": None, "--split": "train",
        "--samples": None, "--bn": None, "--device": None}
_TAIL = {"--overwrite --no-overwrite": False, "--json": False, "--verbose -v": False}

EXPECTED: dict[str, dict] = {
    "atlas": {"--population": None, "--model": None, "--model-arg": None,
              "--data": "mnist1d", "--trust-run": False, "--data-arg": None,
              "--test-data": None, "--split": "train", "--samples": None, "--bn": None,
              "--output-key": None, "--loss": None, "--method": "ae", "--dim": 2,
              "--resolution": 48, "--budget": 6000, "--tol": 0.1, "--threshold": "0.1",
              "--device": None, "--precision": "fp32", "--memory-budget": None,
              "--holdout": 0.0, "--check-saddles": False, "--saddle-k": 1,
              "--saddle-tol": 0.05, "--out": PosixPath("runs/atlas"), **_TAIL},
    "report": {"<run_dir>": None, "--json": False},
    "connect": {"<a>": None, "<b>": None, "--curve": "bezier", "--train-steps": 1000,
                "--points": 61, "--align": False, "--layer-noise": False,
                "--noise-scales": "0.05,0.1,0.2,0.5,1.0", "--noise-draws": 4, **_POP,
                "--out": PosixPath("runs/connect"), **_TAIL},
    "align": {"<a>": None, "<b>": None, "--method": "weight", "--ot-solver": "exact",
              "--reg": 0.01, "--rescale --no-rescale": False, "--signs": False,
              "--repair --no-repair": False, "--points --steps": 25, "--model": "mlp",
              "--model-arg": None, "--data": "mnist1d", "--data-arg": None,
              "--split": "train", "--samples": None, "--device": None,
              "--out": PosixPath("runs/align"), "--json": False, "--verbose -v": False},
    "dynamics": {"<run_dir>": None, "--defect --no-defect": True,
                 "--stages --no-stages": False, "--max-checkpoints": 100,
                 "--trust-run": False, "--json": False, "--verbose -v": False},
    "branches": {"<population>": None, "--metric": "disagreement",
                 "--barrier-threshold": 0.1, "--branch-threshold": 0.1, "--data": None,
                 "--data-arg": None, "--model": None, "--model-arg": None,
                 "--trust-run": False, "--json": False, "--verbose -v": False},
    "hessian": {"<checkpoint>": None, "--k -k --top": 5, "--trace": False,
                "--density": False, "--bottom": None, "--saddle-check": False,
                "--saddle-tol": 0.05, **_POP, "--out": PosixPath("runs/hessian"), **_TAIL},
    "llc": {"<checkpoint>": None, "--chains": 8, "--draws": 200, "--burnin": 0,
            "--epsilon": 0.001, "--nbeta": None, "--gamma": 100.0, "--batch-size": 32,
            **_POP, "--out": PosixPath("runs/llc"), **_TAIL},
    "surface interp": {"<a>": None, "<b>": None, "--points --steps": 25,
                       "--extrapolate": 0.0, **_EVAL, **_SLICE},
    "surface random": {"<checkpoint>": None, "--dim": 2, "--resolution": 51, "--span": 1.0,
                       "--normalization": "filter", "--ignore": "biasbn", "--seed": 0,
                       **_EVAL, **_SLICE},
    "surface plane": {"<a>": None, "<b>": None, "<c>": None, "--resolution": 51,
                      "--margin": 0.2, **_EVAL, **_SLICE},
    "surface pca": {"<trajectory>": None, "--resolution": 51, "--margin": 0.2, **_EVAL,
                    **_SLICE},
    "surface hessian": {"<checkpoint>": None, "--dim": 2, "--which": "largest",
                        "--resolution": 51, "--span": 1.0, "--seed": 0,
                        **{k: v for k, v in _EVAL.items()
                           if k not in ("--output-key", "--loss")}, **_SLICE},
}

#: Options a verb must be given (the rest have the defaults above).
REQUIRED = {"atlas": {"--population"}, "align": {"<a>", "<b>"}, "report": {"<run_dir>"},
            "dynamics": {"<run_dir>"}, "branches": {"<population>"},
            "surface interp": {"<a>", "<b>"}, "surface random": {"<checkpoint>"},
            "surface plane": {"<a>", "<b>", "<c>"}, "surface pca": {"<trajectory>"},
            "surface hessian": {"<checkpoint>"}}


def _commands() -> dict:
    """Every leaf command of the app by its name (``"surface interp"``, ...)."""
    found = {}

    def walk(cmd, prefix: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, (*prefix, name))
        else:
            found[" ".join(prefix)] = cmd

    walk(typer.main.get_command(app), ())
    return found


def _options(cmd) -> tuple[dict, set[str]]:
    """``({option names: default}, {required options})`` of a click command, arguments as
    ``<name>``."""
    options, required = {}, set()
    for p in cmd.params:
        key = (f"<{p.name}>" if p.param_type_name == "argument"
               else " ".join([*p.opts, *p.secondary_opts]))
        options[key] = p.default
        if p.required:
            required.add(key)
    return options, required


@pytest.mark.parametrize("verb", sorted(EXPECTED))
def test_options_and_defaults_of_every_verb_are_unchanged(verb):
    options, required = _options(_commands()[verb])
    assert set(options) == set(EXPECTED[verb]), (
        f"added: {set(options) - set(EXPECTED[verb])}, "
        f"missing: {set(EXPECTED[verb]) - set(options)}")
    assert options == EXPECTED[verb]
    assert required == REQUIRED.get(verb, set())


def test_every_verb_of_these_modules_is_snapshotted():
    from lossatlas.cli import atlas, connect, dynamics, report, surface, terrain

    owned = {f.__name__ for mod in (atlas, connect, dynamics, report, surface, terrain)
             for f in map(mod.__dict__.get, mod.__all__)}
    commands = _commands()
    covered = {commands[v].callback.__name__ for v in EXPECTED}
    assert owned <= covered, owned - covered


# ------------------------------------------------------------ option groups
def _group_app(group):
    """An app of one verb taking ``group`` as ``inputs``, returning what it got."""
    from lossatlas.cli._common import Inputs, _handle

    got = {}
    app_ = typer.Typer()

    @app_.command()
    @_handle
    def verb(first: int = typer.Option(1), inputs: Inputs = group,
             last: str = typer.Option("z")):
        got.update(first=first, inputs=inputs, last=last)

    @app_.command()
    def other():
        """A second command, so that typer keeps the command names."""

    return app_, got, verb


def test_a_group_becomes_its_options_in_place_and_arrives_as_inputs():
    from typer.testing import CliRunner

    from lossatlas.cli._common import EVALUATION, Inputs

    group = EVALUATION.without("test_data", "output_key", "loss").plus("trust_run")
    app_, got, verb = _group_app(group)
    res = CliRunner().invoke(app_, ["verb", "--first", "3", "--model", "cnn", "--model-arg",
                                    "width=4", "--samples", "7", "--bn", "own",
                                    "--trust-run", "--last", "q"])
    assert res.exit_code == 0, res.output
    assert got["first"] == 3 and got["last"] == "q"
    assert got["inputs"] == Inputs(model="cnn", model_arg=["width=4"], trust_run=True,
                                   samples=7, bn="own")  # the rest: the options' defaults
    names = list(__import__("inspect").signature(verb).parameters)
    assert names == ["first", "model", "model_arg", "data", "data_arg", "split", "samples",
                     "bn", "device", "precision", "trust_run", "last"]
    # the options' own checks still run (callbacks of the shared typer.Options)
    res = CliRunner().invoke(app_, ["verb", "--samples", "0"])
    assert res.exit_code == 1 and res.output.strip() == "error: --samples must be >= 1, got 0"


def test_a_group_refuses_unknown_options_and_clashes():
    from lossatlas.cli._common import POPULATION, Inputs, Options, _handle

    with pytest.raises(ValueError, match="unknown shared options \\['modle'\\]"):
        Options(("model", "modle"))

    def verb(model: str = typer.Option("x"), inputs: Inputs = POPULATION):
        pass

    with pytest.raises(ValueError, match="verb: options \\['model'\\] are both"):
        _handle(verb)


def test_loaded_inputs_build_the_evaluator_and_population_the_options_name(tmp_path):
    import torch

    from lossatlas.checkpoints import save_state_dict
    from lossatlas.cli._common import Inputs, UsageError
    from lossatlas.evaluate import Evaluator
    from lossatlas.models import create

    # one output and --loss mse: a regression on the class index (cross-entropy would be 0)
    inputs = Inputs(model="mlp", model_arg=["hidden=[8]", "num_classes=1"], data="blobs",
                    data_arg=["num_features=6", "num_classes=3"], samples=20, loss="mse",
                    device="cpu")
    loaded = inputs.load()
    assert loaded.xy[0].shape == (20, 6) and loaded.factory_kwargs["hidden"] == [8]
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        paths.append(save_state_dict(create("mlp", in_features=6, hidden=(8,),
                                            num_classes=1).state_dict(),
                                     tmp_path / f"m{seed}.pt"))
    models = loaded.models(paths)
    ref = Evaluator(models[0], loaded.xy, loss_fn="mse", device="cpu")
    ev = loaded.evaluator(models[0])
    loss = ev.evaluate_models(models)["loss"]
    assert torch.allclose(loss, ref.evaluate_models(models)["loss"]) and (loss > 0).all()
    assert len(loaded.population(str(tmp_path))) == 3
    with pytest.raises(UsageError, match="--bn must be"):
        Inputs(bn="mine").load()
