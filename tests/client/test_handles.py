"""The clients' shared parts without processes: the handles' one shape, API answers as Corral's exceptions,
resuming a dropped event stream."""

from __future__ import annotations

import inspect
import subprocess
import sys

import httpx
import pytest

import corral
from corral.client import AsyncJob, DirectJob, Job, JobHandle
from corral.client.protocol import RECONNECTS, Resume, api_error, raise_for
from corral.common.errors import (
    BackendUnavailable,
    InvalidRequest,
    JobNotCancellable,
    JobNotFound,
    ModelNotFound,
    QueueFull,
    RateLimited,
    Unauthorized,
)

pytestmark = pytest.mark.unit
MEMBERS = ("status", "result", "stream", "events", "cancel")


def test_every_handle_has_the_same_members() -> None:
    assert issubclass(Job, JobHandle) and issubclass(DirectJob, JobHandle)
    for name in MEMBERS:
        shape = inspect.signature(getattr(JobHandle, name))
        for kind in (Job, DirectJob, AsyncJob):
            assert inspect.signature(getattr(kind, name)).parameters == shape.parameters, (kind, name)
    for name in ("status", "result", "cancel"):
        assert inspect.iscoroutinefunction(getattr(AsyncJob, name)), name
    for name in ("stream", "events"):
        assert inspect.isasyncgenfunction(getattr(AsyncJob, name)), name
    assert JobHandle.__abstractmethods__ == {"status", "events", "cancel"}


def test_the_public_surface_holds_the_clients_and_their_handles() -> None:
    wanted = {"Client", "AsyncClient", "DirectClient", "Job", "AsyncJob", "DirectJob", "JobHandle"}
    assert wanted <= set(corral.__all__)
    assert {getattr(corral, name) for name in wanted} == {getattr(corral.client, name) for name in wanted}


def test_importing_corral_leaves_redis_out() -> None:
    """A program that only talks HTTP does not pay for redis-py and the store (DirectClient imports them)."""
    code = "import sys, corral; print(sorted(m for m in sys.modules if m == 'redis' or m.endswith('.store')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def answer(status: int, body: object = None, text: str = "", **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "http://127.0.0.1/jobs/x")
    if body is not None:
        return httpx.Response(status, json=body, headers=headers, request=request)
    return httpx.Response(status, text=text, headers=headers, request=request)


def test_api_answers_become_their_exceptions() -> None:
    job = "f" * 32
    missing = api_error(answer(404, {"error": f"job '{job}' not found", "code": "job_not_found"}), job)
    assert (
        type(missing) is JobNotFound and missing.job_id == job and missing.message == f"job '{job}' not found"
    )
    model = api_error(answer(404, {"error": "model 'x:latest' not found", "code": "model_not_found"}))
    assert type(model) is ModelNotFound and model.model == "x:latest" and model.context["status"] == 404
    ended = api_error(
        answer(409, {"error": "job has already ended (finished)", "code": "job_not_cancellable"})
    )
    assert type(ended) is JobNotCancellable and ended.message == "job has already ended (finished)"
    full = api_error(answer(429, {"error": "queue full", "code": "queue_full"}, **{"Retry-After": "3"}))
    assert type(full) is QueueFull and full.context["retry_after"] == 3.0
    limited = api_error(answer(429, {"error": "slow down", "code": "rate_limited"}, **{"Retry-After": "2"}))
    assert type(limited) is RateLimited and limited.retry_after == 2.0
    redis_down = api_error(answer(503, {"error": "redis unavailable: x", "code": "redis_unavailable"}))
    assert type(redis_down) is BackendUnavailable
    assert type(api_error(answer(400, {"error": "bad", "code": "invalid_json"}))) is InvalidRequest
    assert repr(missing) == f"JobNotFound(\"job '{job}' not found\", status=404, job_id='{job}')"


def test_answers_without_a_code_go_by_status() -> None:
    assert type(api_error(answer(502, text="<html>bad gateway</html>"))) is BackendUnavailable
    assert api_error(answer(502, text="bad gateway")).message == "bad gateway"
    assert type(api_error(answer(401, {"error": "who are you"}))) is Unauthorized
    assert (
        type(api_error(answer(404, {"error": "path /x not found", "code": "not_found"}), "f" * 32))
        is JobNotFound
    )
    assert type(api_error(answer(404, {"error": "path /x not found", "code": "not_found"}))) is InvalidRequest
    assert type(api_error(answer(422, ["not", "a", "dict"]))) is InvalidRequest
    raise_for(answer(200, {"id": "x"}))  # a success raises nothing


def test_a_stream_resumes_after_the_last_seq_and_gives_up_in_the_end() -> None:
    where = Resume("j", 0)
    assert where.take("") is None and where.params == {"from": 0}
    assert where.take('{"seq": 4, "type": "chunk", "text": "a"}') == {"seq": 4, "type": "chunk", "text": "a"}
    assert where.params == {"from": 5}
    dropped = httpx.ReadError("reset")
    delays = [where.broke(dropped) for _ in range(RECONNECTS - 1)]
    assert delays == sorted(delays) and max(delays) == 2.0
    where.take('{"seq": 5, "type": "chunk", "text": "b"}')  # an event: the failures start over
    assert where.broke(dropped) == 0.2
    for _ in range(RECONNECTS - 2):
        where.broke(dropped)
    with pytest.raises(BackendUnavailable, match="lost the event stream of job j"):
        where.broke(dropped)


def test_a_timeout_is_corrals_and_a_timeout_error() -> None:
    from corral import CorralError, JobTimeout

    assert issubclass(JobTimeout, CorralError) and issubclass(JobTimeout, TimeoutError)
