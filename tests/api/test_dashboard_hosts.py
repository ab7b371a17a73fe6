"""The dashboard's hosts block in a real browser: an engine added by its URL from the form is served by the fleet
process, its "test" button runs the connection test, "remove" drains it; a screenshot is kept in
``artifacts/dashboard-hosts.png``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.remote.webdriver import WebDriver

from ..conftest import Fleet
from ..support import ROOT
from . import test_dashboard
from .browser import until
from .test_dashboard import css, text_of

pytestmark = pytest.mark.integration
chromium_once = test_dashboard.chromium_once  # the fixtures: one headless chromium for the module
browser = test_dashboard.browser


def host_status(driver: WebDriver, name: str) -> str | None:
    return text_of(driver, f'#hosts tr[data-host="{name}"] .status')


def click_row_button(driver: WebDriver, selector: str, what: str) -> None:
    """Click a button of the hosts table. The table is drawn anew on every refresh, so a button found just before
    one is gone by the click (StaleElementReferenceException, no click made): find it again and click again."""

    def clicked(d: WebDriver) -> bool:
        button = css(d, selector)
        if button is None:
            return False
        try:
            button.click()
        except StaleElementReferenceException:
            return False
        return True

    until(driver, what, clicked)


def test_add_test_and_remove_a_host_from_the_dashboard(
    fleet: Fleet, browser: WebDriver, tmp_path: Path
) -> None:
    sim = fleet.simulator("llama3:latest,qwen2.5:0.5b")
    api = fleet.api()
    fleet.fleet_process("fleet-ui")
    browser.get(api + "/dashboard")
    until(browser, "the empty hosts table", lambda d: "no host registered" in (text_of(d, "#hosts") or ""))
    css(browser, "#host-url").send_keys(sim)
    css(browser, "#host-name").send_keys("gpu-b")
    css(browser, "#host-token").send_keys("tok-dash-secret")
    css(browser, "#host-form button").click()
    until(browser, "the host served", lambda d: host_status(d, "gpu-b") == "serving")
    row = text_of(browser, '#hosts tr[data-host="gpu-b"]') or ""
    assert sim in row and "llama3:latest" in row and "fleet-ui" in row and "tok-dash-secret" not in row
    click_row_button(browser, '#hosts tr[data-host="gpu-b"] button', 'the "test" button')
    until(browser, "the test's verdict", lambda d: "OK: gpu-b" in (text_of(d, "#host-test") or ""))
    assert "✓ generation: llama3:latest" in (text_of(browser, "#host-test") or "")
    shot = tmp_path / "dashboard-hosts.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    (ROOT / "artifacts").mkdir(exist_ok=True)
    shutil.copyfile(shot, ROOT / "artifacts" / "dashboard-hosts.png")
    click_row_button(browser, '#hosts tr[data-host="gpu-b"] button:last-child', 'the "remove" button')
    until(browser, "the host gone", lambda d: host_status(d, "gpu-b") is None)
    assert not fleet.redis.hgetall("corral:hosts")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
