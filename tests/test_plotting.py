"""One figure saver (atomic, dpi, format from the suffix, optional close) and pyplot's
backend chosen when first needed, never at import and never over a chosen one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from matplotlib.figure import Figure
from PIL import Image

from lossatlas.plotting import save_figure


def test_save_figure_writes_at_the_dpi_and_leaves_no_temporary(tmp_path):
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "sub" / "a.png", dpi=50)
    assert path == tmp_path / "sub" / "a.png"
    assert Image.open(path).size == (100, 50)  # 2 x 1 inches at 50 dpi
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]
    tight = save_figure(fig, tmp_path / "b.png", dpi=50, bbox_inches="tight")
    assert Image.open(tight).size != (100, 50)  # cropped to its content


def test_save_figure_format_from_the_suffix_png_without_one(tmp_path):
    fig = Figure(figsize=(1, 1))
    svg = save_figure(fig, tmp_path / "a.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
    plain = save_figure(fig, tmp_path / "noext")
    assert plain.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_close_releases_a_pyplot_figure(tmp_path):
    from lossatlas.plotting import pyplot

    plt = pyplot()
    fig = plt.figure()
    save_figure(fig, tmp_path / "open.png")
    assert plt.fignum_exists(fig.number)
    save_figure(fig, tmp_path / "closed.png", close=True)
    assert not plt.fignum_exists(fig.number)


def _run(code: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MPLBACKEND", "DISPLAY", "WAYLAND_DISPLAY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_the_plot_modules_selects_no_backend():
    line = _run("import sys\n"
                "import lossatlas.atlas_plot, lossatlas.dynamics.plot, lossatlas.plotting\n"
                "print('matplotlib.pyplot' in sys.modules)")
    assert line == "False"


@pytest.mark.parametrize("chosen,expected", [(None, "agg"), ("svg", "svg")])
def test_pyplot_picks_agg_unless_a_backend_was_chosen(chosen, expected):
    setup = (f"import matplotlib; matplotlib.use({chosen!r}); import matplotlib.pyplot\n"
             if chosen else "")
    line = _run(setup + "from lossatlas.plotting import pyplot\n"
                "import matplotlib; pyplot(); print(matplotlib.get_backend().lower())")
    assert line == expected
