"""Whether API keys are required: read from Redis off the request path, never more than a second old."""

from __future__ import annotations

import asyncio

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


def test_the_flag_is_refreshed_off_the_request_path(now: list[float], gate: Authenticate) -> None:
    async def run() -> None:
        client = FlagRedis()
        async with asyncio.timeout(10):
            first = asyncio.create_task(gate.required(client))
            await asyncio.sleep(0)
            assert client.reads == 1 and not first.done()  # nothing known yet: the first request reads it
            client.answer.set()
            assert await first is False

            now[0] += 0.3  # fresh: no read
            assert await gate.required(client) is False and client.reads == 1

            client.answer.clear()
            client.flag = True  # a key was created meanwhile
            now[0] += 0.4  # over half a second old: read again by a task while the request goes on
            assert await gate.required(client) is False  # (answered from what was read before)
            await asyncio.sleep(0)  # the task's turn
            assert client.reads == 2
            assert await gate.required(client) is False  # the read is under way: no second one
            await asyncio.sleep(0)
            assert client.reads == 2
            client.answer.set()
            await gate._refresh  # type: ignore[misc]
            assert await gate.required(client) is True  # the requests after it are refused without a key
            assert await gate.required(client) is True and client.reads == 2  # and it never turns off

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
