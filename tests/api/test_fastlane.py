"""The fast lane answers as FastAPI's route does: every fast-lane route (taken from the routers' registrations),
once through the app as built and once through the same app without its fast lane (FastAPI's router, route and
exception middleware), with the same status, headers and body, errors included.

Both apps run in this process against one real Redis, with a real worker and simulator for the answers that need
a job to run. An error answer must match byte for byte; an answer that ran a job may differ only in the job's id,
its timestamps and its durations, which are masked before the comparison.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from corral.api.fastlane import FastLane, FastRouter, fast_routes
from corral.api.routes import jobs, ollama_api, openai_api
from corral.common import keys
from corral.common.settings import Settings

from ..conftest import own_fleet
from ..inprocess import API_KEYS, KEYS, InProcessAPI
from ..support import wait_for

pytestmark = pytest.mark.integration
LIVE = "llama3:latest"  # the worker's model: its jobs run
HELD = "held:1b"  # held by a worker that never pops: its queue stays full
FAST_PATHS = {"/jobs", "/api/generate", "/api/chat", "/v1/chat/completions", "/v1/completions"}
JOB_ID = re.compile(r"[a-f0-9]{32}")
VOLATILE = re.compile(r"created(_at)?|.*_duration|.*_ts|.*_at|ts|time")


def body_for(path: str, model: str, prompt: str = "hello", **extra: Any) -> dict[str, Any]:
    """A valid request of ``path``'s API."""
    if path.endswith("chat") or path.endswith("chat/completions"):
        return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
    return {"model": model, "prompt": prompt, **extra}


def auth(scope: str = "submit") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[scope]}"}


class Lanes:
    """One app with its fast lane, the same app without it, and the Redis behind both."""

    def __init__(self, settings: Settings, redis: Any) -> None:
        self.redis = redis
        self.fast = InProcessAPI(settings)
        self.framework = InProcessAPI(settings)
        app = self.framework.app
        assert (
            app.middleware_stack is None
        )  # not built yet: taking the lane out takes it out of every request
        app.user_middleware = [m for m in app.user_middleware if m.cls is not FastLane]
        assert any(m.cls is FastLane for m in self.fast.app.user_middleware)

    def both(self, path: str, **request: Any) -> tuple[httpx.Response, httpx.Response]:
        return self.fast.request("POST", path, **request), self.framework.request("POST", path, **request)

    def both_when_taken(self, path: str, **request: Any) -> tuple[httpx.Response, httpx.Response]:
        """``both``, each request sent once the worker has taken every LIVE job (``max_queue`` is 1: a job not
        popped yet, say on a busy machine, would make the next one a 429)."""
        answers = []
        for app in (self.fast, self.framework):
            wait_for(lambda: self.redis.llen(keys.queue_key(LIVE)) == 0, what="LIVE's queue taken")
            answers.append(app.request("POST", path, **request))
        return answers[0], answers[1]

    def close(self) -> None:
        self.fast.close()
        self.framework.close()


@pytest.fixture(scope="module")
def lanes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lanes]:
    with own_fleet(tmp_path_factory.mktemp("lanes")) as (server, fleet):
        fleet.worker(fleet.simulator(LIVE), "w-lanes")
        fleet.redis.zadd(keys.model_workers_key(HELD), {"w-ghost": time.time() + 3600})
        settings = Settings(redis_url=server.url, api_keys=API_KEYS, rate_limit=0,  # type: ignore[arg-type]
                            janitor_interval=3600, max_queue=1, max_prompt_bytes=64)  # fmt: skip
        lanes = Lanes(settings, fleet.redis)
        try:
            queued = lanes.fast.request("POST", "/jobs", json=body_for("/jobs", HELD), headers=auth())
            assert queued.status_code == 202, queued.text  # the one job HELD's queue holds
            yield lanes
        finally:
            lanes.close()


def test_the_fast_lane_serves_every_fast_post_and_nothing_else() -> None:
    routers = [jobs.router, ollama_api.router, openai_api.router]
    assert all(isinstance(router, FastRouter) for router in routers)
    assert set(fast_routes(routers)) == FAST_PATHS


def test_a_fast_route_is_registered_for_the_openapi_document_too() -> None:
    from corral.api import create_app

    document = create_app(Settings()).openapi()
    for path in FAST_PATHS:
        assert "post" in document["paths"][path], path


