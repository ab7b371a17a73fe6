"""The Python client against a real API, and its direct-Redis mode."""

from __future__ import annotations

import asyncio

import pytest

from corral.client.http import AsyncClient, Client
from corral.common.errors import JobNotFound, ModelNotFound
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
        with pytest.raises(ModelNotFound):
            corral.submit("not-here", "x")
        with pytest.raises(JobNotFound):
            corral.job("0" * 32).status()


def test_direct_redis_mode(stack: Stack) -> None:
    direct = Client.from_redis(stack.server.url)
    try:
        job_id = direct.submit("llama3", "no api needed")
        assert direct.result(job_id, timeout=10).text == expected_text("llama3", "no api needed")
        with pytest.raises(ModelNotFound):
            direct.submit("not-here", "x")
    finally:
        direct.close()


def test_async_client(stack: Stack) -> None:
    async def main() -> tuple[str, str]:
        async with AsyncClient(stack.api) as corral:
            job_id = await corral.submit("llama3", "async client")
            streamed = "".join([e["text"] async for e in corral.events(job_id) if e["type"] == "chunk"])
            return streamed, (await corral.result(job_id)).text or ""

    streamed, text = asyncio.run(main())
    assert streamed == text == expected_text("llama3", "async client")
