"""Headless Chromium for the report tests: offline, with console and network logs.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``) and the Python package ``selenium``. Without them the
browser tests skip, except under ``CI=true``, where their absence is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LOSSATLAS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LOSSATLAS_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the Python package selenium is not installed (pip install -e '.[dev]')"
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).is_file() or shutil.which(path)):
            return (f"{path} not found: install the Debian packages chromium and "
                    f"chromium-driver (apt-get install chromium chromium-driver; missing {pkg})")
    return None


def require_browser() -> None:
    """Skip (or fail under CI=true) when Chromium, chromedriver or selenium is missing."""
    why = missing()
    if why is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run under CI=true: {why}")
    pytest.skip(f"browser tests skipped: {why}")


def make_driver(width: int = 1280, height: int = 900):
    """A headless Chromium with no way to the outside network, logging console + network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                 '--host-resolver-rules=MAP * ~NOTFOUND', "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-default-apps", f"--window-size={width},{height}",
                 "--hide-scrollbars", "--allow-file-access-from-files"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(60)
    return driver


def requests_made(driver) -> list[str]:
    """URLs of every network request seen in the performance log since the last call."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def severe_console(driver) -> list[str]:
    """Console messages at level SEVERE since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def load(driver, path: Path, timeout: float = 90) -> None:
    """Open ``path`` as a file:// URL and wait until every plot has been drawn."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
        "var ids = Object.keys(JSON.parse(document.getElementById('report-figures')"
        ".textContent)); return ids.every(function (id) { var el = "
        "document.getElementById(id); return el && el._fullLayout && "
        "el.querySelector('.main-svg'); });"))