def test_a_fast_handler_takes_the_request_alone() -> None:
    router = FastRouter()

    async def with_a_dependency(request: Any, store: Any) -> Any:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="one parameter"):
        router.fast_post("/x")(with_a_dependency)
    assert router.fast_routes == {}


ERRORS: dict[str, tuple[dict[str, Any], Any]] = {
    # case: (headers beyond the submit key, body: bytes as they are, anything else as JSON; a path's own valid
    # body for a model name)
    "malformed JSON": ({}, b'{"model": "llama3'),
    "empty body": ({}, b""),
    "not an object": ({}, b"[1, 2]"),
    "NaN constant": ({}, b'{"model": "llama3", "prompt": NaN}'),
    "invalid fields": ({}, {"model": 5, "prompt": 5, "messages": 5, "stream": "sometimes"}),
    "unknown model": ({}, "nobody:1b"),
    "queue full": ({}, HELD),
    "prompt too large": ({}, ("x" * 100, LIVE)),
    "bad priority header": ({"X-Corral-Priority": "urgent"}, LIVE),
    "bad user header": ({"X-Corral-User": "two words"}, LIVE),
    "no key": ({"Authorization": ""}, LIVE),
    "unknown key": ({"Authorization": "Bearer not-a-key-0123456789"}, LIVE),
    "read-only key": (auth("read"), LIVE),
    "body over the limit": ({}, b"{" + b" " * (17 * 1_048_576) + b"}"),
}


def request_of(path: str, headers: dict[str, str], body: Any) -> dict[str, Any]:
    headers = {**auth(), **headers}
    if not headers.get("Authorization"):
        headers.pop("Authorization")
    if isinstance(body, bytes):
        return {"content": body, "headers": {**headers, "Content-Type": "application/json"}}
    if isinstance(body, tuple):
        prompt, model = body
        return {"json": body_for(path, model, prompt), "headers": headers}
    return {"json": body if isinstance(body, dict) else body_for(path, body), "headers": headers}


@pytest.mark.parametrize("path", sorted(FAST_PATHS))
@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_answered_alike(lanes: Lanes, path: str, case: str) -> None:
    fast, framework = lanes.both(path, **request_of(path, *ERRORS[case]))
    assert fast.status_code >= 400, (case, fast.status_code, fast.text)
    assert (fast.status_code, fast.headers.multi_items(), fast.content) == (
        framework.status_code,
        framework.headers.multi_items(),
        framework.content,
    )


def masked(value: Any) -> Any:
    """``value`` with job ids, timestamps and durations masked."""
    if isinstance(value, dict):
        return {k: "<volatile>" if VOLATILE.fullmatch(k) else masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    if isinstance(value, str):
        return JOB_ID.sub("<job>", value)
    return value


def documents(response: httpx.Response) -> list[Any]:
    """The JSON documents of a body: one, one per NDJSON line, or one per Server-Sent Event (its lines kept)."""
    text = response.text
    kind = response.headers.get("content-type", "")
    if kind.startswith("text/event-stream"):
        events = []
        for block in filter(None, text.split("\n\n")):
            lines = [line.partition(": ") for line in block.split("\n")]
            events.append([(name, data if data == "[DONE]" else json.loads(data) if name == "data" else data)
                           for name, _, data in lines])  # fmt: skip
        return events
    if kind.startswith("application/x-ndjson"):
        return [json.loads(line) for line in text.splitlines()]
    return [json.loads(text)]


def answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], list[Any]]:
    headers = [
        (k, JOB_ID.sub("<job>", v)) for k, v in response.headers.multi_items() if k != "content-length"
    ]
    return response.status_code, headers, masked(documents(response))


SUCCESSES = {
    "/jobs": [{"wait": True}, {"stream": True}],
    "/api/generate": [{}, {"stream": False}],
    "/api/chat": [{}, {"stream": False}],
    "/v1/chat/completions": [
        {},
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
    ],
    "/v1/completions": [{}, {"stream": True}],
}


@pytest.mark.parametrize(("path", "extra"), [(p, e) for p, cases in SUCCESSES.items() for e in cases])
def test_jobs_that_run_are_answered_alike(lanes: Lanes, path: str, extra: dict[str, Any]) -> None:
    body = body_for(path, LIVE, "tell me a story", **extra)
    fast, framework = lanes.both_when_taken(path, json=body, headers=auth())
    assert fast.status_code < 300, fast.text
    assert answer(fast) == answer(framework)
