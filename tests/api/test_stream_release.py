"""Hundreds of readers on a real Redis: each event is parsed once for all the readers of its job, and once they
have gone (read to the end, or left midway) the hub holds nothing for them and gives the burst's memory back."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from corral.api.bus import ChunkHub
from corral.api.follow import follow_batches
from corral.api.memory import StreamGauge
from corral.cli.embedded_redis import RedisServer
from corral.common import jsonfast, keys
from corral.common.connections import async_redis

pytestmark = pytest.mark.integration

JOBS, READERS, EVENTS = 30, 300, 6


def job_id(n: int) -> str:
    return f"{n:032x}"


async def read(hub: ChunkHub, job: str, leave_early: bool) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with contextlib.aclosing(follow_batches(hub.client, hub, job, 0, idle=30)) as batches:
        async for batch in batches:
            seen += batch or []
            if leave_early:  # a client gone after its first events
                break
    return seen


async def until(predicate: Any) -> None:
    for _ in range(500):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def burst(url: str) -> tuple[ChunkHub, list[list[dict[str, Any]]], list[int]]:
    hub = ChunkHub(async_redis(url, name="test-readers"), url=url)
    trims: list[int] = []
    hub.streams = StreamGauge(lambda: trims.append(1), min_released=100, delay=0)
    await hub.start()
    await hub.connected.wait()
    jobs = [job_id(n) for n in range(JOBS)]
    publisher = aioredis.Redis.from_url(url)
    for job in jobs:  # the readers look the job up when its channel is quiet
        await publisher.hset(keys.job_key(job), "status", "started")
    readers = [asyncio.create_task(read(hub, jobs[i % JOBS], i % 3 == 0)) for i in range(READERS)]
    gone = [asyncio.create_task(read(hub, job, False)) for job in jobs]  # clients gone before any event
    channels = [keys.chunks_channel(job) for job in jobs]

    async def subscribed() -> bool:
        counts = await publisher.pubsub_numsub(*channels)
        return hub.streams.open == READERS + JOBS and all(n == 1 for _, n in counts)

    await until(subscribed)
    for task in gone:
        task.cancel()
    await asyncio.gather(*gone, return_exceptions=True)
    for seq in range(EVENTS):
        for job in jobs:
            kind = "done" if seq == EVENTS - 1 else "chunk"
            await publisher.publish(
                keys.chunks_channel(job), jsonfast.dumps({"job": job, "seq": seq, "type": kind})
            )
    seen = await asyncio.gather(*readers)

    async def released() -> bool:
        counts = await publisher.pubsub_numsub(*channels)
        return bool(trims) and all(n == 0 for _, n in counts)

    await until(released)
    await publisher.aclose()
    await hub.stop()
    await hub.client.aclose(close_connection_pool=True)
    return hub, seen, trims


def test_readers_share_each_event_and_leave_nothing_behind(redis_server: RedisServer, r: redis.Redis) -> None:
    hub, seen, trims = asyncio.run(burst(redis_server.url))
    for i, events in enumerate(seen):
        seqs = [e["seq"] for e in events]
        assert seqs and seqs == list(range(len(seqs)))  # from the first, in order, none missing
        if i % 3:  # (every third left after its first batch)
            assert len(seqs) == EVENTS
    # the readers of one job got the same event objects: parsed once, encoded once (api/routes/jobs.job_event)
    first, second = seen[1], seen[1 + JOBS]
    assert all(a is b for a, b in zip(first, second, strict=True))
    assert (hub.channels, hub.streams.open) == (0, 0)
    assert trims == [1]  # once for the burst, not once per reader
