"""The janitor's walk over the in-flight lists: the jobs of a worker that is not registered at all (it stopped and
deregistered, or its entry was dropped) go back to their queues; a registered worker's are left alone."""

from __future__ import annotations

import time

import pytest
import redis

from corral.common import keys
from corral.common.janitor import Janitor
from corral.common.schemas import JobRequest
from corral.common.store import JobStore

from .blocking import LIMITS, BlockingStore

pytestmark = pytest.mark.integration


def test_the_in_flight_list_of_an_unregistered_worker_is_requeued(
    store: BlockingStore, r: redis.Redis
) -> None:
    r.zadd(keys.model_workers_key("m:latest"), {"live": time.time() + 60})
    jobs = {w: store.enqueue(JobRequest(model="m", prompt=w)).id for w in ("gone", "live")}
    for worker in ("gone", "live"):
        assert store.pop(worker, ["m:latest"]) is not None
    # "live" beats; "gone" stopped: neither in corral:workers nor with a heartbeat hash, its list still there
    r.zadd(keys.WORKERS, {"live": time.time()})
    r.hset(keys.worker_key("live"), "state", "active")
    sweep = Janitor(JobStore(r, LIMITS), heartbeat_ttl=0.0).sweep()  # (Redis up two TTLs: no restart grace)
    assert (sweep.requeued, sweep.failed) == (1, 0)
    gone = store.get(jobs["gone"])
    assert (gone.status, gone.attempt) == ("queued", 2) and store.inflight("gone") == []
    assert [e["type"] for e in store.events(jobs["gone"])][-1] == "retry"
    assert r.lrange(keys.queue_key("m:latest"), 0, -1) == [jobs["gone"].encode()]
    assert store.get(jobs["live"]).status == "running" and store.inflight("live") == [jobs["live"]]


def test_the_walk_is_bounded_per_pass_and_covers_every_list(store: BlockingStore, r: redis.Redis) -> None:
    r.zadd(keys.model_workers_key("m:latest"), {"x": time.time() + 60})
    ids = [store.enqueue(JobRequest(model="m", prompt=str(i))).id for i in range(30)]
    for i in range(30):
        assert store.pop(f"gone{i}", ["m:latest"]) is not None
    for i in range(300):  # other keys for SCAN to step over
        r.set(f"other:{i}", 1)
    janitor = Janitor(JobStore(r, LIMITS), heartbeat_ttl=0.0)
    passes = 0
    while any(store.inflight(f"gone{i}") for i in range(30)):
        janitor.sweep()
        passes += 1
        assert passes < 20
    assert passes > 1  # one SCAN step a pass, not the whole keyspace
    assert {store.get(job_id).status for job_id in ids} == {"queued"}
