"""The Python clients against a real API and Redis: what each does beyond the shared scenario (test_one_shape)."""

from __future__ import annotations

import asyncio

import pytest

from corral.client import AsyncClient, Client, DirectClient
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
