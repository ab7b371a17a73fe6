"""Input that used to crash a handler (issue #19, D3) gets a clear 4xx and writes nothing: JSON nested past the
limit, lone surrogate escapes, a negative or huge ``Last-Event-ID``; and a damaged job hash (a ``result`` that is
not UTF-8 JSON) is shown with an ``error`` on every route that reads it, not a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from corral.api.routes import dropin
from corral.cli.embedded_redis import RedisServer
from corral.common import keys, stored
from corral.common.jsonfast import MAX_DEPTH
from corral.common.settings import Settings

from ..inprocess import InProcessAPI, snapshot
from ..support import free_port

pytestmark = pytest.mark.integration
JSON_ROUTES = ["/jobs", "/jobs/batch", "/api/generate", "/api/chat", "/api/embed", "/v1/completions",
               "/v1/chat/completions", "/v1/embeddings"]  # fmt: skip
PROMPT_ROUTES = ["/jobs", "/api/generate", "/api/chat", "/v1/completions", "/v1/chat/completions"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessAPI, redis.Redis]]:
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("malformed") / "redis").start()
    client = redis.Redis.from_url(server.url)
    app = InProcessAPI(Settings(redis_url=server.url, janitor_interval=3600))
    yield app, client
    app.close()
    client.close()
    server.kill()


def refused(
    api: tuple[InProcessAPI, redis.Redis], method: str, path: str, status: int = 400, **kwargs: Any
) -> str:
    """The error message of a 400 (or ``status``) that changed nothing in Redis."""
    app, client = api
    before = snapshot(client)
    response = app.request(method, path, **kwargs)
    assert response.status_code == status, (path, response.status_code, response.text[:300])
    assert snapshot(client) == before
    error = response.json()["error"]
    return str(error["message"] if isinstance(error, dict) else error)


def nested(depth: int, extra: bytes = b"") -> bytes:
    """A body whose ``format`` (a dict, as the schema takes) nests ``depth`` levels below the top object."""
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"model":"llama3","prompt":"x","wait":true,' + extra + b'"format":' + inner + b"}"


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("body", [nested(1100), nested(5000), nested(5000, b'"seed":12345678901234567890123,'),
                                  nested(MAX_DEPTH), b"[" * 100_000 + b"]" * 100_000])  # fmt: skip
def test_json_nested_past_the_limit_is_400(
    api: tuple[InProcessAPI, redis.Redis], path: str, body: bytes
) -> None:
    assert f"nested deeper than {MAX_DEPTH} levels" in refused(api, "POST", path, content=body)


def test_json_nested_to_the_limit_is_taken(api: tuple[InProcessAPI, redis.Redis]) -> None:
    app, client = api
    response = app.request("POST", "/jobs", content=nested(MAX_DEPTH - 2))  # + the top object and format
    assert response.status_code == 202, response.text[:300]
    job_id = response.json()["id"]
    assert client.exists(keys.job_key(job_id))
    app.request("DELETE", f"/jobs/{job_id}")


@pytest.mark.parametrize("path", PROMPT_ROUTES)
@pytest.mark.parametrize(
    "body",
    [b'{"model":"llama3","prompt":"\\ud800","wait":true}',
     b'{"model":"llama3","messages":[{"role":"user","content":"a\\udfffb"}],"wait":true}',
     b'{"model":"llama3","prompt":"x","options":{"\\ud800":1},"wait":true}'],
)  # fmt: skip
def test_lone_surrogates_are_400(api: tuple[InProcessAPI, redis.Redis], path: str, body: bytes) -> None:
    assert "lone surrogate" in refused(api, "POST", path, content=body)


def test_a_surrogate_pair_escape_is_text(api: tuple[InProcessAPI, redis.Redis]) -> None:
    app, client = api
    response = app.request(
        "POST", "/jobs", content=b'{"model":"llama3","prompt":"\\ud83d\\ude00","wait":true}'
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert "😀".encode() in client.hget(keys.job_key(job_id), "data")  # type: ignore[operator]
    app.request("DELETE", f"/jobs/{job_id}")


@pytest.fixture(scope="module")
def job_id(api: tuple[InProcessAPI, redis.Redis]) -> str:
    response = api[0].request("POST", "/jobs", json={"model": "llama3", "prompt": "x", "wait": True})
    assert response.status_code == 202
    return str(response.json()["id"])


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [({}, {"Last-Event-ID": "-5"}, 400), ({}, {"Last-Event-ID": "-1"}, 400), ({}, {"Last-Event-ID": str(2**64)}, 400),
     ({"from": "-5"}, {}, 422), ({"from": str(2**64)}, {}, 422)],
)  # fmt: skip
def test_bad_resume_positions_are_4xx(
    api: tuple[InProcessAPI, redis.Redis],
    job_id: str,
    query: dict[str, str],
    headers: dict[str, str],
    status: int,
) -> None:
    """Redis refuses a stream id below 0 or past 64 bits: the route refuses them first."""
    error = refused(api, "GET", f"/jobs/{job_id}/events", status, params=query, headers=headers)
    assert ("Last-Event-ID" if headers else "from") in error


BAD_RESULT = "b" * 32


@pytest.fixture
def damaged(api: tuple[InProcessAPI, redis.Redis]) -> Iterator[redis.Redis]:
    """A succeeded job whose hash holds a result and counts that are not what Corral writes."""
    client = api[1]
    client.hset(keys.job_key(BAD_RESULT), mapping={
        "status": "finished", "model": "llama3:latest", "kind": "generate", "result": b'{"text":"\xff\xfe"}',
        "metrics": b"\xff", "attempt": b"\xff", "seq": b"x", "owner": "", "created_at": "2026-01-01T00:00:00.000000Z",
    })  # fmt: skip
    client.zadd(keys.HISTORY, {BAD_RESULT: 1e9})
    client.lpush(keys.RECENT_JOBS, BAD_RESULT)
    yield client
    client.delete(keys.job_key(BAD_RESULT))
    client.zrem(keys.HISTORY, BAD_RESULT)
    client.lrem(keys.RECENT_JOBS, 0, BAD_RESULT)


def test_a_result_that_is_not_utf8_is_an_error_in_the_view(
    api: tuple[InProcessAPI, redis.Redis], damaged: redis.Redis
) -> None:
    response = api[0].request("GET", f"/jobs/{BAD_RESULT}")
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["status"] == "succeeded" and view["error"] == stored.RESULT_UNREADABLE and "text" not in view
    assert view["attempt"] == 1 and view["events"] == 0


def test_damaged_fields_leave_the_history_and_dashboard_readable(
    api: tuple[InProcessAPI, redis.Redis], damaged: redis.Redis
) -> None:
    history = api[0].request("GET", "/jobs", params={"limit": 1000})
    assert history.status_code == 200, history.text
    assert any(j["id"] == BAD_RESULT and j["attempt"] == 1 for j in history.json()["jobs"])
    damaged.hset(keys.job_key(BAD_RESULT), mapping={"error": b"\xffboom", "model": b"\xfe"})
    data = api[0].request("GET", "/dashboard/data")
    assert data.status_code == 200, data.text
    row = next(j for j in data.json()["jobs"] if j["id"] == BAD_RESULT)
    assert row["error"] == "\ufffdboom" and row["attempt"] == 1 and row["events"] == 0


def test_a_wrongly_shaped_result_is_left_out_of_the_view(
    api: tuple[InProcessAPI, redis.Redis], damaged: redis.Redis
) -> None:
    damaged.hset(keys.job_key(BAD_RESULT), mapping={"result": '{"text": 5}', "priority": "urgent"})
    view = api[0].request("GET", f"/jobs/{BAD_RESULT}").json()
    assert "text" not in view and view["priority"] == "normal"
    assert view["error"] == "stored fields of this job are unreadable: priority, text"


def test_a_dropin_answer_whose_result_is_unreadable_is_the_jobs_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def done(*_args: Any) -> Any:
        yield {"type": "done", "seq": 3}

    class Client:
        async def hget(self, *_args: Any) -> bytes:
            return b"\xff\xfe"

    monkeypatch.setattr(dropin, "events_of", done)
    job = dropin.Followed("c" * 32)
    last, result = asyncio.run(dropin.outcome(Client(), None, job))  # type: ignore[arg-type]
    assert last == {"type": "error", "error": f"job {'c' * 32}: {stored.RESULT_UNREADABLE}"} and result == {}
