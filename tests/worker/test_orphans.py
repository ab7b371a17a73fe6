"""Jobs left outside every list, or whose wake-up was lost (a Redis kill -9 under load), still run: a real
``Worker`` (pop loop, park, control listener, in-flight check, its janitor; an instant fake engine) in this process
against a real redis-server, each partial state built directly in Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.common.connections import async_redis
from corral.common.settings import Settings
from corral.common.store import AsyncJobStore
from corral.worker import control, lifecycle

from ..common.blocking import BlockingStore
from .test_wake_one import LIMITS, Instant, M, job, until

pytestmark = pytest.mark.integration
STOP_WITHIN = 30.0
FAST = {
    "heartbeat_interval": 0.2,
    "heartbeat_ttl": 2.0,
    "janitor_interval": 0.1,
    "model_refresh_interval": 300,
}


def where(task: asyncio.Task[Any]) -> str:
    """The innermost line a task waits at."""
    frames = task.get_stack()
    return f"{frames[-1].f_code.co_filename}:{frames[-1].f_lineno}" if frames else "?"


def finished(r: redis.Redis, job_id: str) -> Callable[[], bool]:
    return lambda: r.hget(keys.job_key(job_id), "status") == b"finished"


async def with_worker(url: str, r: redis.Redis, scenario: Callable[[AsyncJobStore], Awaitable[None]]) -> None:
    """Run ``scenario`` once the worker is parked, idle."""
    worker = lifecycle.Worker(Settings(redis_url=url, worker_id="w1", worker_slots=2, **FAST))
    task = asyncio.create_task(worker.run())
    client = async_redis(url)
    try:
        await until(lambda: r.zcard(keys.PARKED_PREFIX + M) == 1, "the worker parked")
        await scenario(AsyncJobStore(client, LIMITS))
    finally:
        worker.stop_taking()
        try:  # bounded: a worker that does not stop fails here, naming what still runs (once seen in CI)
            async with asyncio.timeout(STOP_WITHIN):
                await asyncio.gather(task, return_exceptions=True)
        except TimeoutError:
            waiting = [
                f"{t.get_name()} at {where(t)}"
                for t in asyncio.all_tasks()
                if t is not asyncio.current_task()
            ]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise AssertionError(f"the worker did not stop within {STOP_WITHIN:g}s: {waiting}") from None
        finally:
            for c in (client, worker.redis):
                await c.aclose(close_connection_pool=True)


def test_a_queued_job_in_no_queue_runs(redis_server: RedisServer, r: redis.Redis, monkeypatch: Any) -> None:
    """Before: it stayed queued for good (seen once in the Redis kill bench)."""
    monkeypatch.setattr(lifecycle, "make_backend", lambda settings: Instant())

    async def scenario(store: AsyncJobStore) -> None:
        worker_parked = r.zrange(keys.PARKED_PREFIX + M, 0, -1)
        r.zrem(keys.PARKED_PREFIX + M, *worker_parked)  # (no hand: the job is queued)
        [submitted] = await store.enqueue_many([job("orphan")])
        for key in (keys.queue_key(M), keys.subqueue_key(M, "normal", "anonymous")):
            r.lrem(key, 0, submitted.id)
        assert r.hget(keys.job_key(submitted.id), "status") == b"queued"
        await until(finished(r, submitted.id), "the orphan ran")

    asyncio.run(with_worker(redis_server.url, r, scenario))


def test_a_started_job_in_no_in_flight_list_runs(
    redis_server: RedisServer, r: redis.Redis, monkeypatch: Any
) -> None:
    """Started for this worker (a pop whose reply and in-flight entry were lost), listed nowhere: before, it stayed
    started for good (the worker's in-flight check reads only its list)."""
    monkeypatch.setattr(lifecycle, "make_backend", lambda settings: Instant())
    r.zadd(keys.model_workers_key(M), {"w1": time.time() + 60})
    prep = BlockingStore(redis_server.url, LIMITS)
    try:
        orphan = prep.enqueue(job("orphan")).id
        assert prep.pop("w1", [M]).id == orphan
    finally:
        prep.close()
    r.delete(keys.inflight_key("w1"))

    async def scenario(store: AsyncJobStore) -> None:
        await until(finished(r, orphan), "the orphan ran")
        assert r.hget(keys.job_key(orphan), "attempt") == b"2"  # re-queued by the worker's in-flight check

    asyncio.run(with_worker(redis_server.url, r, scenario))


def test_a_lost_wake_up_costs_one_idle_poll(
    redis_server: RedisServer, r: redis.Redis, monkeypatch: Any
) -> None:
    """The targeted wake-up names one parked worker; lost (a Redis kill), that worker's next pop still takes it."""
    monkeypatch.setattr(lifecycle, "make_backend", lambda settings: Instant())
    dropped: list[str] = []
    on_message = control.Control.on_message

    def lossy(self: control.Control, message: dict[str, Any]) -> None:
        if message["type"] == "message" and b'"wake"' in message["data"]:
            dropped.append(message["data"].decode())
            return
        on_message(self, message)

    monkeypatch.setattr(control.Control, "on_message", lossy)

    async def scenario(store: AsyncJobStore) -> None:
        [submitted] = await store.enqueue_many([job("woken")])  # a batch is queued, never handed
        t0 = time.monotonic()
        await until(finished(r, submitted.id), "the job ran")
        assert dropped and time.monotonic() - t0 < 3.0

    asyncio.run(with_worker(redis_server.url, r, scenario))
