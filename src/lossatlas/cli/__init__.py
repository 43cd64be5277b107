"""The ``lossatlas`` command line: a thin layer over the Python API.

Every command prints a short summary table at the end (or, with ``--json``, one JSON
object on stdout) and exits non-zero with a one-line ``error:`` message on bad input
(a bug in lossatlas shows its traceback; ``--verbose`` always does).

Layout: :mod:`._common` holds what the verbs share (options, loaders, tables, error
handling); each verb group is one module importing only ``_common`` and the library
(:mod:`.train`, :mod:`.surface`, :mod:`.atlas`, :mod:`.demo`, :mod:`.connect`,
:mod:`.terrain`, :mod:`.dynamics`, :mod:`.studies`, :mod:`.report`); this module
builds :data:`app` from them. No library module imports the CLI.
"""

from __future__ import annotations

import importlib
import os

import typer

from . import atlas, connect, demo, dynamics, report, studies, surface, terrain, train
from ._common import UsageError, _load_data  # noqa: F401  (tests import them from here)

__all__ = ["UsageError", "app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Map the loss landscape of a population of PyTorch models.")
surface_app = typer.Typer(no_args_is_help=True, help="1-D/2-D/3-D slices of the loss landscape.")
app.add_typer(surface_app, name="surface")


@app.callback()
def _global_options(
    no_progress: bool = typer.Option(
        False, "--no-progress", help="No progress bars in any verb (the library's "
        "LOSSATLAS_PROGRESS=0; bars are also off with --json)."),
) -> None:
    """Map the loss landscape of a population of PyTorch models."""
    if no_progress:
        os.environ["LOSSATLAS_PROGRESS"] = "0"  # read by the library's progress_bar too


# the verbs, in the order `lossatlas --help` lists them
app.command("list")(train.list_cmd)
app.command()(train.train)
surface_app.command("interp")(surface.surface_interp)
surface_app.command("random")(surface.surface_random)
surface_app.command("plane")(surface.surface_plane)
surface_app.command("pca")(surface.surface_pca)
surface_app.command("hessian")(surface.surface_hessian)
app.command()(atlas.atlas)
app.command()(demo.demo)
app.command()(report.report)
app.command()(connect.connect)
app.command()(connect.align)
app.command()(dynamics.dynamics)
app.command()(dynamics.branches)
app.command()(studies.study)
app.command()(terrain.hessian)
app.command("llc")(terrain.llc_cmd)

#: Library functions that lived in the CLI before, importable from here as before
#: (resolved on first use, so that ``lossatlas --help`` imports none of them).
_MOVED = {
    "build_atlas": "lossatlas.pipeline",
    "demo_bn_cnn": "lossatlas.demo", "demo_connectivity": "lossatlas.demo",
    "demo_terrain": "lossatlas.demo", "DEMO_BN_VARIANTS": "lossatlas.demo",
    "population_barriers": "lossatlas.connectivity.population",
    "merge_terrain": "lossatlas.curvature.population",
    "population_terrain": "lossatlas.curvature.population",
}


def __getattr__(name: str):
    """``lossatlas.cli.demo_bn_cnn`` and the other names in `_MOVED`, from the library."""
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'lossatlas.cli' has no attribute {name!r}")


def main() -> None:  # pragma: no cover
    """The ``lossatlas`` console script (also ``python -m lossatlas.cli``)."""
    app()

