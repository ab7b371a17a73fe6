"""``GET /dashboard`` in a real headless Chromium (``tests/api/browser.py``: one per module, loopback only): the
page shows the worker, jobs appear and finish with their tokens, the form submits one; its counters agree with its
job table; it fits 1400x900 and a phone's 390x844 with dark scrollbars. Screenshots are kept in ``artifacts/``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from corral.client.http import Client
from corral.common import keys
from corral.simulator import expected_text

from ..conftest import Fleet
from ..support import wait_for
from .browser import DESKTOP, PHONE, chromium, screenshot, severe_logs, until, viewport

pytestmark = pytest.mark.integration
MIN_TOKENS = 40  # every simulated reply is this long: at 60 tokens/s a job streams for most of a second


@pytest.fixture(scope="module")
def chromium_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


@pytest.fixture
def browser(chromium_once: WebDriver) -> WebDriver:
    """The module's one Chromium, at the desktop size, its console read empty."""
    viewport(chromium_once, DESKTOP)
    chromium_once.get("about:blank")
    chromium_once.get_log("browser")
    return chromium_once


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
    print(f"\ndashboard screenshot: {screenshot(browser, tmp_path / 'dashboard.png')}")
    for jid in backlog:
        until(browser, f"job {jid}", lambda d, jid=jid: attribute(d, f'#jobs tr[data-id="{jid}"]', "data-status")
              == "succeeded")  # fmt: skip
    last = expected_text("qwen2.5:0.5b", "job 5", min_tokens=MIN_TOKENS)
    until(browser, "the newest job's tokens", lambda d: streamed(d, backlog[-1], last))
    assert attribute(browser, '#chart path[data-model="llama3:latest"]', "d")
    until(browser, "the totals", lambda d: text_of(d, '.pill[data-name="succeeded"] b') == "8")
    errors = severe_logs(browser)
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


def counts(driver: WebDriver) -> dict[str, int]:
    """The header's counters and the job table's rows per status, read in one script call (one redraw)."""
    script = """const found = {}, rows = {};
        for (const p of document.querySelectorAll('#totals .pill'))
            found[p.dataset.name] = +p.querySelector('b').textContent;
        for (const tr of document.querySelectorAll('#jobs tr[data-status]'))
            rows[tr.dataset.status] = (rows[tr.dataset.status] || 0) + 1;
        return {running: found.running, queued: found.queued,
                rows_running: rows.running || 0, rows_queued: rows.queued || 0}"""
    return driver.execute_script(script)  # type: ignore[no-any-return]


def overflow(driver: WebDriver) -> dict[str, Any]:
    """How far the page runs past the viewport's width, and which elements stick out of it."""
    script = """const width = document.documentElement.clientWidth;
        const out = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > width + 0.5
            && !e.closest('[data-scroll-x]')).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className);
        return {width, scroll: document.documentElement.scrollWidth, out: out.slice(0, 10)}"""
    return driver.execute_script(script)  # type: ignore[no-any-return]


def test_counters_agree_with_the_table_and_the_page_fits_a_phone(
    fleet: Fleet, browser: WebDriver, tmp_path: Path
) -> None:
    # jobs that run for long, on a worker whose heartbeat (slots busy) is never sent again after its first
    sim = fleet.simulator("llama3:latest,qwen2.5:0.5b", tps=2, ttft=0.05, min_tokens=MIN_TOKENS)
    fleet.worker(sim, "gpu-slow-heartbeat", worker_slots=2, heartbeat_interval=300, heartbeat_ttl=600)
    api = fleet.api(heartbeat_ttl=600)
    http = fleet.http(api)
    models = ["llama3", "qwen2.5:0.5b", "llama3", "llama3", "qwen2.5:0.5b"]
    ids = [
        http.post("/jobs", json={"model": m, "prompt": f"long job {i}"}).json()["id"]
        for i, m in enumerate(models)
    ]
    browser.get(api + "/dashboard")
    agreed = {"running": 2, "queued": 3, "rows_running": 2, "rows_queued": 3}
    until(browser, "two jobs running, three queued", lambda d: counts(d) == agreed)
    for _ in range(3):  # and through the next redraws
        assert counts(browser) == agreed
    style = "const s = getComputedStyle(arguments[0]); return [s.colorScheme, s.scrollbarColor]"
    assert browser.execute_script(style, css(browser, "#jobs-wrap")) == [
        "dark",
        "rgb(58, 70, 86) rgba(0, 0, 0, 0)",
    ]
    assert overflow(browser)["out"] == []
    print(f"\ndashboard at {DESKTOP}: {screenshot(browser, tmp_path / 'dashboard-desktop.png')}")

    drawn = attribute(browser, "#live", "data-time")
    viewport(browser, PHONE, mobile=True)
    until(browser, "a redraw at phone width", lambda d: attribute(d, "#live", "data-time") != drawn)
    assert counts(browser) == agreed
    fit = overflow(browser)
    assert fit["width"] == PHONE[0] and fit["scroll"] <= fit["width"] and fit["out"] == [], fit
    print(f"dashboard at {PHONE}: {screenshot(browser, tmp_path / 'dashboard-phone.png', full_page=True)}")
    errors = severe_logs(browser)
    assert not errors, errors
    for job_id in ids:  # the worker stops at once rather than finishing them
        assert http.delete(f"/jobs/{job_id}").status_code == 200
