"""The chunk hub keeps no per-job state once a job's readers have left, however they leave."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral.api.bus import ChunkHub

pytestmark = pytest.mark.unit


class SlowPubSub:
    """A pub/sub connection whose SUBSCRIBE does not return until released: a reader can leave during it."""

    def __init__(self) -> None:
        self.subscribing = asyncio.Event()
        self.release = asyncio.Event()
        self.unsubscribed: list[str] = []

    async def subscribe(self, *channels: str) -> None:
        self.subscribing.set()
        await self.release.wait()

    async def unsubscribe(self, *channels: str) -> None:
        self.unsubscribed.extend(channels)


def per_job_state(hub: ChunkHub) -> dict[str, Any]:
    return {"subscriptions": dict(hub._subs), "confirmations": dict(hub._confirmed),
            "expected": dict(hub._expected)}  # fmt: skip


async def read_a_while(hub: ChunkHub, job_id: str, entered: asyncio.Event) -> None:
    async with hub.subscribe(job_id):
        entered.set()
        await asyncio.Event().wait()


def test_readers_that_leave_during_the_subscribe_or_after_leave_no_state() -> None:
    async def scenario() -> dict[str, Any]:
        hub = ChunkHub(client=None, confirm_timeout=0.05)  # type: ignore[arg-type]
        pubsub = SlowPubSub()
        hub._pubsub = pubsub  # type: ignore[assignment]
        # 50 readers leave while their SUBSCRIBE is in flight
        for i in range(50):
            pubsub.subscribing.clear()
            task = asyncio.create_task(read_a_while(hub, f"gone-{i}", asyncio.Event()))
            await pubsub.subscribing.wait()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # 50 readers of 5 jobs leave after they got their subscription
        pubsub.release.set()
        entered = [asyncio.Event() for _ in range(50)]
        tasks = [asyncio.create_task(read_a_while(hub, f"job-{i % 5}", entered[i])) for i in range(50)]
        await asyncio.gather(*(e.wait() for e in entered))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for i in range(20):  # jobs expected by streamed submits whose readers are gone
            hub._own_ready = True
            hub.expect(f"submitted-{i}")
        return per_job_state(hub)

    assert asyncio.run(scenario()) == {"subscriptions": {}, "confirmations": {}, "expected": {}}
