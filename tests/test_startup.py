"""Quiet and quick by default: the CLI's help loads no heavy module, stored strings raise
no third-party warning."""

import subprocess
import sys
import warnings

import numpy as np
import xarray as xr

HEAVY = ("torch", "xarray", "zarr", "matplotlib", "scipy", "sklearn", "numba", "lossatlas.atlas")


def test_help_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from lossatlas.cli import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "atlas" in out.stdout  # the help lists the verbs
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY")][-1]
    assert line == "HEAVY []", line


def test_public_names_resolve_lazily():
    import lossatlas

    for name in lossatlas.__all__:
        assert getattr(lossatlas, name) is not None
    assert "Atlas" in dir(lossatlas)


def test_string_coordinates_are_stored_without_warnings(tmp_path):
    from lossatlas import Run

    ds = xr.Dataset({"loss": ("model", np.arange(3.0)),
                     "variant": ("model", np.array(["A", "BB", "C"]))},
                    coords={"model": np.array(["m0", "m1", "m22"])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Run(tmp_path).save_dataset("t", ds)
    back = xr.open_zarr(tmp_path / "fields" / "t.zarr", consolidated=False)
    assert list(back["model"].values) == ["m0", "m1", "m22"]
    assert list(back["variant"].values) == ["A", "BB", "C"]
