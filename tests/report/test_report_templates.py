"""The report's templates: autoescape on everywhere, Code / Table / definition lists as
data, the templates shipped as package data, jinja2 loaded only when a page is
rendered, and errors of a section that cannot be built (fast: no training)."""

from __future__ import annotations

import fnmatch
import html
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lossatlas.errors import LossatlasError, ReportError
from lossatlas.report import SECTIONS, RunView, Section, build_sections, section
from lossatlas.report.html import Code, Table, esc, number
from lossatlas.report.render import TEMPLATES, environment, render

EVIL = "<script>alert(1)</script>"
ROOT = Path(__file__).resolve().parents[2]


def _macro(call: str, **data) -> str:
    return environment().from_string(
        '{% import "_macros.html.j2" as m %}' + call).render(**data)


def test_table_and_definition_list_escape_every_text():
    t = Table([EVIL, "value"], [[EVIL, Code(EVIL)], ["a & b", 3]], caption=EVIL)
    got = _macro("{{ m.table(t) }}", t=t)
    e = html.escape(EVIL)  # the standard library's escaping as the reference
    assert got == (f"<table><caption>{e}</caption><thead><tr><th>{e}</th><th>value</th>"
                   f"</tr></thead><tbody><tr><td>{e}</td><td><code>{e}</code></td></tr>"
                   "<tr><td>a &amp; b</td><td>3</td></tr></tbody></table>")
    got = _macro("{{ m.kv(items) }}", items={EVIL: [Code(EVIL), " and ", EVIL]})
    assert got == f'<dl class="kv"><dt>{e}</dt><dd><code>{e}</code> and {e}</dd></dl>'
    assert "<script" not in _macro('{{ m.plot(f) }}{{ m.policy(p, " of x") }}', f=EVIL, p=EVIL)


def test_esc_is_the_templates_rule():
    text = "O'Neil \"quoted\" <b> & more"
    assert esc(text) == render("_out_sentence.html.j2", run=text).split(
        "<code>--out ")[1].split("</code>")[0]
    assert esc(text) == html.escape(text, quote=True).replace("&#x27;", "&#39;").replace(
        "&quot;", "&#34;")


def test_number_is_plain_text():
    assert number(0.000123456, "nats") == "0.0001235 nats"
    assert number(1234567) == "1,234,567"
    assert (number(None), number(float("nan")), number(float("inf")),
            number(float("-inf"))) == ("n/a", "n/a", "∞", "−∞")
    assert number("<b>") == "<b>"  # escaped by the template, not here


def test_autoescape_is_on_and_no_template_opts_out():
    env = environment()
    assert env.autoescape is True
    names = sorted(p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*.j2"))
    assert "page.html.j2" in names and "sections/basins.html.j2" in names
    for name in names:
        text = (TEMPLATES / name).read_text()
        assert not re.search(r"\|\s*safe\b|autoescape\s+false", text), name
        env.get_template(name)  # parses


def test_every_section_template_exists_and_is_package_data():
    py = (ROOT / "pyproject.toml").read_text()
    globs = tomllib.loads(py)["tool"]["setuptools"]["package-data"]["lossatlas.report"]
    assert "jinja2>=3.1" in tomllib.loads(py)["project"]["dependencies"]
    shipped = [p.relative_to(TEMPLATES.parent).as_posix() for p in TEMPLATES.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    # every template file is matched by a package-data glob (fnmatch "*" spans "/", as
    # setuptools' does not: a file one folder down needs a glob of its own)
    for rel in shipped:
        depth = rel.count("/")
        assert any(fnmatch.fnmatch(rel, g) and g.count("/") == depth for g in globs), rel
    src = ROOT / "src" / "lossatlas" / "report"
    used = {m for p in src.rglob("*.py")
            for m in re.findall(r'template="([^"]+)"', p.read_text())}
    used |= {f"sections/{m}.html.j2" for p in src.rglob("*.py")
             for m in re.findall(r'_studies\([^)]*"(\w+)"\)', p.read_text())}
    assert len(used) >= 19
    for name in used:
        assert (TEMPLATES / name).is_file(), name


def test_jinja2_is_imported_only_to_render():
    code = (
        "import sys\n"
        "from lossatlas.cli import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import lossatlas.report\n"
        "print('BEFORE', 'jinja2' in sys.modules)\n"
        "from lossatlas.report.render import render\n"
        "render('_out_sentence.html.j2', run='x')\n"
        "print('AFTER', 'jinja2' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "BEFORE False" in out.stdout and "AFTER True" in out.stdout, out.stdout


def _tiny_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {"name": EVIL}}))
    return run


