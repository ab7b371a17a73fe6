"""The in-flight check against a real redis-server: a job an enqueue handed this parked worker, whose message was
lost, is held by the park until the worker's next pop takes it; only when that pop's reply is lost too is the job
an orphan, re-queued once."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.common.connections import async_redis
from corral.common.schemas import JobRequest
from corral.common.store import AsyncJobStore, Park
from corral.worker.reconcile import Reconcile

from .conftest import LIMITS, M

pytestmark = pytest.mark.integration
PARK = Park(slots=1, ttl=30)


def test_a_hand_kept_by_the_park_is_requeued_only_after_the_pop_that_took_it(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    """Before: two checks that came before the worker's next pop (checks every heartbeat interval, 0.5 s in the
    tests, the idle pop within a second) re-queued the hand, and the job ran at attempt 2 with nothing lost but a
    message; one more lost reply (the pop of attempt 2) made it 3."""
    control = r.pubsub()
    control.subscribe(keys.control_channel("w1"))  # w1 listens: the enqueue hands it the job
    assert control.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    r.hset(keys.worker_key("w1"), "healthy", "1")
    r.zadd(keys.model_workers_key(M), {"w1": time.time() + 60})

    async def scenario() -> None:
        client = async_redis(redis_server.url)
        store = AsyncJobStore(client, LIMITS)
        check = Reconcile(store, "w1", set)  # w1 runs nothing: the hand's message never reached it
        try:
            assert (await store.pop_planned("w1", [M], "1", PARK)).job is None  # parked
            job_id = (await store.enqueue(JobRequest.model_validate({"model": "m", "prompt": "hi"}))).id
            assert await store.inflight("w1") == [job_id]  # handed to w1 (its message is never read)
            assert r.hget(keys.park_key("w1"), "id") == job_id.encode()  # and kept for its next pop
            for _ in range(3):
                assert await check.check() == []
            popped = await store.pop_planned("w1", [M], "1", PARK)  # the next pop takes it; its reply is lost
            assert popped.job is not None and (popped.job.id, popped.job.attempt) == (job_id, 1)
            assert await check.check() == []  # (a pop's reply may be on its way)
            assert await check.check() == [job_id]
            assert r.hmget(keys.job_key(job_id), "status", "attempt") == [b"queued", b"2"]
            assert await store.inflight("w1") == []
        finally:
            await client.aclose(close_connection_pool=True)

    asyncio.run(scenario())
    control.close()
