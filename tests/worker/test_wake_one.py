"""A queued job wakes ONE idle worker, not every worker holding its model (push dispatch): the pops a job costs
do not grow with the fleet (docs/scaling.md). Real ``Worker`` objects (their pop loops, parks and control
listeners, an instant fake engine) in one process, against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.common.connections import async_redis
from corral.common.schemas import JobRequest
from corral.common.settings import Settings
from corral.common.store import AsyncJobStore, Park
from corral.worker import dispatch, lifecycle

from ..common.blocking import BlockingStore
from .conftest import LIMITS, M

pytestmark = pytest.mark.integration
PARKED = keys.PARKED_PREFIX + M


class Instant:
    """The ``Backend`` protocol with no engine behind it: every generation ends at once."""

    kind = "ollama"
    url = "http://127.0.0.1:9"

    async def list_models(self) -> list[dict[str, Any]]:
        return [{"name": M, "model": M}]

    async def loaded_models(self) -> list[dict[str, Any]]:
        return [{"name": M, "model": M}]

    def send_now(self, kind: str, request: dict[str, Any]) -> None:
        return None

    @contextlib.asynccontextmanager
    async def stream(self, kind: str, request: dict[str, Any], early: Any = None) -> AsyncIterator[Any]:
        async def chunks() -> AsyncIterator[dict[str, Any]]:
            yield {"model": M, "response": "ok", "done": True, "eval_count": 1}

        yield chunks()

    async def close(self) -> None:
        return None


def job(prompt: str = "hi") -> JobRequest:
    return JobRequest.model_validate({"model": "m", "prompt": prompt})


class Counted:
    """Workers whose pops (and pops under way) and model-list reads are counted."""

    def __init__(self, url: str, size: int) -> None:
        self.pops = self.popping = self.refreshes = 0
        self.workers = [
            lifecycle.Worker(
                Settings(redis_url=url, worker_id=f"w{i:02d}", worker_slots=1, model_refresh_interval=300)
            )
            for i in range(size)
        ]  # (a model-list read wakes the pop loop: after the first two, none during the test)
        for w in self.workers:
            w.dispatcher.pop = self.count_pop(w.dispatcher.pop)  # type: ignore[method-assign]
            w.models.refresh = self.count_refresh(w.models.refresh)  # type: ignore[method-assign]

    def count_pop(self, pop: Any) -> Any:
        async def counted() -> Any:
            self.pops += 1
            self.popping += 1
            try:
                return await pop()
            finally:
                self.popping -= 1

        return counted

    def count_refresh(self, refresh: Any) -> Any:
        async def counted() -> None:
            await refresh()
            self.refreshes += 1

        return counted

    def quiet(self, r: redis.Redis) -> bool:
        """The model lists read (at start, then by the heartbeat's task), every worker parked, none woken."""
        woken = any(w.dispatcher.wake.is_set() for w in self.workers)
        size = len(self.workers)
        return self.refreshes == 2 * size and not self.popping and not woken and r.zcard(PARKED) == size


async def until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 15
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def pops_per_job(url: str, r: redis.Redis, size: int, jobs: int) -> float:
    """``size`` idle workers holding M; ``jobs`` jobs queued one at a time (a batch of one: always queued, never
    handed), each waited for: the pops the fleet made per job."""
    fleet = Counted(url, size)
    tasks = [asyncio.create_task(w.run()) for w in fleet.workers]
    client = async_redis(url)
    store = AsyncJobStore(client, LIMITS)
    try:
        await until(lambda: fleet.quiet(r), "every worker parked, with nothing more to pop")
        fleet.pops = 0
        for k in range(jobs):
            [submitted] = await store.enqueue_many([job(f"j{k}")])
            await until(
                lambda i=submitted.id: r.hget(keys.job_key(i), "status") == b"finished", "the job ran"
            )
            await until(lambda: r.zcard(PARKED) == size, "every worker parked again")
        return fleet.pops / jobs
    finally:
        for w in fleet.workers:
            w.stop_taking()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in [client, *(w.redis for w in fleet.workers)]:
            await c.aclose(close_connection_pool=True)


def test_a_queued_job_costs_the_same_pops_with_2_or_12_idle_workers(
    redis_server: RedisServer, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: every queued job woke every idle worker holding its model (a pop each: ~13 pops a job with 12)."""
    monkeypatch.setattr(lifecycle, "make_backend", lambda settings: Instant())
    monkeypatch.setattr(dispatch, "IDLE_POLL", 30.0)  # no idle polls during the test: only wake-ups make pops
    monkeypatch.setattr(dispatch, "PARK_TTL", 45.0)
    small = asyncio.run(pops_per_job(redis_server.url, r, 2, 4))
    r.flushall()
    large = asyncio.run(pops_per_job(redis_server.url, r, 12, 4))
    assert small <= 2.5 and large <= 2.5, (small, large)  # the woken worker's pop, then its pop that parks


def wakes(pubsub: redis.client.PubSub) -> list[tuple[str, str]]:
    """The wake-ups (channel, job id) published so far on the subscribed control channels."""
    out = []
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        if message["type"] == "message":
            body = json.loads(message["data"])
            assert body["model"] == M
            out.append((message["channel"].decode(), body["wake"]))
    return out


def test_each_queued_job_wakes_one_distinct_parked_worker_and_a_requeue_does_too(
    store: BlockingStore, r: redis.Redis
) -> None:
    workers = [f"w{i}" for i in range(5)]
    pubsub = r.pubsub()
    pubsub.subscribe(*(keys.control_channel(w) for w in workers))
    for _ in workers:
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    for w in workers:
        r.hset(keys.worker_key(w), "healthy", "1")
        assert store.pop_planned(w, [M], "1", Park(slots=1, ttl=30)).job is None
    ids = [s.id for s in store.enqueue_many([job("a"), job("b"), job("c")])]
    got = wakes(pubsub)
    assert [i for _, i in got] == ids and len({c for c, _ in got}) == 3  # three workers, one job each
    assert r.zcard(keys.PARKED_PREFIX + M) == 2  # the woken ones' parks ended
    popped = store.pop_planned("w9", [M], "1")  # (a worker not parked takes one and dies with it)
    assert popped.job is not None
    assert store.requeue(popped.job.id, "its worker died", worker_id="w9")[0] == "requeued"
    [(channel, woken)] = wakes(pubsub)
    assert woken == popped.job.id and channel not in {c for c, _ in got}
    pubsub.close()
