"""Whether API keys are required: read from Redis after a response rather than before, never more than a second
old."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from corral.api import auth
from corral.api.auth import Authenticate
from corral.common import keys
from corral.common.settings import Settings

pytestmark = pytest.mark.unit


class FlagRedis:
    """The one command the check sends; each read waits for ``answer`` to be set, so a test sees who waited."""

    def __init__(self) -> None:
        self.flag = False
        self.reads = 0
        self.answer = asyncio.Event()

    async def exists(self, key: str) -> int:
        assert key == keys.AUTH_REQUIRED
        self.reads += 1
        await self.answer.wait()
        return int(self.flag)


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The middleware's clock, moved by the test."""
    clock = [100.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    return clock


@pytest.fixture
def gate() -> Authenticate:
    return Authenticate(app=None, settings=Settings(api_keys=""))  # type: ignore[arg-type]


def test_the_flag_is_read_again_after_a_response_not_before(now: list[float]) -> None:
    """A request that finds the flag over half a second old is answered from it, and reads it again once its
    response is out; the request after it gets the new answer."""

    async def run() -> None:
        client = FlagRedis()
        client.answer.set()
        reads_seen_by_app: list[int] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            reads_seen_by_app.append(client.reads)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        gate = Authenticate(app=app, settings=Settings(api_keys=""))
        state = SimpleNamespace(redis=client)

        async def request() -> int:
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "method": "POST",
                "path": "/jobs",
                "headers": [],
                "app": SimpleNamespace(state=state),
            }
            await gate(scope, None, send)  # type: ignore[arg-type]
            return int(sent[0]["status"])

        async with asyncio.timeout(10):
            assert await request() == 200 and reads_seen_by_app == [1]  # nothing known yet: read first
            now[0] += 0.3  # fresh: no read, before or after
            assert await request() == 200 and client.reads == 1
            client.flag = True  # a key was created meanwhile
            # over half a second old: answered from what was read, and read again after the response
            now[0] += 0.4
            assert await request() == 200 and reads_seen_by_app[-1] == 1 and client.reads == 2
            assert await request() == 401 and client.reads == 2  # the requests after it need a key
            now[0] += 5
            assert await request() == 401 and client.reads == 2  # and it never turns off

    asyncio.run(run())


def test_a_flag_over_a_second_old_is_read_by_the_request(now: list[float], gate: Authenticate) -> None:
    async def run() -> None:
        client = FlagRedis()
        client.answer.set()
        assert await gate.required(client) is False
        client.flag = True
        now[0] += 1.5  # no request for a while (no refresh ran): this one reads it before answering
        assert await gate.required(client) is True and client.reads == 2

    asyncio.run(run())


def test_requests_that_find_the_flag_stale_together_share_one_read(
    now: list[float], gate: Authenticate
) -> None:
    """A burst (thousands of stream readers connecting) sends one EXISTS, not one per request: each would take a
    Redis pool connection, growing the pool to its cap, and those connections outlived the burst."""

    async def run() -> None:
        client = FlagRedis()
        async with asyncio.timeout(10):
            burst = [asyncio.create_task(gate.required(client)) for _ in range(50)]
            await asyncio.sleep(0)
            assert client.reads == 1
            client.flag = True
            client.answer.set()
            assert await asyncio.gather(*burst) == [True] * 50
            assert client.reads == 1

    asyncio.run(run())


def test_when_the_reading_request_leaves_the_waiting_one_reads_itself(
    now: list[float], gate: Authenticate
) -> None:
    async def run() -> None:
        client = FlagRedis()
        async with asyncio.timeout(10):
            leaving = asyncio.create_task(gate.required(client))
            staying = asyncio.create_task(gate.required(client))
            await asyncio.sleep(0)
            leaving.cancel()
            await asyncio.sleep(0)
            client.answer.set()
            assert await staying is False and client.reads == 2

    asyncio.run(run())
