"""``GET /dashboard`` in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium with the system driver: nothing is downloaded): the page shows the worker, jobs appear and finish with
their tokens, the form submits one; a screenshot is kept in ``artifacts/dashboard.png``."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from corral.client.http import Client
from corral.common import keys
from corral.simulator import expected_text

from ..conftest import Fleet
from ..support import ROOT, wait_for

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1440,1150"]  # fmt: skip
MIN_TOKENS = 40  # every simulated reply is this long: at 60 tokens/s a job streams for most of a second


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are needed; `make test` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never reach for the network
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def until(driver: WebDriver, what: str, predicate: Any, timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(predicate, f"timed out: {what}")


# the page redraws every second: read it with one script call each (an element found then read could be gone)
def attribute(driver: WebDriver, selector: str, name: str) -> str | None:
    script = "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null"
    return driver.execute_script(script, selector, name)  # type: ignore[no-any-return]


def text_of(driver: WebDriver, selector: str) -> str | None:
    script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : null"
    return driver.execute_script(script, selector)  # type: ignore[no-any-return]


def css(driver: WebDriver, selector: str) -> Any:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0] if found else None


def streamed(driver: WebDriver, job_id: str, text: str) -> bool:
    return (
        attribute(driver, "#stream-text", "data-job") == job_id
        and text_of(driver, "#stream-text") == text
        and text_of(driver, "#stream-status") == "succeeded"
    )


def keep_screenshot(driver: WebDriver, tmp_path: Path) -> Path:
    shot = tmp_path / "dashboard.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    kept = ROOT / "artifacts" / "dashboard.png"
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, kept)
    print(f"dashboard screenshot: {kept}")
    return kept


def test_dashboard_in_a_real_browser(fleet: Fleet, browser: WebDriver, tmp_path: Path) -> None:
    sim = fleet.simulator("llama3:latest,qwen2.5:0.5b", tps=60, ttft=0.05, min_tokens=MIN_TOKENS)
    fleet.worker(sim, "gpu-1", worker_slots=1)
    api = fleet.api()
    http = fleet.http(api)
    browser.get(api + "/dashboard")
    assert browser.title == "Corral · dashboard"
    until(
        browser,
        "the worker's card",
        lambda d: attribute(d, '.worker[data-id="gpu-1"] .slots', "data-total") == "1",
    )
    assert "qwen2.5:0.5b" in (text_of(browser, '.worker[data-id="gpu-1"] .chips') or "")

    # a job submitted elsewhere appears, is followed (newest), finishes, its tokens shown
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": "round up the herd"}).json()["id"]
    until(browser, "the job succeeded", lambda d: attribute(d, f'#jobs tr[data-id="{job_id}"]', "data-status")
          == "succeeded")  # fmt: skip
    text = expected_text("llama3", "round up the herd", min_tokens=MIN_TOKENS)
    until(browser, "its tokens streamed", lambda d: streamed(d, job_id, text))
    assert "tokens/s" in (text_of(browser, "#stream-stats") or "")

    # the page's own form submits a job and streams it
    Select(css(browser, "#submit-model")).select_by_value("qwen2.5:0.5b")
    css(browser, "#submit-prompt").send_keys("from the browser")
    css(browser, "#submit-form button").click()
    until(browser, "the form's job", lambda d: (attribute(d, "#stream-text", "data-job") or job_id) != job_id)
    form_job = attribute(browser, "#stream-text", "data-job")
    assert form_job is not None
    form_text = expected_text("qwen2.5:0.5b", "from the browser", min_tokens=MIN_TOKENS)
    until(browser, "the form's job streamed", lambda d: streamed(d, form_job, form_text))

    # a small backlog: a running job, queued ones, the depth chart moving; the screenshot shows it
    css(browser, "#follow-newest").click()  # the form switched following-the-newest off
    backlog = [http.post("/jobs", json={"model": m, "prompt": f"job {i}"}).json()["id"]
               for i, m in enumerate(["llama3", "qwen2.5:0.5b"] * 3)]  # fmt: skip
    depth = "return [...document.querySelectorAll('#legend b')].some(b => b.textContent !== '0')"
    until(browser, "a backlog in the chart", lambda d: d.execute_script(depth))
    until(
        browser,
        "a job streaming",
        lambda d: text_of(d, "#jobs tr[data-status=running]") and text_of(d, "#stream-text"),
    )
    keep_screenshot(browser, tmp_path)
    for jid in backlog:
        until(browser, f"job {jid}", lambda d, jid=jid: attribute(d, f'#jobs tr[data-id="{jid}"]', "data-status")
              == "succeeded")  # fmt: skip
    last = expected_text("qwen2.5:0.5b", "job 5", min_tokens=MIN_TOKENS)
    until(browser, "the newest job's tokens", lambda d: streamed(d, backlog[-1], last))
    assert attribute(browser, '#chart path[data-model="llama3:latest"]', "d")
    until(browser, "the totals", lambda d: text_of(d, '.pill[data-name="succeeded"] b') == "8")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors  # no script error, nothing blocked by the page's Content-Security-Policy


def test_dashboard_data_and_page_headers(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest", tps=0)
    fleet.worker(sim, "w-data")
    http = fleet.http(fleet.api())
    page = http.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert set(re.findall(r"https?://[^\s\"']+", page.text)) == {
        "http://www.w3.org/2000/svg"
    }  # loads nothing
    ids = [http.post("/jobs", json={"model": "llama3", "prompt": f"p{i}"}).json()["id"] for i in range(3)]

    def all_done() -> dict[str, Any] | None:
        data: dict[str, Any] = http.get("/dashboard/data").json()
        return data if all(j["status"] == "succeeded" for j in data["jobs"]) else None

    data = wait_for(all_done, what="three jobs succeeded")
    assert [j["id"] for j in data["jobs"]] == ids[::-1]  # newest first
    job = data["jobs"][0]
    assert job["model"] == "llama3:latest" and job["worker"] == "w-data" and job["attempt"] == 1
    assert job["created"] <= job["started"] <= job["ended"] <= data["time"]
    assert data["queues"] == {"llama3:latest": 0} and data["stats"]["submitted"] == 3
    assert [w["id"] for w in data["workers"]] == ["w-data"] and "tags" not in data["workers"][0]
    assert len(http.get("/dashboard/data", params={"limit": 1}).json()["jobs"]) == 1
    assert http.get("/dashboard/data", params={"limit": 0}).status_code == 422
    assert http.get("/dashboard/data", params={"limit": 201}).status_code == 422

    direct = Client.from_redis(fleet.redis_url)  # the enqueue script keeps the list, whoever calls it
    try:
        later = [direct.submit("not-served", "x", wait=True).id for _ in range(keys.RECENT_JOBS_MAX + 5)]
    finally:
        direct.close()
    assert fleet.redis.llen(keys.RECENT_JOBS) == keys.RECENT_JOBS_MAX  # capped
    listed = http.get("/dashboard/data", params={"limit": keys.RECENT_JOBS_MAX}).json()["jobs"]
    assert [j["id"] for j in listed] == later[::-1][: keys.RECENT_JOBS_MAX]
    assert {j["status"] for j in listed} == {"queued"} and listed[0]["started"] is None


def test_dashboard_with_api_keys_asks_for_one(fleet: Fleet, browser: WebDriver) -> None:
    key = "dashboard-reader-key-0123456789"
    sim = fleet.simulator("llama3:latest", tps=200, ttft=0.02, min_tokens=MIN_TOKENS)
    fleet.worker(sim, "gpu-k")
    api = fleet.api(api_keys=f"{key}:submit")
    browser.get(api + "/dashboard")  # the page itself is public: it holds no data
    until(browser, "the page asks for a key", lambda d: d.execute_script(
        "return !document.getElementById('key-form').hidden"))  # fmt: skip
    assert "needs a key" in (text_of(browser, "#live") or "")
    assert css(browser, '.worker[data-id="gpu-k"]') is None  # nothing shown without a key
    css(browser, "#api-key").send_keys(key)
    css(browser, "#key-form button").click()
    until(browser, "the worker, read with the key", lambda d: css(d, '.worker[data-id="gpu-k"]') is not None)
    job_id = (
        fleet.http(api)
        .post(
            "/jobs", json={"model": "llama3", "prompt": "keyed"}, headers={"Authorization": f"Bearer {key}"}
        )
        .json()["id"]
    )
    text = expected_text("llama3", "keyed", min_tokens=MIN_TOKENS)
    until(browser, "its tokens, streamed with the key", lambda d: streamed(d, job_id, text))
