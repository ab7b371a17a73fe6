"""The job store's Lua state changes against a real redis-server (no worker process)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
import redis.asyncio as aioredis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.common.errors import JobNotCancellable, JobNotFound, ModelNotFound
from corral.common.histograms import JOB_DURATION, JobTiming, record_arguments, timing_increments
from corral.common.janitor import Janitor
from corral.common.schemas import JobRequest
from corral.common.store import AsyncJobStore, JobStore

from .blocking import LIMITS, BlockingStore

pytestmark = pytest.mark.integration


def serve(r: redis.Redis, model: str, worker: str = "w1") -> None:
    r.zadd(keys.model_workers_key(model), {worker: time.time() + 60})


def test_enqueue_refuses_unserved_model_and_writes_nothing(store: BlockingStore, r: redis.Redis) -> None:
    with pytest.raises(ModelNotFound):
        store.enqueue(JobRequest(model="ghost", prompt="x"))
    assert r.dbsize() == 0
    submitted = store.enqueue(JobRequest(model="ghost", prompt="x", wait=True))
    assert submitted.queue == "ollama:ghost:latest" and submitted.queue_position == 0


def test_a_submit_is_refused_as_soon_as_the_models_last_worker_expired(
    r: redis.Redis, redis_server: RedisServer
) -> None:
    """The enqueue scripts themselves check for a live worker (no check of their own before, no cache): a model
    whose only worker's heartbeat has just expired is refused by the next submit or batch, with nothing written."""

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        store = AsyncJobStore(client, LIMITS)
        try:
            serve(r, "llama3:latest")
            first = await store.enqueue(JobRequest(model="llama3", prompt="x"))
            r.zadd(keys.model_workers_key("llama3:latest"), {"w1": time.time() - 1})  # its heartbeat expired
            before = sorted(r.keys("*"))
            with pytest.raises(ModelNotFound):
                await store.enqueue(JobRequest(model="llama3", prompt="y"))
            batch = [JobRequest(model="other", prompt="a", wait=True), JobRequest(model="llama3", prompt="b")]
            with pytest.raises(ModelNotFound, match=r"jobs\[1\]"):
                await store.enqueue_many(batch)
            assert sorted(r.keys("*")) == before and r.llen(keys.queue_key("llama3:latest")) == 1, first
        finally:
            await client.aclose()

    asyncio.run(run())


def test_queue_is_a_real_rq_queue(store: BlockingStore, r: redis.Redis) -> None:
    serve(r, "llama3:latest")
    ids = [store.enqueue(JobRequest(model="llama3", prompt=f"p{i}")).id for i in range(3)]
    queue = Queue("ollama:llama3:latest", connection=r, serializer=JSONSerializer)
    assert queue.count == 3 and queue.job_ids == ids
    assert "rq:queue:ollama:llama3:latest" in {k.decode() for k in r.smembers("rq:queues")}
    job = Job.fetch(ids[1], connection=r, serializer=JSONSerializer)
    assert job.kwargs["request"]["prompt"] == "p1" and job.get_status() == "queued"


def test_pop_moves_to_inflight_and_emits_started(store: BlockingStore, r: redis.Redis) -> None:
    serve(r, "llama3:latest")
    job_id = store.enqueue(JobRequest(model="llama3", prompt="hi")).id
    assert store.pop("w1", ["qwen:latest"]) is None
    popped = store.pop("w1", ["qwen:latest", "llama3:latest"])
    assert popped is not None and popped.id == job_id and popped.func_name == "corral.generate"
    assert store.inflight("w1") == [job_id]
    assert r.llen(keys.queue_key("llama3:latest")) == 0
    view = store.get(job_id)
    assert (view.status, view.worker) == ("running", "w1")
    assert [e["type"] for e in store.events(job_id)] == ["queued", "started"]


