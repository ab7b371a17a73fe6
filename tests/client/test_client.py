"""The Python clients against a real API and Redis: what each does beyond the shared scenario (test_one_shape)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from corral.client import AsyncClient, Client, DirectClient
from corral.common import keys
from corral.common.errors import InvalidRequest, JobNotFound, ModelNotFound
from corral.simulator import expected_text

from ..conftest import Stack

pytestmark = pytest.mark.integration


def test_submit_stream_result_cancel(stack: Stack) -> None:
    with Client(stack.api) as corral:
        job = corral.submit("llama3", "from the client")
        text = "".join(e["text"] for e in job.stream() if e["type"] == "chunk")
        assert text == expected_text("llama3", "from the client")
        view = job.result(timeout=10)
        assert view.status == "succeeded" and view.text == text and view.final
        chat = corral.submit("llama3", messages=[{"role": "user", "content": "chat via client"}])
        assert chat.result(timeout=10).message == {
            "role": "assistant",
            "content": expected_text("llama3", "chat via client"),
        }
        many = corral.submit_many([{"model": "qwen2.5:0.5b", "prompt": f"n{i}"} for i in range(5)])
        assert [h.result(timeout=10).text for h in many] == [
            expected_text("qwen2.5:0.5b", f"n{i}") for i in range(5)
        ]
        waiting = corral.submit("not-here", "x", wait=True)
        assert waiting.cancel() == "cancelled" and waiting.status().status == "cancelled"
        with pytest.raises(ModelNotFound) as unknown:
            corral.submit("not-here", "x")
        assert unknown.value.model == "not-here:latest" and unknown.value.context["status"] == 404
        with pytest.raises(JobNotFound) as missing:
            corral.job("0" * 32).status()
        assert missing.value.job_id == "0" * 32 and missing.value.message == f"job '{'0' * 32}' not found"


def test_events_resume_from_a_seq(stack: Stack) -> None:
    with Client(stack.api) as corral:
        job = corral.submit("llama3", "resume me")
        events = list(job.events())
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert list(job.events(start=3)) == events[3:]


def test_direct_redis_mode(stack: Stack) -> None:
    with Client.from_redis(stack.server.url) as direct:
        assert isinstance(direct, DirectClient)
        job = direct.submit("llama3", "no api needed")
        assert job.result(timeout=10).text == expected_text("llama3", "no api needed")
        events = list(job.events())
        assert list(direct.job(job.id).events(start=2)) == events[2:]
        with pytest.raises(ModelNotFound):
            direct.submit("not-here", "x")
        with pytest.raises(InvalidRequest):
            direct.submit("llama3", "x", timeout=-1)


def test_async_client(stack: Stack) -> None:
    async def main() -> tuple[str, str, list[str]]:
        async with AsyncClient(stack.api) as corral:
            job = await corral.submit("llama3", "async client")
            streamed = "".join([e["text"] async for e in job.stream() if e["type"] == "chunk"])
            text = (await job.result(timeout=10)).text or ""
            many = await corral.submit_many([{"model": "llama3", "prompt": f"a{i}"} for i in range(3)])
            return streamed, text, [(await h.result(timeout=10)).text or "" for h in many]

    streamed, text, many = asyncio.run(main())
    assert streamed == text == expected_text("llama3", "async client")
    assert many == [expected_text("llama3", f"a{i}") for i in range(3)]


class LoseFirstReply(httpx.HTTPTransport):
    """Forwards every request; the reply to the first submit is lost after the API has queued its job."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path.startswith("/jobs"):
            self.keys.append(request.headers.get("idempotency-key"))
            if len(self.keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("the reply was lost", request=request)
        return response


class Answer503First(httpx.AsyncHTTPTransport):
    """Forwards every request; the first submit's answer becomes a 503 (Redis trouble after the enqueue ran)."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.method == "POST" and request.url.path.startswith("/jobs"):
            self.keys.append(request.headers.get("idempotency-key"))
            if len(self.keys) == 1:
                await response.aread()
                await response.aclose()
                return httpx.Response(
                    503, json={"error": "redis is unavailable", "code": "redis_unavailable"}
                )
        return response


def submitted(stack: Stack) -> int:
    return int(stack.redis.hget(keys.STATS, "submitted") or 0)


def test_a_submit_whose_reply_is_lost_is_retried_with_its_key_and_runs_once(stack: Stack) -> None:
    transport, before = LoseFirstReply(), submitted(stack)
    with Client(stack.api, transport=transport) as corral:
        job = corral.submit("llama3", "lost reply")
        assert job.result(timeout=10).text == expected_text("llama3", "lost reply")
        many = corral.submit_many([{"model": "llama3", "prompt": "a batch"}])
        assert many[0].result(timeout=10).status == "succeeded"
    # two tries of the submit with one key, then the batch with a key of its own: one job each
    assert len(transport.keys) == 3 and transport.keys[0] == transport.keys[1] != transport.keys[2]
    assert submitted(stack) == before + 2


def test_the_async_client_retries_a_503_with_its_key(stack: Stack) -> None:
    transport, before = Answer503First(), submitted(stack)

    async def main() -> str:
        async with AsyncClient(stack.api, transport=transport) as corral:
            job = await corral.submit("llama3", "after a 503")
            return (await job.result(timeout=10)).text or ""

    assert asyncio.run(main()) == expected_text("llama3", "after a 503")
    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1] is not None
    assert submitted(stack) == before + 1
