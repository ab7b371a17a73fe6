"""``/docs`` (Swagger UI) and ``/redoc`` work with no way out of the machine: their assets come from the
``fastapi-offline`` package through this API, rendered in a headless Chromium that can reach loopback only (a page
that loads Swagger UI from a CDN stays blank there); a screenshot is kept in ``artifacts/api-docs.png``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from corral.api.apidocs import ASSETS_PATH
from corral.cli.embedded_redis import RedisServer
from corral.common.settings import Settings

from ..conftest import Fleet, own_fleet
from ..inprocess import API_KEYS, KEYS, InProcessAPI
from ..support import free_port
from .browser import chromium, loaded_urls, screenshot, severe_logs, until

pytestmark = pytest.mark.integration
# ReDoc's "API docs by Redocly" footer asks for this image; the page's policy refuses it and ReDoc hides it
REDOC_LOGO = frozenset({"https://cdn.redoc.ly/redoc/logo-mini.svg"})
ASSETS = ["swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with own_fleet(tmp_path_factory.mktemp("docs")) as (_server, fleet):
        yield fleet


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


def operations(driver: WebDriver) -> list[str]:
    """The operations Swagger UI lists, as ``METHOD path``."""
    script = """return [...document.querySelectorAll('.opblock-summary')].map(s =>
        s.querySelector('.opblock-summary-method').textContent + ' ' + s.querySelector('[data-path]').dataset.path)"""
    return driver.execute_script(script)  # type: ignore[no-any-return]


def assert_offline(driver: WebDriver, api: str, refused: frozenset[str] = frozenset()) -> None:
    """Everything the page loaded came from ``api``; the URLs in ``refused`` were tried and blocked by the page's
    Content-Security-Policy before any request left (the browser says so in its console)."""
    urls = loaded_urls(driver)
    assert urls[0].startswith(api + "/") and {u for u in urls if not u.startswith(api + "/")} == refused, urls
    errors = [e["message"] for e in severe_logs(driver)]
    blocked = [m for m in errors if "Content Security Policy" in m and "blocked" in m]
    assert all(any(url in m for m in blocked) for url in refused), errors
    assert len(errors) == len(refused), errors  # nothing else refused or failed, no script error


def test_swagger_ui_and_redoc_render_offline(fleet: Fleet, browser: WebDriver, tmp_path: Path) -> None:
    api = fleet.api()
    browser.get(api + "/docs")
    until(browser, "Swagger UI lists the operations", lambda d: len(operations(d)) > 20)
    listed = operations(browser)
    assert {"POST /jobs", "GET /jobs/{job_id}/events", "GET /workers", "POST /api/chat"} <= set(listed)
    assert browser.title == "Corral · API docs"
    assert "/openapi.json" in (browser.execute_script("return document.body.textContent") or "")
    shot = screenshot(browser, tmp_path / "api-docs.png")
    print(f"\n/docs screenshot: {shot}")
    assert_offline(browser, api)

    browser.get(api + "/redoc")
    submit = '[id="tag/jobs/operation/submit_job_jobs_post"], [id="operation/submit_job_jobs_post"]'
    until(
        browser,
        "ReDoc shows POST /jobs",
        lambda d: d.execute_script(f"return !!document.querySelector('{submit}')"),
    )
    assert_offline(browser, api, refused=REDOC_LOGO)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessAPI]:
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("keyed") / "redis").start()
    app = InProcessAPI(Settings(redis_url=server.url, api_keys=API_KEYS, rate_limit=0,  # type: ignore[arg-type]
                                janitor_interval=3600))  # fmt: skip
    try:
        yield app
    finally:
        app.close()
        server.kill()


def test_the_pages_name_no_outside_url_and_keys_apply_as_to_the_schema(keyed: InProcessAPI) -> None:
    read = {"Authorization": f"Bearer {KEYS['read']}"}
    for path in ["/docs", "/redoc", "/openapi.json", *(f"{ASSETS_PATH}/{name}" for name in ASSETS)]:
        assert keyed.request("GET", path).status_code == 401, path  # as /openapi.json always was
        answer = keyed.request("GET", path, headers=read)
        assert answer.status_code == 200 and answer.content, path
    for page in ("/docs", "/redoc"):
        html = keyed.request("GET", page, headers=read).text
        assert "://" not in html, html  # every URL in the page is this API's own
        assert f"{ASSETS_PATH}/" in html and "/openapi.json" in html
    assert '"validatorUrl": null' in keyed.request("GET", "/docs", headers=read).text