def test_finish_stores_result_and_events_in_order(store: BlockingStore, r: redis.Redis) -> None:
    serve(r, "m:latest")
    job_id = store.enqueue(JobRequest(model="m", prompt="hi")).id
    popped = store.pop("w1", ["m:latest"])
    assert popped is not None
    for word in ("a", "b", "c"):
        assert store.emit(popped, "w1", json.dumps({"type": "chunk", "text": word})) == 0
    result = json.dumps({"text": "abc", "final": {"eval_count": 3}})
    assert store.finish(popped, "w1", "finished", '{"type":"done","final":{"eval_count":3}}', result)
    events = store.events(job_id)
    assert [e["seq"] for e in events] == list(range(6))
    assert [e.get("text") for e in events if e["type"] == "chunk"] == ["a", "b", "c"]
    view = store.get(job_id)
    assert (view.status, view.text, view.final, view.events) == ("succeeded", "abc", {"eval_count": 3}, 6)
    assert store.inflight("w1") == []
    assert 0 < r.ttl(keys.job_key(job_id)) <= 60
    assert store.events(job_id, after=3) == events[4:]


def test_a_jobs_timing_is_recorded_by_its_finish_unless_fenced_off(
    store: BlockingStore, r: redis.Redis
) -> None:
    serve(r, "m:latest")
    job_id = store.enqueue(JobRequest(model="m", prompt="hi")).id
    old = store.pop("w1", ["m:latest"])
    assert old is not None
    timing = record_arguments(
        timing_increments(
            JobTiming("m:latest", "succeeded", 1.5, 0.2, 0.1, eval_count=3, eval_duration_ns=10**9)
        )
    )
    done = '{"type":"done","final":{}}'
    assert store.requeue(job_id, "w1 died", worker_id="w1") == ("requeued", 2)
    assert not store.finish(old, "w1", "finished", done, timing=timing)  # fenced off: nothing recorded
    assert not r.exists(keys.histogram_key(JOB_DURATION.name)) and not r.exists(keys.TOKENS)
    new = store.pop("w2", ["m:latest"])
    assert new is not None
    chunks = ('{"type":"chunk","text":"a"}', '{"type":"chunk","text":"b"}')
    assert store.finish(new, "w2", "finished", done, chunks=chunks, timing=timing)
    assert [e["type"] for e in store.events(job_id)][-3:] == ["chunk", "chunk", "done"]
    durations = {k.decode(): v.decode() for k, v in r.hgetall(keys.histogram_key(JOB_DURATION.name)).items()}
    assert (
        durations["m:latest|succeeded|sum"] == "1.5"
        and sum(int(v) for k, v in durations.items() if not k.endswith("|sum")) == 1
    )
    assert r.hget(keys.TOKENS, "m:latest") == b"3"


def test_a_requeued_job_fences_off_its_old_worker(store: BlockingStore, r: redis.Redis) -> None:
    serve(r, "m:latest")
    job_id = store.enqueue(JobRequest(model="m", prompt="hi")).id
    old = store.pop("w1", ["m:latest"])
    assert old is not None
    assert store.requeue(job_id, "w1 died", worker_id="w1") == ("requeued", 2)
    new = store.pop("w2", ["m:latest"])
    assert new is not None and new.attempt == 2
    assert store.emit(old, "w1", '{"type":"chunk","text":"stale"}') == -1
    assert not store.finish(old, "w1", "finished", '{"type":"done"}', '{"text":"stale"}')
    assert store.finish(new, "w2", "finished", '{"type":"done"}', '{"text":"fresh"}')
    assert store.get(job_id).text == "fresh"
    types = [(e["type"], e["attempt"]) for e in store.events(job_id)]
    assert types == [("queued", 1), ("started", 1), ("retry", 2), ("started", 2), ("done", 2)]


def test_requeue_gives_up_after_max_retries(store: BlockingStore, r: redis.Redis) -> None:
    serve(r, "m:latest")
    job_id = store.enqueue(JobRequest(model="m", prompt="hi")).id
    outcomes = []
    for _ in range(3):
        assert store.pop("w1", ["m:latest"]) is not None
        outcomes.append(store.requeue(job_id, "died", worker_id="w1"))
    assert outcomes == [("requeued", 2), ("requeued", 3), ("failed", 3)]
    view = store.get(job_id)
    assert view.status == "failed" and "gave up after 3 attempts" in (view.error or "")


