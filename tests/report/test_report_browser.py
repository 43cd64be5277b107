"""The report in headless Chromium: offline load, every plot drawn, hover, click, escaping.

Skips without ``chromium`` / ``chromium-driver`` / ``selenium`` (fails under ``CI=true``).
Saves ``test-artifacts/report.png`` (the page at 1280 px wide).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from report_browser import (
    ARTIFACTS,
    load,
    make_driver,
    requests_made,
    require_browser,
    severe_console,
)
from report_runs import EVIL, with_all_results, with_evil_labels

from lossatlas.report import write_report

PLOTS_DRAWN = """
var figs = JSON.parse(document.getElementById('report-figures').textContent);
return Object.keys(figs).map(function (id) {
  var el = document.getElementById(id);
  return [id, !!(el && el.querySelector('.main-svg')), el && el.data ? el.data.length : 0,
          el ? el.getBoundingClientRect().height : 0];
});
"""


@pytest.fixture(scope="module")
def driver():
    require_browser()
    d = make_driver()
    yield d
    d.quit()


def _check_clean_load(driver, page: Path) -> None:
    requests_made(driver)  # drop earlier entries
    severe_console(driver)
    load(driver, page)
    bad = [u for u in requests_made(driver) if not u.startswith(("file://", "data:"))]
    assert bad == [], f"network requests from an offline page: {bad}"
    assert severe_console(driver) == []
    drawn = driver.execute_script(PLOTS_DRAWN)
    assert drawn, "no plots in the page"
    for fig_id, has_svg, traces, height in drawn:
        assert has_svg and traces > 0 and height > 100, (fig_id, has_svg, traces, height)


def test_report_offline_sections_hover_screenshot(driver, small_run):
    page = write_report(small_run)
    _check_clean_load(driver, page)
    import json

    summary = json.loads((small_run / "summary.json").read_text())
    for key in summary["sections"]:
        assert driver.find_elements("css selector", f"section#{key} h2"), key
    # hover the first model marker: its label shows in the hover layer
    label = driver.execute_script("""
      var map = document.getElementById('fig-landscape');
      var k = map.data.findIndex(function (t) { return t.meta && t.meta.role === 'models'; });
      Plotly.Fx.hover(map, [{curveNumber: k, pointNumber: 0}]);
      return map.querySelector('.hoverlayer').textContent;
    """)
    assert "epoch" in label and "loss" in label and "basin" in label, label
    # clicking a merge-tree leaf selects that basin's models on the map
    selected = driver.execute_script("""
      var tree = document.getElementById('fig-merge-tree');
      tree.emit('plotly_click', {points: [{customdata: 0}]});
      var map = document.getElementById('fig-landscape');
      return map.data.filter(function (t) { return t.meta && t.meta.role === 'models'; })
                 .map(function (t) { return t.selectedpoints; });
    """)
    assert all(isinstance(s, list) for s in selected) and sum(map(len, selected)) > 0
    assert "basin 0" in driver.find_element("id", "basin-selection").text
    # the page at 1280 px wide, whole height, as a test artefact
    width = driver.execute_script("return document.documentElement.clientWidth")
    assert width >= 1200
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth > document.documentElement.clientWidth")
    assert not overflow, "the page scrolls sideways at 1280 px"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    ARTIFACTS.mkdir(exist_ok=True)
    driver.set_window_size(1280, min(int(height) + 150, 16000))
    try:
        assert driver.save_screenshot(str(ARTIFACTS / "report.png"))
    finally:
        driver.set_window_size(1280, 900)
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000


def test_escaped_label_in_browser(driver, small_run, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException

    page = write_report(with_evil_labels(small_run, tmp_path / "evil"))
    _check_clean_load(driver, page)
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018
    assert driver.execute_script("return document.scripts.length") == 3
    assert driver.execute_script("return window.__alerted === undefined")
    assert EVIL in driver.find_element("id", "overview").text  # shown literally
    hover = driver.execute_script("""
      var map = document.getElementById('fig-landscape');
      var k = map.data.findIndex(function (t) { return t.meta && t.meta.role === 'models'
                                                 && t.name.indexOf('script') >= 0; });
      Plotly.Fx.hover(map, [{curveNumber: k, pointNumber: 0}]);
      return map.querySelector('.hoverlayer').textContent;
    """)
    assert EVIL in hover, hover


def test_all_sections_render(driver, small_run, tmp_path):
    page = write_report(with_all_results(small_run, tmp_path / "all"))
    _check_clean_load(driver, page)
    for key in ("connectivity", "symmetry", "terrain", "phase-transitions", "branches"):
        assert driver.find_elements("css selector", f"section#{key} .main-svg"), key
    assert not driver.find_elements("id", "absent")
