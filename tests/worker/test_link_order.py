"""A chunk goes on the direct link only after its emit was written to Redis (worker/link.py ``Direct.send``): a
worker killed between the two writes must leave the API no event the record lacks. A job whose reader cannot resume
elsewhere (``link_first``, a drop-in route's) sends the line first, then the emit from a task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from corral.common.jobs import PoppedJob
from corral.worker.execute import JobRunner
from corral.worker.link import Links

pytestmark = pytest.mark.unit
CHUNKS = [{"response": "a"}, {"response": "b"}, {"response": "c"}, {"done": True, "eval_count": 3}]


class Store:
    """Writes at once while ``now`` (the lean client connected), answering each emit when ``answer`` says."""

    def __init__(self, log: list[str], now: bool = True) -> None:
        self.log = log
        self.now = now
        self.replies: list[asyncio.Future[Any]] = []

    def emit_now(self, job: PoppedJob, worker_id: str, bodies: tuple[str, ...]) -> asyncio.Future[Any] | None:
        if not self.now:
            return None
        self.log.append(f"redis {len(bodies)}")
        self.replies.append(asyncio.get_running_loop().create_future())
        self.replies[-1].set_result(0)
        return self.replies[-1]

    async def emit(self, job: PoppedJob, worker_id: str, *bodies: str) -> int:
        self.log.append(f"redis awaited {len(bodies)}")
        return 0

    async def finish(self, *args: Any) -> bool:
        self.log.append("finish")
        return True


class Writer:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.transport = self

    def write(self, line: bytes) -> None:
        self.log.append("link")

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class Backend:
    def __init__(self, pause: bool = True) -> None:
        self.pause = pause

    @contextlib.asynccontextmanager
    async def stream(self, kind: str, request: dict[str, Any], early: Any = None) -> AsyncIterator[Any]:
        async def chunks() -> AsyncIterator[dict[str, Any]]:
            for chunk in CHUNKS:
                yield chunk
                if self.pause:
                    await asyncio.sleep(0.01)  # (each emit's answer comes before the next chunk)

        yield chunks()


def run(now: bool, link_first: bool = False, pause: bool = True) -> list[str]:
    async def scenario() -> list[str]:
        log: list[str] = []
        links = Links(None)
        links._open["reply"] = Writer(log)  # type: ignore[assignment]  # (a link already made to that API)
        runner = JobRunner(Store(log, now), Backend(pause), "w1", {}, links)  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {"reply_to": "reply", **({"link_first": True} if link_first else {})}
        job = PoppedJob("j1", 1, "llama3", 60.0, "corral.generate", kwargs, start_seq=1)
        await runner._stream(job, {"model": "llama3", "prompt": "x"}, lambda: None, chat=False)
        return log

    return asyncio.run(scenario())


def test_each_chunk_goes_on_the_link_right_after_its_emit_was_written() -> None:
    assert run(now=True) == ["redis 1", "link"] * 3 + ["finish"]


def test_a_chunk_whose_emit_is_not_written_at_once_goes_by_redis_only() -> None:
    assert run(now=False) == ["redis awaited 1"] * 3 + ["finish"]


def test_a_reader_that_cannot_resume_gets_each_chunk_before_its_emit_is_written() -> None:
    assert run(now=True, link_first=True) == ["link", "redis awaited 1"] * 3 + ["finish"]


def test_a_link_first_chunk_behind_a_send_in_flight_goes_by_redis_only() -> None:
    """Chunks read in one go: the first goes on the link and its emit is not sent yet when the next come, so those
    go with it by Redis only: the link is never more than the one event ahead of the emits written."""
    assert run(now=True, link_first=True, pause=False) == ["link", "redis awaited 3", "finish"]