def test_section_data_and_html(tmp_path):
    sec = SECTIONS["overview"].build(RunView(_tiny_run(tmp_path)))
    assert sec.template == "sections/overview.html.j2"
    assert sec.data["info"]["configuration"] == Code(json.dumps({"name": EVIL}))
    assert f"<dt>configuration</dt><dd><code>{esc(json.dumps({'name': EVIL}))}</code></dd>" \
        in sec.html
    assert EVIL not in sec.html


def test_a_section_failing_on_stored_input_is_a_report_error(tmp_path):
    run = _tiny_run(tmp_path)
    (run / "table2.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"section 'Mode connectivity.*table2.json") as err:
        build_sections(RunView(run))
    assert isinstance(err.value, RuntimeError) and isinstance(err.value, LossatlasError)


def test_a_bug_in_a_builder_keeps_its_type_and_names_the_section(tmp_path):
    run = _tiny_run(tmp_path)

    @section("buggy", "Buggy", hint="")
    def buggy(view: RunView) -> Section | None:
        return Section(template="sections/overview.html.j2", data={"info": 1 / 0})

    try:
        with pytest.raises(ZeroDivisionError) as err:
            build_sections(RunView(run))
        assert not isinstance(err.value, LossatlasError)
        assert any("section 'Buggy'" in n for n in err.value.__notes__)
    finally:
        del SECTIONS["buggy"]


HOSTILE = "<img src=x onerror=alert(1)>"  # a directory name may hold it (no slash)


def test_text_from_configs_paths_and_commands_is_escaped_in_the_page(tmp_path):
    import plotly.offline

    from lossatlas.report import write_report

    run = tmp_path / HOSTILE
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {"cmd": EVIL}}))
    ck = f"/data/{HOSTILE}/ck"
    (run / "population.json").write_text(json.dumps({
        "labels": [{"variant": EVIL, "seed": 0, "epoch": 1}, {"variant": "B", "seed": 0,
                                                              "epoch": 1}],
        "paths": [f"{ck}/a.safetensors", f"{ck}/b.safetensors"], "loss": EVIL}))
    (run / "symmetry.json").write_text(json.dumps({
        "method": EVIL, "pairs": [{"a": EVIL, "b": "B", "distance_before": 1.5}]}))
    (run / "branches.json").write_text(json.dumps({
        "models": [{"variant": EVIL}, {"variant": "B"}], "branch": [0, 1], "basin": [0, 0],
        "num_branches": {"0": 2}, "distances": [[0, 0.5], [0.5, 0]], "metric": EVIL}))
    page = write_report(run).read_text()
    rest = page.replace(plotly.offline.get_plotlyjs(), "")
    for text in (EVIL, HOSTILE):
        assert text not in rest  # neither in the HTML nor in the figures' JSON
        assert esc(text) in rest
    assert rest.count("<script") == 3 and rest.count("</script>") == 3
    assert f"<title>lossatlas report — {esc(HOSTILE)}</title>" in rest
    assert f"<dt>loss function</dt><dd>{esc(EVIL)}</dd>" in rest
    assert f"<tr><td>0</td><td>{esc(EVIL)}, B</td><td>2</td><td>n/a</td></tr>" in rest
    assert f"--population {esc(shlex.quote(ck))}" in rest  # the command of an absent section
    figs = json.loads(re.search(r'id="report-figures">(.*?)</script>', page, re.S).group(1))
    assert figs["fig-branches"]["data"][0]["x"][0] == esc(EVIL)  # plotly draws it as text
