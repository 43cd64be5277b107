"""The CLI's shape: a package whose verb modules import only ``_common`` and the
library, no library module importing the CLI, the entry points that still resolve, and
its error handling (one line for input errors, a traceback for bugs)."""

from __future__ import annotations

import ast
import errno
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import lossatlas
from lossatlas.cli._common import BUG_HINT, Verbose, _handle
from lossatlas.errors import LossatlasError

SRC = Path(lossatlas.__file__).parent
ROOT = SRC.parent.parent
runner = CliRunner()


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(level, module, imported names) of every import in ``path`` (level 0: absolute)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(0, a.name, []) for a in node.names]
    return found


def _absolute(rel: Path, level: int, module: str) -> str:
    """The absolute name of ``from <level dots><module> import`` in ``SRC / rel``."""
    if level == 0:
        return module
    package = ["lossatlas", *rel.parts[:-1]]
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def test_no_library_module_imports_the_cli():
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "cli":
            continue
        for level, module, names in _imports(path):
            target = _absolute(rel, level, module)
            for name in [target, *(f"{target}.{n}" for n in names)]:
                if name == "lossatlas.cli" or name.startswith("lossatlas.cli."):
                    offenders.append(f"{rel}: {name}")
    assert not offenders
    assert _absolute(Path("connectivity/population.py"), 2, "cli") == "lossatlas.cli"
    assert _absolute(Path("demo.py"), 1, "") == "lossatlas"


def test_verb_modules_import_only_common_and_the_library():
    verbs = [p for p in (SRC / "cli").glob("*.py") if p.name not in ("__init__.py",
                                                                      "__main__.py")]
    assert {p.stem for p in verbs} >= {"_common", "train", "surface", "atlas", "demo",
                                       "connect", "terrain", "dynamics", "studies", "report"}
    for path in verbs:
        for level, module, _ in _imports(path):
            if level == 1:  # a sibling in lossatlas.cli
                assert module == "_common", f"{path.name} imports .{module}"
            assert not (level == 0 and module.startswith("lossatlas.cli")), path.name


def test_console_script_and_module_entry_points_resolve():
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, attr = spec["lossatlas"].split(":")
    assert isinstance(getattr(importlib.import_module(module), attr), typer.Typer)
    out = subprocess.run([sys.executable, "-m", "lossatlas.cli", "list", "models"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "mlp" in out.stdout.split()


def test_names_moved_out_of_the_cli_still_import_from_it():
    import lossatlas.cli as cli
    from lossatlas.connectivity.population import population_barriers
    from lossatlas.curvature.population import population_terrain
    from lossatlas.demo import demo_bn_cnn
    from lossatlas.pipeline import build_atlas

    assert cli.demo_bn_cnn is demo_bn_cnn and cli.build_atlas is build_atlas
    assert cli.population_barriers is population_barriers is lossatlas.population_barriers
    assert cli.population_terrain is population_terrain is lossatlas.population_terrain
    with pytest.raises(AttributeError, match="no_such_name"):
        cli.no_such_name  # noqa: B018


# ---------------------------------------------------------------- errors
def _error_app(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @_handle
    def fail(verbose: bool = Verbose):
        raise exc

    @app.command()
    @_handle
    def ok():
        """A second command, so that typer keeps the command names."""

    return app


@pytest.mark.parametrize("exc,line", [
    (LossatlasError("stored embedding: truncated\nsecond line"),
     "error: stored embedding: truncated"),
    (ValueError("--foo must be > 0, got -1"), "error: --foo must be > 0, got -1"),
    (FileNotFoundError("dynamics_report: run directory x not found"),
     "error: dynamics_report: run directory x not found"),
    (OSError(errno.ENOSPC, "No space left on device", "/tmp/out"),
     "error: No space left on device: /tmp/out"),
    (PermissionError(errno.EACCES, "Permission denied", "/ro"),
     "error: Permission denied: /ro"),
])
def test_input_errors_are_one_line(exc, line):
    res = runner.invoke(_error_app(exc), ["fail"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [line]


@pytest.mark.parametrize("exc", [TypeError("unsupported operand"), KeyError("weight"),
                                 RuntimeError("shape mismatch"), AttributeError("x"),
                                 OSError("no errno, no file")])
def test_anything_else_is_a_bug_with_its_traceback(exc):
    res = runner.invoke(_error_app(exc), ["fail"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-2].startswith(f"error: {type(exc).__name__}")
    assert lines[-1] == BUG_HINT


def test_verbose_shows_the_traceback_of_an_input_error():
    res = runner.invoke(_error_app(ValueError("bad value")), ["fail", "--verbose"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "error: bad value"
    assert BUG_HINT not in res.output


def test_errors_of_lossatlas_derive_from_lossatlas_error_and_keep_their_bases():
    from lossatlas.checkpoints import CheckpointError
    from lossatlas.cli import UsageError
    from lossatlas.manifold.base import NotFittedError
    from lossatlas.population import UntrustedRunError
    from lossatlas.registry import FactoryError, UnknownNameError
    from lossatlas.store import RunInUseError, StaleResultError
    from lossatlas.vectors import VectorFileError

    bases = {CheckpointError: ValueError, UsageError: ValueError,
             NotFittedError: (ValueError, AttributeError), UntrustedRunError: ValueError,
             FactoryError: ValueError, UnknownNameError: (KeyError, ValueError),
             RunInUseError: RuntimeError, StaleResultError: ValueError,
             VectorFileError: ValueError}
    for cls, base in bases.items():
        assert issubclass(cls, LossatlasError), cls
        for b in base if isinstance(base, tuple) else (base,):
            assert issubclass(cls, b), (cls, b)
    # the mixin leaves the message as it was (UnknownNameError's own __str__)
    assert str(UnknownNameError("x")) == "x"


# ------------------------------------------------------------ vocabulary
@pytest.mark.parametrize("args,message", [
    (["hessian", "m.pt", "--k", "0"], "error: --k must be >= 1, got 0"),
    (["hessian", "m.pt", "--top", "0"], "error: --k must be >= 1, got 0"),
    (["hessian", "m.pt", "-k", "0"], "error: --k must be >= 1, got 0"),
    (["align", "a.pt", "b.pt", "--points", "1"], "error: --points must be >= 2, got 1"),
    (["align", "a.pt", "b.pt", "--steps", "1"], "error: --points must be >= 2, got 1"),
    (["surface", "interp", "a.pt", "b.pt", "--steps", "1"],
     "error: --points must be >= 2, got 1"),
    (["surface", "interp", "a.pt", "b.pt", "--points", "1"],
     "error: --points must be >= 2, got 1"),
])
def test_renamed_options_keep_their_old_names_and_refusals_use_the_new(args, message):
    from lossatlas.cli import app

    res = runner.invoke(app, args)
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [message]
