"""The janitor's walk over the history for jobs outside every list (common/orphans.py, lua/rescue.lua): each partial
state is built directly in a real Redis, as a script failing half-way or a Redis kill -9 can leave it."""

from __future__ import annotations

import time

import pytest
import redis

from corral.common import keys
from corral.common.janitor import Janitor
from corral.common.orphans import OrphanWalk, Rescued
from corral.common.schemas import JobRequest
from corral.common.store import JobStore

from .blocking import LIMITS, BlockingStore

pytestmark = pytest.mark.integration
M = "m:latest"
SUBQUEUE = keys.subqueue_key(M, "normal", "anonymous")


@pytest.fixture(autouse=True)
def held(r: redis.Redis) -> None:
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})  # a live worker holds the model


def janitor(r: redis.Redis) -> Janitor:
    return Janitor(JobStore(r, LIMITS), heartbeat_ttl=0.0)  # (Redis up two TTLs: no restart grace)


def test_a_queued_job_in_no_queue_goes_back_to_its_front_and_is_popped(
    store: BlockingStore, r: redis.Redis
) -> None:
    """Before: the job stayed queued forever (what the Redis kill bench saw once): no pop ever reads its id."""
    first, orphan, last = (store.enqueue(JobRequest(model="m", prompt=p)).id for p in "abc")
    for key in (keys.queue_key(M), SUBQUEUE):  # the job hash says queued; neither list has it
        assert r.lrem(key, 0, orphan) == 1
    sweep = janitor(r).sweep()
    assert sweep.rescued == 1
    assert r.lrange(keys.queue_key(M), 0, -1) == [orphan.encode(), first.encode(), last.encode()]
    assert store.get(orphan).status == "queued" and store.get(orphan).attempt == 1
    popped = [store.pop("w", [M]) for _ in range(3)]
    assert [p.id for p in popped if p] == [orphan, first, last]
    assert janitor(r).sweep().rescued == 0  # started and in flight: left alone


def test_a_queued_job_missing_from_its_list_only_is_popped_once(store: BlockingStore, r: redis.Redis) -> None:
    """In the fair-share index but not in the RQ list: the pop used to take its index entry and skip it."""
    job_id = store.enqueue(JobRequest(model="m", prompt="x")).id
    r.lrem(keys.queue_key(M), 0, job_id)
    assert janitor(r).sweep().rescued == 1
    popped = store.pop("w", [M])
    assert popped is not None and popped.id == job_id
    assert store.pop("w", [M]) is None  # its second index entry is skipped: the job is no longer queued


def test_a_started_job_in_no_in_flight_list_is_listed_again_then_requeued(
    store: BlockingStore, r: redis.Redis
) -> None:
    """Started by a worker that is gone, out of its in-flight list: before, no janitor or worker ever saw it."""
    job_id = store.enqueue(JobRequest(model="m", prompt="x")).id
    assert store.pop("gone", [M]) is not None
    r.lrem(keys.inflight_key("gone"), 0, job_id)
    j = janitor(r)
    assert j.sweep().rescued == 1 and store.inflight("gone") == [job_id]
    sweep = j.sweep()  # the next pass: an unregistered worker's in-flight list is re-queued
    assert (sweep.requeued, sweep.rescued) == (1, 0)
    assert store.get(job_id).status == "queued" and store.get(job_id).attempt == 2


def test_healthy_jobs_are_left_alone(store: BlockingStore, r: redis.Redis) -> None:
    ids = [store.enqueue(JobRequest(model="m", prompt=str(i))).id for i in range(5)]
    assert store.pop("w", [M]) is not None
    before = {k: r.lrange(k, 0, -1) for k in (keys.queue_key(M), SUBQUEUE, keys.inflight_key("w"))}
    assert OrphanWalk(r).next_step() == Rescued()
    assert {k: r.lrange(k, 0, -1) for k in before} == before
    assert [e["type"] for e in store.events(ids[-1])] == ["queued"]  # no event written