def test_a_job_cancelled_while_running_ends_cancelled_when_its_worker_dies(
    store: BlockingStore, r: redis.Redis
) -> None:
    """The cancel flag survives the worker's death: the re-queue ends the job instead of running it again."""
    serve(r, "m:latest")
    job_id = store.enqueue(JobRequest(model="m", prompt="hi")).id
    assert store.pop("w1", ["m:latest"]) is not None
    assert store.cancel(job_id) == "cancelling"
    assert store.requeue(job_id, "worker w1 died", worker_id="w1") == ("canceled", 1)
    assert store.get(job_id).status == "cancelled"
    assert store.pop("w2", ["m:latest"]) is None
    assert r.llen(keys.inflight_key("w1")) == 0
    last = store.events(job_id)[-1]
    assert last["type"] == "cancelled" and "worker w1 died" in last["reason"]


def test_cancel_queued_and_running(store: BlockingStore, r: redis.Redis) -> None:
    serve(r, "m:latest")
    queued = store.enqueue(JobRequest(model="m", prompt="1")).id
    running = store.enqueue(JobRequest(model="m", prompt="2")).id
    assert store.cancel(queued) == "cancelled"
    popped = store.pop("w1", ["m:latest"])
    assert popped is not None and popped.id == running  # the cancelled one left the queue
    pubsub = r.pubsub()
    pubsub.subscribe(keys.control_channel("w1"))
    confirmed = pubsub.get_message(timeout=5)  # subscribed before the cancel publishes (else it is missed)
    assert confirmed and confirmed["type"] == "subscribe"
    assert store.cancel(running) == "cancelling"
    assert store.emit(popped, "w1", '{"type":"chunk","text":"x"}') == 1
    message = None
    for _ in range(50):
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            break
    assert message and json.loads(message["data"]) == {"cancel": running}
    store.finish(popped, "w1", "canceled", '{"type":"cancelled"}')
    assert store.get(running).status == "cancelled" and store.get(queued).status == "cancelled"
    with pytest.raises(JobNotCancellable):
        store.cancel(running)
    with pytest.raises(JobNotFound):
        store.cancel("0" * 32)


def test_pop_skips_ids_of_vanished_jobs(store: BlockingStore, r: redis.Redis) -> None:
    serve(r, "m:latest")
    r.rpush(keys.queue_key("m:latest"), "f" * 32)
    job_id = store.enqueue(JobRequest(model="m", prompt="x")).id
    popped = store.pop("w1", ["m:latest"])
    assert popped is not None and popped.id == job_id


def test_a_young_redis_reaps_only_workers_that_beat_into_it(store: BlockingStore, r: redis.Redis) -> None:
    """For two heartbeat TTLs after Redis started, a worker whose last heartbeat predates the start may still be
    reconnecting: it keeps its jobs. One that beat into this Redis and whose heartbeat then expired is dead at once."""
    serve(r, "m:latest")
    jobs = {w: store.enqueue(JobRequest(model="m", prompt=w)).id for w in ("before", "after")}
    for worker in ("before", "after"):
        assert store.pop(worker, ["m:latest"]) is not None
    started = time.time() - int(r.info("server")["uptime_in_seconds"])
    # neither has a heartbeat hash now; "after" last beat 3 s after Redis started, "before" 30 s before it
    r.zadd(keys.WORKERS, {"before": started - 30, "after": started + 3})
    janitor = Janitor(JobStore(r, LIMITS), heartbeat_ttl=60.0)  # Redis is far younger than two TTLs
    assert janitor.sweep().requeued == 1
    assert store.get(jobs["after"]).status == "queued" and store.inflight("after") == []
    assert store.get(jobs["before"]).status == "running" and store.inflight("before") == [jobs["before"]]
    assert (
        Janitor(JobStore(r, LIMITS), heartbeat_ttl=0.0).sweep().requeued == 1
    )  # up two TTLs: the other is dead too
    assert store.inflight("before") == []
