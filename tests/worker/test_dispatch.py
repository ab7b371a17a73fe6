"""Push dispatch against a real redis-server: an idle worker parks, an enqueue hands it the job directly; a handed
job is never lost (the next pop returns one whose message was missed) and never started twice; the chunk hub gets
the events of a job it submitted on its own channel, with no per-job subscribe."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from corral.api.bus import ChunkHub, submit_followed
from corral.api.follow import follow_batches
from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.common.connections import async_redis
from corral.common.errors import ModelNotFound, QueueFull
from corral.common.schemas import JobRequest
from corral.common.scripts import WARM_PARK
from corral.common.store import AsyncJobStore, Park
from corral.simulator import expected_text

from ..common.blocking import BlockingStore
from ..conftest import Fleet
from ..support import wait_for
from .conftest import LIMITS, M

pytestmark = pytest.mark.integration


Alive = Callable[..., None]


@pytest.fixture
def alive(r: redis.Redis) -> Iterator[Alive]:
    """Makes workers live as an enqueue sees them: a heartbeat hash and a subscriber on the control channel."""
    listeners: list[redis.client.PubSub] = []

    def make(*workers: str) -> None:
        for worker in workers:
            r.hset(keys.worker_key(worker), "healthy", "1")
            listeners.append(listen(r, keys.control_channel(worker)))

    yield make
    for pubsub in listeners:
        pubsub.close()


def park(store: BlockingStore, worker: str, slots: int = 1, ttl: float = 30, seen: str = "") -> None:
    popped = store.pop_planned(worker, [M], "1", Park(slots=slots, ttl=ttl, seen=seen))
    assert popped.job is None


def job(prompt: str = "hi", **fields: Any) -> JobRequest:
    return JobRequest.model_validate({"model": "m", "prompt": prompt, **fields})


def listen(r: redis.Redis, *channels: str) -> redis.client.PubSub:
    pubsub = r.pubsub()
    pubsub.subscribe(*channels)
    for _ in channels:
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    return pubsub


def messages(r: redis.Redis, pubsub: redis.client.PubSub) -> list[tuple[str, bytes]]:
    """What was published so far on the channels: everything before an end marker sent now (order is kept)."""
    marker = next(iter(pubsub.channels)).decode()
    r.publish(marker, "END")
    out = []
    while (message := pubsub.get_message(timeout=5)) is not None and message["data"] != b"END":
        out.append((message["channel"].decode(), message["data"]))
    return out


def test_an_enqueue_hands_its_job_to_the_parked_worker(
    store: BlockingStore, r: redis.Redis, alive: Alive
) -> None:
    alive("w1")
    park(store, "w1", slots=3)
    assert r.zscore(keys.PARKED_PREFIX + M, "w1") == WARM_PARK + 3
    pubsub = listen(r, keys.control_channel("w1"), keys.wake_channel(M))
    submitted = store.enqueue(job())
    assert submitted.queue_position == 0
    raw = r.hgetall(keys.job_key(submitted.id))
    assert raw[b"status"] == b"started" and raw[b"worker_name"] == b"w1"
    assert r.lrange(keys.inflight_key("w1"), 0, -1) == [submitted.id.encode()]
    assert r.llen(keys.queue_key(M)) == 0
    assert [e["type"] for e in store.events(submitted.id)] == ["queued", "started"]
    sent = messages(r, pubsub)
    assert [channel for channel, _ in sent] == [keys.control_channel("w1")]  # no wake-up: nobody needs to pop
    handed = json.loads(sent[0][1])["dispatch"]
    assert (
        handed[0] == submitted.id and handed[1] == "1" and handed[4] == M and handed[6] == 1
    )  # seq of started
    assert not r.exists(keys.PARKED_PREFIX + M)  # one park, one job
    second = store.enqueue(job("second"))
    assert r.hget(keys.job_key(second.id), "status") == b"queued"  # no park left: it waits for a pop


def test_a_handed_job_whose_message_was_missed_comes_with_the_next_pop(
    store: BlockingStore, r: redis.Redis, alive: Alive
) -> None:
    alive("w1")
    park(store, "w1")
    submitted = store.enqueue(job())
    again = store.pop_planned("w1", [M], "1", Park(slots=1))
    assert again.job is not None and again.job.id == submitted.id and again.job.attempt == 1
    assert again.job.start_seq == 1  # the same start as the message's: the worker runs it once
    assert again.job.kwargs["request"]["prompt"] == "hi"
    assert store.pop_planned("w1", [M], "1").job is None  # handed once


def test_a_handed_job_the_worker_has_seen_is_not_handed_again(
    store: BlockingStore, r: redis.Redis, alive: Alive
) -> None:
    alive("w1")
    park(store, "w1")
    submitted = store.enqueue(job())
    assert store.pop_planned("w1", [M], "1", Park(slots=1, seen=submitted.id)).job is None
    assert store.unpark("w1") is None


def test_a_handed_job_taken_over_meanwhile_is_not_handed(
    store: BlockingStore, r: redis.Redis, alive: Alive
) -> None:
    alive("w1")
    park(store, "w1")
    submitted = store.enqueue(job())
    store.requeue(submitted.id, "presumed dead", worker_id="w1")  # the janitor re-queued it
    popped = store.pop_planned("w1", [M], "1")
    assert popped.job is not None and popped.job.id == submitted.id and popped.job.attempt == 2  # by a pop
    assert popped.job.start_seq == 3  # queued, started, retry, started: another start


def test_the_live_worker_check_is_left_to_a_job_not_handed_and_keeps_the_answers_order(
    r: redis.Redis, redis_server: RedisServer, alive: Alive
) -> None:
    """A live parked worker is handed the job with no check of the model's holders (it holds the model); a job not
    handed gets the check, and a refusal keeps its order: no live worker (404) before a full queue (429)."""
    store = BlockingStore(
        redis_server.url, dataclasses.replace(LIMITS, max_queue=1)
    )  # (no holder of M recorded)
    alive("w1")
    park(store, "w1")
    handed = store.enqueue(job("a"))
    assert handed.queue_position == 0 and r.hget(keys.job_key(handed.id), "worker_name") == b"w1"
    store.enqueue(job("b", wait=True))  # queued: the queue is full now
    before = sorted(r.keys("*"))
    with pytest.raises(ModelNotFound):
        store.enqueue(job("c"))  # full, and no live worker holds M: 404 first
    assert sorted(r.keys("*")) == before and r.llen(keys.queue_key(M)) == 1
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})
    with pytest.raises(QueueFull):
        store.enqueue(job("d"))
    store.close()


def test_unpark_returns_a_job_handed_meanwhile(store: BlockingStore, r: redis.Redis, alive: Alive) -> None:
    alive("w1")
    park(store, "w1")
    submitted = store.enqueue(job())
    handed = store.unpark("w1")
    assert handed is not None and handed.id == submitted.id
    assert store.unpark("w1") is None
    park(store, "w1")
    assert store.unpark("w1") is None
    assert not r.exists(keys.PARKED_PREFIX + M) and not r.exists(keys.PARK_PREFIX + "w1")
    assert r.hget(keys.job_key(store.enqueue(job()).id), "status") == b"queued"


def test_a_lapsed_park_or_a_dead_worker_gets_nothing(
    store: BlockingStore, r: redis.Redis, alive: Alive
) -> None:
    alive("lapsed")
    park(store, "lapsed", ttl=0)  # its park ended when the pop returned: no renewal since
    park(store, "dead")  # no heartbeat hash
    r.hset(keys.worker_key("killed"), "healthy", "1")
    park(store, "killed")  # a heartbeat not expired yet, but nobody listens on its control channel
    pubsub = listen(r, keys.wake_channel(M))
    submitted = store.enqueue(job())
    assert r.hget(keys.job_key(submitted.id), "status") == b"queued"
    assert messages(r, pubsub) == [(keys.wake_channel(M), submitted.id.encode())]  # the pull path instead
    assert not r.exists(keys.PARKED_PREFIX + M)


def test_the_parked_worker_with_most_free_slots_gets_the_job(
    store: BlockingStore, r: redis.Redis, alive: Alive
) -> None:
    alive("busy", "idle")
    park(store, "busy", slots=1)
    park(store, "idle", slots=4)
    assert r.hget(keys.job_key(store.enqueue(job()).id), "worker_name") == b"idle"
    assert r.hget(keys.job_key(store.enqueue(job()).id), "worker_name") == b"busy"


def test_a_worker_parks_warm_before_cold_and_not_for_a_switch_probe(
    store: BlockingStore, r: redis.Redis
) -> None:
    cold, probe = "cold:latest", "probe:latest"
    store.pop_planned("w1", [M, cold, probe], "10s", Park(slots=2))
    assert r.zscore(keys.PARKED_PREFIX + M, "w1") == WARM_PARK + 2
    assert r.zscore(keys.PARKED_PREFIX + cold, "w1") == 2
    assert not r.exists(keys.PARKED_PREFIX + probe)
    store.pop_planned("w1", [M], "1")  # a pop without a park ends the previous one
    assert not r.exists(keys.PARKED_PREFIX + M) and not r.exists(keys.PARKED_PREFIX + cold)


def test_a_cold_parked_worker_gets_a_job_only_when_no_worker_has_the_model_warm(
    store: BlockingStore, r: redis.Redis, alive: Alive
) -> None:
    alive("cold", "warm")
    store.pop_planned("warm", [M], "1", Park(slots=1))
    store.pop_planned("cold", [M], "0", Park(slots=8))
    assert r.hget(keys.job_key(store.enqueue(job()).id), "worker_name") == b"warm"  # warm first, fewer slots
    second = store.enqueue(job())  # the warm worker is busy and claims the model: the cold one waits
    assert r.hget(keys.job_key(second.id), "status") == b"queued"
    r.delete(keys.warm_key(M))  # no claim left (it lapsed, say)
    store.pop_planned("cold", [M], "0", Park(slots=8))  # takes the queued job: no wait without a warm claim
    assert r.zscore(keys.warm_key(M), "cold") is not None  # and claims the model: it is loading it now
    r.delete(keys.warm_key(M))
    store.pop_planned("cold", [M], "0", Park(slots=7))
    assert r.hget(keys.job_key(store.enqueue(job()).id), "worker_name") == b"cold"


def test_a_batch_is_queued_for_the_pops(store: BlockingStore, r: redis.Redis, alive: Alive) -> None:
    alive("w1")
    park(store, "w1")
    ids = [s.id for s in store.enqueue_many([job("a"), job("b")])]
    assert [r.hget(keys.job_key(i), "status") for i in ids] == [b"queued", b"queued"]


async def own_hub(url: str) -> ChunkHub:
    """A started hub subscribed to its own channel (the confirmation follows the connection)."""
    hub = ChunkHub(async_redis(url), url=url)
    await hub.start()
    await asyncio.wait_for(hub.connected.wait(), 5)
    for _ in range(100):
        if hub.expect("probe") is not None:
            hub.forget("probe")
            return hub
        await asyncio.sleep(0.01)
    raise AssertionError("the hub never confirmed its own channel")


async def close_hub(hub: ChunkHub) -> None:
    await hub.stop()
    await hub.client.aclose(close_connection_pool=True)


def test_the_hub_gets_events_of_its_own_jobs_without_subscribing(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})

    async def scenario() -> tuple[list[str], list[str]]:
        hub = await own_hub(redis_server.url)
        reply_channel = listen(r, hub.reply_channel)
        try:
            followed = await submit_followed(AsyncJobStore(hub.client, LIMITS), hub, job(), "", 0)
            assert r.pubsub_numsub(keys.chunks_channel(followed.id)) == [
                (keys.chunks_channel(followed.id).encode(), 0)
            ]
            worker = AsyncJobStore(hub.client, LIMITS)
            popped = await worker.pop("w1", [M])
            assert popped is not None
            await worker.emit(popped, "w1", json.dumps({"type": "chunk", "text": "a"}))
            await worker.finish(popped, "w1", "finished", json.dumps({"type": "done", "final": {}}), "{}")
            batches = [
                b async for b in follow_batches(hub.client, hub, followed.id, expected=followed.expected) if b
            ]
            assert followed.id not in hub._expected  # forgotten at the end
            published = [json.loads(data)["type"] for _, data in messages(r, reply_channel)]
            return [e["type"] for batch in batches for e in batch], published
        finally:
            reply_channel.close()
            await close_hub(hub)

    followed, published = asyncio.run(scenario())
    assert followed == ["queued", "started", "chunk", "done"]
    assert published == ["started", "chunk", "done"]  # the queued event came in the enqueue's reply


def test_a_handed_job_s_first_events_come_in_the_enqueue_reply(
    redis_server: RedisServer, store: BlockingStore, r: redis.Redis, alive: Alive
) -> None:
    alive("w1")
    park(store, "w1")

    async def scenario() -> tuple[list[dict[str, Any]], list[tuple[str, bytes]]]:
        hub = await own_hub(redis_server.url)
        reply_channel = listen(r, hub.reply_channel)
        try:
            followed = await submit_followed(AsyncJobStore(hub.client, LIMITS), hub, job(), "", 0)
            assert followed.expected is not None
            ready = [
                dict(followed.expected.get_nowait()) for _ in range(followed.expected.qsize())
            ]  # parsed once
            assert ready == [dict(e) for e in store.events(followed.id)]  # as the stream has them
            return ready, messages(r, reply_channel)
        finally:
            reply_channel.close()
            await close_hub(hub)

    ready, published = asyncio.run(scenario())
    assert [(e["seq"], e["type"]) for e in ready] == [(0, "queued"), (1, "started")]
    assert ready[1]["worker"] == "w1"
    assert published == []  # nothing to deliver on the reply channel: no wake-up of the submitter


def test_a_refused_followed_job_is_forgotten(redis_server: RedisServer, r: redis.Redis) -> None:
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})
    full = dataclasses.replace(LIMITS, max_queue=1)

    async def scenario() -> None:
        hub = await own_hub(redis_server.url)
        try:
            store = AsyncJobStore(hub.client, full)
            queued = await submit_followed(store, hub, job(), "", 0)
            with pytest.raises(QueueFull) as refused:
                await submit_followed(store, hub, job(), "", 0)
            # the queued job's reader only, though the refusal's traceback still holds the other's queue
            assert refused.tb is not None and list(hub._expected) == [queued.id]
        finally:
            await close_hub(hub)

    asyncio.run(scenario())


def test_a_fleet_with_push_dispatch_parks_and_streams(fleet: Fleet) -> None:
    sim = fleet.simulator()
    fleet.worker(sim, "pusher", worker_slots=2)
    api = fleet.api()
    wait_for(lambda: fleet.redis.zscore(keys.PARKED_PREFIX + "llama3:latest", "pusher") == 2, what="a park")
    # (cold: nothing loaded yet; a cold park is handed a job when no worker has the model warm)
    with httpx.stream("POST", f"{api}/jobs", json={"model": "llama3", "prompt": "one two", "stream": True},
                      headers={"Accept": "application/x-ndjson"}, timeout=30) as response:  # fmt: skip
        events = [json.loads(line) for line in response.iter_lines() if line]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[1] == {**events[1], "type": "started", "worker": "pusher"}
    assert "".join(e["text"] for e in events if e["type"] == "chunk") == expected_text("llama3", "one two")


def test_a_fleet_without_push_dispatch_pulls(fleet: Fleet) -> None:
    sim = fleet.simulator()
    fleet.worker(sim, "puller", push_dispatch="false")
    api = fleet.api()
    job_id = httpx.post(f"{api}/jobs", json={"model": "llama3", "prompt": "x"}).json()["id"]
    wait_for(lambda: httpx.get(f"{api}/jobs/{job_id}").json()["status"] == "succeeded", what="the job")
    assert not fleet.redis.exists(keys.PARKED_PREFIX + "llama3:latest")


def test_a_worker_killed_while_parked_is_handed_nothing(fleet: Fleet) -> None:
    """Its park and heartbeat outlive it for a while; its control channel's subscriber does not."""
    fast = {"heartbeat_interval": 0.3, "heartbeat_ttl": 2.0, "janitor_interval": 0.2}
    sim = fleet.simulator()
    doomed = fleet.worker(
        sim, "zz-doomed", worker_slots=4, **fast
    )  # most free slots: it would be handed the job
    fleet.worker(sim, "aa-survivor", worker_slots=1, **fast)
    api = fleet.api(**fast)
    parked = keys.PARKED_PREFIX + "llama3:latest"
    wait_for(lambda: fleet.redis.zscore(parked, "zz-doomed") == 4, what="the doomed worker's (cold) park")
    doomed.kill()
    control = keys.control_channel("zz-doomed")
    wait_for(lambda: fleet.redis.pubsub_numsub(control) == [(control.encode(), 0)], what="redis sees it gone")
    assert fleet.redis.zscore(parked, "zz-doomed") == 4 and fleet.redis.exists(keys.worker_key("zz-doomed"))
    job_id = httpx.post(f"{api}/jobs", json={"model": "llama3", "prompt": "lost?"}).json()["id"]
    view = wait_for(lambda: (v := httpx.get(f"{api}/jobs/{job_id}").json())["status"] == "succeeded" and v,
                    what="the job finished by the survivor")  # fmt: skip
    assert view["worker"] == "aa-survivor" and view["attempt"] == 1
    assert view["text"] == expected_text("llama3", "lost?")
