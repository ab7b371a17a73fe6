"""LeanStream: a streamed response written from the request's task, which a client's disconnect ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from corral.api.streaming import LeanStream

pytestmark = pytest.mark.unit
SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "GET", "path": "/"}


class Client:
    """The server's side of one connection: what was sent, and a disconnect to trigger."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self.wrote = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.wrote.set()

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


def test_the_body_is_written_in_order_and_the_listener_ends_with_it() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for piece in (b"a", b"b"):
            yield piece

    async def scenario() -> None:
        client = Client()
        tasks = len(asyncio.all_tasks())
        await LeanStream(chunks())(SCOPE, client.receive, client.send)
        assert client.sent[0]["type"] == "http.response.start"
        assert client.bodies() == [b"a", b"b", b""] and client.sent[-1]["more_body"] is False
        await asyncio.sleep(0)  # the cancelled listener finishes
        assert len(asyncio.all_tasks()) == tasks

    asyncio.run(scenario())


def test_a_disconnect_while_waiting_for_the_next_chunk_ends_the_response() -> None:
    closed = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await asyncio.Event().wait()  # a job that has nothing more to say for now
            yield b"never"
        finally:
            closed.set()

    async def scenario() -> None:
        client = Client()
        response = asyncio.create_task(LeanStream(chunks())(SCOPE, client.receive, client.send))
        await asyncio.wait_for(client.wrote.wait(), 5)
        client.gone.set()
        done, _ = await asyncio.wait({response}, timeout=5)  # (not wait_for: it would cancel the response)
        assert done and response.result() is None  # it ends, with no error for a client that went away
        assert client.bodies() == [b"first"]
        assert closed.is_set()  # the follower behind the body is closed (it unsubscribes, forgets the job)
        assert not response.cancelled() and response.cancelling() == 0

    asyncio.run(scenario())


def test_a_cancel_from_outside_is_not_swallowed() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.Event().wait()
        yield b"never"

    async def scenario() -> None:
        client = Client()
        response = asyncio.create_task(LeanStream(chunks())(SCOPE, client.receive, client.send))
        await asyncio.wait_for(client.wrote.wait(), 5)
        response.cancel()  # the server shutting down
        with pytest.raises(asyncio.CancelledError):
            await response

    asyncio.run(scenario())
