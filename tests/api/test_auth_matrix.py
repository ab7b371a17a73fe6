"""Every route of the app (from its route table, so a route added later is in the matrix) x {no key, a key of too
small a scope (or an unknown key where no smaller scope exists), a key of the right scope}: 401 / 403 / neither.
Error bodies are in the shape of the API the route belongs to (Corral's, Ollama's, OpenAI's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from corral.api import create_app
from corral.api.apikeys import Scope, required_scope
from corral.cli.embedded_redis import RedisServer
from corral.common.settings import Settings

from ..inprocess import API_KEYS, KEYS, InProcessAPI, fill, routes
from ..support import free_port

pytestmark = pytest.mark.integration
ROUTES = routes(create_app(Settings()))
PARAMS = {"job_id": "0" * 32, "worker_id": "nobody", "model": "llama3"}
# enough of a body for every POST route to get past validation to a 404 (no worker serves the model)
BODY = {"model": "llama3", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "input": "hi"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessAPI]:
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("matrix") / "redis").start()
    app = InProcessAPI(Settings(redis_url=server.url, api_keys=API_KEYS, rate_limit=0,  # type: ignore[arg-type]
                                janitor_interval=3600))  # fmt: skip
    try:
        yield app
    finally:
        app.close()
        server.kill()


def call(api: InProcessAPI, method: str, path: str, key: str | None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = BODY if method == "POST" and path != "/jobs" else {**BODY, "messages": None, "input": None}
    body = {k: v for k, v in body.items() if v is not None}
    return api.request(method, path, json=body if method == "POST" else None, headers=headers)


def assert_shape(path: str, status: int, body: dict[str, Any]) -> None:
    if path.startswith("/api/"):
        assert set(body) == {"error"} and isinstance(body["error"], str)
    elif path.startswith("/v1/"):
        assert body["error"]["message"] and body["error"]["type"]
        if status == 401:
            assert body["error"]["code"] == "invalid_api_key"
    else:
        assert body["error"] and body["code"] in ("unauthorized", "forbidden")


@pytest.mark.parametrize(("method", "template"), ROUTES)
def test_auth_matrix(api: InProcessAPI, method: str, template: str) -> None:
    path = fill(template, PARAMS)
    needed = required_scope(method, path)
    if needed is None:  # the public probes
        assert call(api, method, path, None).status_code == 200
        return
    missing = call(api, method, path, None)
    assert missing.status_code == 401, (method, path, missing.text)
    assert missing.headers["www-authenticate"] == "Bearer"
    if method != "HEAD":
        assert_shape(path, 401, missing.json())
    if needed > Scope.READ:
        wrong = call(api, method, path, KEYS[Scope(needed - 1).word])
        assert wrong.status_code == 403, (method, path, wrong.text)
        if method != "HEAD":
            assert_shape(path, 403, wrong.json())
    else:
        assert call(api, method, path, "not-a-key-of-this-api").status_code == 401
    right = call(api, method, path, KEYS[needed.word])
    assert right.status_code not in (401, 403) and right.status_code < 500, (method, path, right.text)


def matrix_cells(routes: list[tuple[str, str]]) -> int:
    """The calls ``test_auth_matrix`` makes over ``routes``: one for a public probe, three for any other route."""
    return sum(1 if required_scope(m, fill(t, PARAMS)) is None else 3 for m, t in routes)


def test_matrix_size(record_property: Any) -> None:
    """The matrix walks the whole route table, of every API, with only the probes public (computed from the table,
    not counted by the matrix's own tests: it holds whichever tests ran before, or none)."""
    templates = {template for _method, template in ROUTES}
    assert {
        "/jobs",
        "/jobs/{job_id}/events",
        "/api/generate",
        "/v1/chat/completions",
        "/workers",
    } <= templates
    public = [(m, t) for m, t in ROUTES if required_scope(m, fill(t, PARAMS)) is None]
    assert sorted(public) == [("GET", "/dashboard"), ("GET", "/healthz"), ("GET", "/readyz")]
    cells = matrix_cells(ROUTES)
    record_property("auth_matrix_cells", cells)
    print(f"\nauth matrix: {len(ROUTES)} routes x 3 key cases = {cells} cells checked")
    assert cells == 3 * len(ROUTES) - 2 * len(public)
