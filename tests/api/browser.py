"""Headless Chromium for the page tests: Debian's ``chromium`` driven by Selenium through the system
``chromedriver`` (nothing is downloaded), with every address but loopback unreachable, so a page that needs the
internet fails its test as it would fail an operator on a closed network."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from ..support import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage",
                  # offline: no name resolves, and whatever is not loopback goes to a proxy that is not there
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                  "--proxy-server=http://127.0.0.1:9"]  # fmt: skip
DESKTOP = (1400, 900)
PHONE = (390, 844)


@contextmanager
def chromium(tmp: Path, size: tuple[int, int] = DESKTOP) -> Iterator[WebDriver]:
    """One headless Chromium with a new empty profile in ``tmp``, quit at the end."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are needed; `make test` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--window-size={size[0]},{size[1]}", f"--user-data-dir={tmp / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never reach for the network
    service = Service(str(CHROMEDRIVER), log_output=str(tmp / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def viewport(driver: WebDriver, size: tuple[int, int], mobile: bool = False) -> None:
    """The page's viewport, exactly (a window size would include whatever the browser keeps for itself);
    ``mobile`` honours the page's ``<meta name=viewport>`` as a phone does."""
    width, height = size
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # type: ignore[attr-defined]


def until(driver: WebDriver, what: str, predicate: Any, timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(predicate, f"timed out: {what}")


def screenshot(driver: WebDriver, path: Path, full_page: bool = False) -> Path:
    """A PNG of the viewport, or of the whole page's height; also kept in ``artifacts/`` for a look."""
    params: dict[str, Any] = {"format": "png"}
    if full_page:
        size = driver.execute_script(
            "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]"
        )
        params |= {"captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1],
                                                           "scale": 1}}  # fmt: skip
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", params)  # type: ignore[attr-defined]
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 5_000, path
    kept = ROOT / "artifacts" / path.name
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(path, kept)
    return path


def loaded_urls(driver: WebDriver) -> list[str]:
    """Every URL the page loaded: the document and each resource it fetched since."""
    script = "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]"
    return driver.execute_script(script)  # type: ignore[no-any-return]


def severe_logs(driver: WebDriver) -> list[dict[str, Any]]:
    """The console's errors since the last call: script errors, refused loads, CSP violations."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