def test_the_walk_is_a_bounded_step_per_pass_in_a_circle(store: BlockingStore, r: redis.Redis) -> None:
    ids = [store.enqueue(JobRequest(model="m", prompt=str(i))).id for i in range(25)]
    r.lrem(keys.queue_key(M), 0, ids[22])
    walk = OrphanWalk(r, step=10)
    assert [walk.next_step().queued for _ in range(3)] == [[], [], [ids[22]]]
    assert walk.cursor == 0  # the end reached: the next step starts over
    r.lrem(keys.queue_key(M), 0, ids[3])
    assert walk.next_step().queued == [ids[3]]


def test_the_queue_lookups_stay_within_the_budget(store: BlockingStore, r: redis.Redis) -> None:
    ids = [store.enqueue(JobRequest(model="m", prompt=str(i))).id for i in range(6)]
    r.lrem(keys.queue_key(M), 0, ids[4])  # 5 left in the queue
    # a job in its queue costs the queue (5) and its sub-queue (6): two such jobs, then the step ends
    walk = OrphanWalk(r, step=100, budget=23)
    assert [walk.next_step().queued for _ in range(2)] == [[], []] and walk.cursor == 4
    assert walk.next_step().queued == [ids[4]] and walk.cursor == 0
    r.lrem(keys.queue_key(M), 0, ids[5])
    short = OrphanWalk(r, step=100, budget=3)  # a queue longer than the whole budget is not looked into
    assert short.next_step().queued == [] and short.cursor == 0


@pytest.mark.parametrize("left_in", ["queue", "queue and sub-queue"])
def test_a_queued_job_out_of_the_fair_share_index_is_indexed_again_and_not_starved(
    store: BlockingStore, r: redis.Redis, left_in: str
) -> None:
    """Queued and in its RQ list, but out of the index: the re-queue by hand of operations.md (an LPUSH on the RQ
    list), or a sub-queue whose submitter left its level's active set. The pop serves the index first and the RQ
    list only once the index is empty, so before, another submitter's queue always went first (starved under a
    steady load); now the walk puts it back in the index and it is popped in its turn."""
    job_id = store.enqueue(JobRequest(model="m", prompt="x", submitter="a")).id
    others = [store.enqueue(JobRequest(model="m", prompt=str(i), submitter="b")).id for i in range(4)]
    popped = store.pop("gone", [M])  # a's job, by a worker that is gone
    assert popped is not None and popped.id == job_id
    r.hset(keys.job_key(job_id), "status", "queued")  # operations.md's "Re-queue a job by hand"
    r.lrem(keys.inflight_key("gone"), 0, job_id)
    r.lpush(keys.queue_key(M), job_id)
    if left_in == "queue and sub-queue":
        r.lpush(keys.subqueue_key(M, "normal", "a"), job_id)  # (and a is not in the level's active set)
    assert OrphanWalk(r).next_step() == Rescued(indexed=[job_id])
    assert r.zscore(keys.active_key(M, "normal"), "a") is not None
    assert r.lrange(keys.subqueue_key(M, "normal", "a"), 0, -1) == [job_id.encode()]
    first = store.pop("w", [M])
    assert first is not None and first.id == job_id  # (before: others[0]; the job came last)
    assert [p.id for p in (store.pop("w", [M]) for _ in others) if p] == others
    assert store.pop("w", [M]) is None and OrphanWalk(r).next_step() == Rescued()


def test_an_indexed_queued_job_is_left_alone(store: BlockingStore, r: redis.Redis) -> None:
    ids = [store.enqueue(JobRequest(model="m", prompt=str(i), submitter=s)).id for i, s in enumerate("abab")]
    before = {k: r.lrange(k, 0, -1) for k in (keys.queue_key(M), keys.subqueue_key(M, "normal", "a"))}
    assert OrphanWalk(r).next_step() == Rescued()
    assert {k: r.lrange(k, 0, -1) for k in before} == before
    assert r.zrange(keys.active_key(M, "normal"), 0, -1) == [b"a", b"b"]
    assert [e["type"] for e in store.events(ids[0])] == ["queued"]
