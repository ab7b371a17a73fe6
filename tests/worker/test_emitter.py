"""The worker's chunk emitter: the first send goes out at once (no turn of the event loop first), later events
batch behind it in order, and a send the lean client could not take goes the awaited way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from redis.exceptions import ResponseError

from corral.worker.emitter import Emitter, Fenced

pytestmark = pytest.mark.unit


class Wire:
    """What a lean client would write (send_now) and what an awaited send would, in the order they happened."""

    def __init__(self, now: bool = True) -> None:
        self.log: list[tuple[str, tuple[str, ...]]] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.now = now

    def send_now(self, batch: tuple[str, ...]) -> asyncio.Future[Any] | None:
        if not self.now:
            return None
        self.log.append(("now", batch))
        self.futures.append(asyncio.get_running_loop().create_future())
        return self.futures[-1]

    async def send(self, batch: tuple[str, ...]) -> int:
        self.log.append(("send", batch))
        return 0


def test_the_first_event_is_written_before_the_loop_turns_and_the_rest_follow_in_order() -> None:
    async def scenario() -> list[tuple[str, tuple[str, ...]]]:
        wire = Wire()
        emitter = Emitter(wire.send, wire.send_now)
        emitter.add("a")
        assert wire.log == [("now", ("a",))]  # written inside add(), before any await
        emitter.add("b")
        emitter.add("c")
        await asyncio.sleep(0)
        assert wire.log == [("now", ("a",))]  # b and c wait for a's answer
        wire.futures[0].set_result(0)
        assert await emitter.close() == ()
        return wire.log

    assert asyncio.run(scenario()) == [("now", ("a",)), ("send", ("b", "c"))]


@pytest.mark.parametrize("failure", ["noscript", "lost"])
def test_a_send_that_failed_on_the_wire_goes_the_awaited_way(failure: str) -> None:
    async def scenario() -> list[tuple[str, tuple[str, ...]]]:
        wire = Wire()
        emitter = Emitter(wire.send, wire.send_now)
        emitter.add("a")
        if failure == "noscript":  # Redis restarted and lost its scripts: the awaited send loads it again
            wire.futures[0].set_result(ResponseError("NOSCRIPT No matching script."))
        else:  # the connection broke under the command
            wire.futures[0].set_exception(redis.ConnectionError("lost"))
        await emitter.close()
        return wire.log

    assert asyncio.run(scenario()) == [("now", ("a",)), ("send", ("a",))]


def test_without_a_live_lean_connection_every_send_is_awaited() -> None:
    async def scenario() -> list[tuple[str, tuple[str, ...]]]:
        wire = Wire(now=False)
        emitter = Emitter(wire.send, wire.send_now)
        emitter.add("a")
        await emitter.close()
        return wire.log

    assert asyncio.run(scenario()) == [("send", ("a",))]


def test_add_says_whether_the_event_was_written_at_once() -> None:
    """What the direct link needs before it sends a chunk after its emit (worker/link.py ``Direct.send``)."""

    async def scenario() -> None:
        wire = Wire()
        emitter = Emitter(wire.send, wire.send_now)
        assert emitter.add("a")
        assert not emitter.add("b")  # a's answer is awaited: b is batched behind it, and sent the awaited way
        wire.futures[0].set_result(0)
        assert emitter.task is not None
        await asyncio.wait({emitter.task})
        assert emitter.add("c")
        wire.futures[1].set_result(-1)  # fenced off: the job is another worker's now
        await asyncio.wait({emitter.task})
        with pytest.raises(Fenced):
            emitter.add("d")
        assert not Emitter(wire.send, Wire(now=False).send_now).add("e")  # no live lean connection

    asyncio.run(scenario())


def test_a_send_not_now_goes_after_what_the_loop_had_ready() -> None:
    """``add(now=False)`` (a link-first chunk): Redis is written from a task, after a reader that the chunk's line
    woke in the same step, and ``idle`` is False until its answer came."""

    async def scenario() -> tuple[list[str], bool, bool]:
        wire = Wire()
        order: list[str] = []

        async def send(batch: tuple[str, ...]) -> int:
            order.append(f"redis {len(batch)}")
            return 0

        emitter = Emitter(send, wire.send_now)
        asyncio.get_running_loop().call_soon(order.append, "reader")
        assert emitter.add("e1", now=False) is False
        busy = emitter.idle()
        await emitter.close()
        return [*order, f"now {len(wire.log)}"], busy, emitter.idle()

    order, busy, idle = asyncio.run(scenario())
    assert order == ["reader", "redis 1", "now 0"]
    assert not busy and idle
