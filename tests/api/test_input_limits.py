"""The input limits that are settings, and the ones that are not (Ollama's option names and types, base64 images,
job id format), on the native and the drop-in routes: a clear 4xx and nothing written to Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from corral.cli.embedded_redis import RedisServer
from corral.common.settings import Settings

from ..inprocess import InProcessAPI, snapshot
from ..support import free_port

pytestmark = pytest.mark.integration
MESSAGES = [{"role": "user", "content": "hi"}] * 4
BIG_IMAGE = "QUJD" * 4  # 12 bytes decoded, over the limit of 8


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessAPI, redis.Redis]]:
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("limits") / "redis").start()
    client = redis.Redis.from_url(server.url)
    app = InProcessAPI(
        Settings(redis_url=server.url, max_messages=3, max_image_bytes=8, janitor_interval=3600)
    )
    yield app, client
    app.close()
    client.close()
    server.kill()


def error_of(path: str, body: dict[str, Any]) -> str:
    error = body["error"]
    return str(error["message"] if path.startswith("/v1/") else error)


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/jobs", {"model": "m", "messages": MESSAGES}, 400, "4 messages, over the limit of 3"),
        ("/api/chat", {"model": "m", "messages": MESSAGES}, 400, "over the limit of 3"),
        ("/v1/chat/completions", {"model": "m", "messages": MESSAGES}, 400, "over the limit of 3"),
        ("/jobs", {"model": "m", "prompt": "x", "images": [BIG_IMAGE]}, 413, "image is 12 bytes"),
        ("/api/generate", {"model": "m", "prompt": "x", "images": [BIG_IMAGE]}, 413, "over the limit of 8"),
        ("/jobs", {"model": "m", "messages": [{"role": "user", "content": "x", "images": [BIG_IMAGE]}]}, 413,
         "image"),
        ("/jobs", {"model": "m", "prompt": "x", "images": ["http://127.0.0.1:9/a.png"]}, 422, "base64"),
        ("/api/generate", {"model": "m", "prompt": "x", "images": ["not base64!"]}, 400, "base64"),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}, 400, "data: URL"),
        ("/jobs", {"model": "m", "prompt": "x", "options": {"temprature": 1}}, 422, "unknown option 'temprature'"),
        ("/jobs", {"model": "m", "prompt": "x", "options": {"num_ctx": "4096"}}, 422, "must be an integer"),
        ("/jobs", {"model": "m", "prompt": "x", "options": {"temperature": True}}, 422, "must be a number"),
        ("/jobs", {"model": "m", "prompt": "x", "options": {"use_mmap": 1}}, 422, "true or false"),
        ("/api/generate", {"model": "m", "prompt": "x", "options": {"host": "x"}}, 400, "unknown option"),
        ("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": "lots"}, 400, "must be an integer"),
        ("/api/generate", b'{"model": "m", "prompt": "x", "options": {"seed": NaN}}', 400, "invalid JSON"),
    ],
)  # fmt: skip
def test_limits(api: tuple[InProcessAPI, redis.Redis], path: str, body: Any, status: int, words: str) -> None:
    app, client = api
    before = snapshot(client)
    content = body if isinstance(body, bytes) else None
    response = app.request("POST", path, json=None if content else body, content=content)
    assert response.status_code == status, response.text
    assert words in error_of(path, response.json()), response.text
    assert snapshot(client) == before


def test_known_options_pass_and_stop_may_be_one_string(api: tuple[InProcessAPI, redis.Redis]) -> None:
    app, _client = api
    options = {"temperature": 0.5, "num_ctx": 2048, "stop": "\n", "use_mmap": False, "seed": 1}
    response = app.request(
        "POST", "/jobs", json={"model": "m", "prompt": "x", "options": options, "wait": True}
    )
    assert response.status_code == 202, response.text
    assert app.request("DELETE", f"/jobs/{response.json()['id']}").status_code == 200


@pytest.mark.parametrize("job_id", ["nope", "0" * 31, "G" * 32, "0" * 33, "..%2F..%2Fetc"])
def test_malformed_job_ids_are_404_without_redis(api: tuple[InProcessAPI, redis.Redis], job_id: str) -> None:
    app, client = api
    calls = int(client.info("stats")["total_commands_processed"])
    for method, suffix in (("GET", ""), ("GET", "/events"), ("DELETE", "")):
        assert app.request(method, f"/jobs/{job_id}{suffix}").status_code == 404
    # the INFO call itself is one command (and the bus may ping once); the three requests reached nothing
    assert int(client.info("stats")["total_commands_processed"]) <= calls + 2
