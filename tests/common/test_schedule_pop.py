"""The scheduling inside the pop script, against a real redis-server: priorities, fair share, warm-first, batch."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.common.errors import ModelNotFound, QueueFull
from corral.common.jobs import Limits
from corral.common.schedule import SwitchSignal
from corral.common.schemas import JobRequest
from corral.common.store import Popped

from .blocking import BlockingStore

pytestmark = pytest.mark.integration
LIMITS = Limits(events_maxlen=1000, events_ttl_ms=60_000, result_ttl=60, job_timeout=30, max_retries=2,
                cold_delay=0.3, warm_ttl=60)  # fmt: skip
M = "m:latest"


@pytest.fixture
def open_store(redis_server: RedisServer) -> Iterator[Callable[[Limits], BlockingStore]]:
    """Opens the async store with given limits (closed at the end)."""
    opened: list[BlockingStore] = []

    def make(limits: Limits) -> BlockingStore:
        opened.append(BlockingStore(redis_server.url, limits))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(r: redis.Redis, open_store: Callable[[Limits], BlockingStore]) -> BlockingStore:
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})
    return open_store(LIMITS)


def job(prompt: str, **fields: object) -> JobRequest:
    return JobRequest.model_validate({"model": "m", "prompt": prompt, **fields})


def drain(store: BlockingStore, worker: str = "w1", limit: int = 10_000) -> list[str]:
    order = []
    for _ in range(limit):
        popped = store.pop(worker, [M])
        if popped is None:
            break
        order.append(popped.kwargs["request"]["prompt"])
    return order


def test_priorities_pop_high_then_normal_then_low(store: BlockingStore) -> None:
    for i, priority in enumerate(["low", "normal", "high", "normal", "high", "low"]):
        store.enqueue(job(f"{priority}{i}", priority=priority))
    assert drain(store) == ["high2", "high4", "normal1", "normal3", "low0", "low5"]


def test_one_job_is_not_starved_by_a_flood(store: BlockingStore, r: redis.Redis) -> None:
    store.enqueue_many([job(f"a{i}", user="alice") for i in range(1000)])
    store.enqueue_many([job(f"a{i}", user="alice") for i in range(1000, 2000)])
    lone = store.enqueue(job("bob's", submitter="bob"))
    assert lone.queue_position is not None and lone.queue_position <= 1  # the 202: the fair-share place
    view = store.get(lone.id)
    assert view.queue_position is not None and view.queue_position <= 1 and view.submitter == "bob"
    first = [store.pop("w1", [M]) for _ in range(3)]
    assert "bob's" in [p.kwargs["request"]["prompt"] for p in first if p]
    assert r.llen(keys.queue_key(M)) == 2000 - 2  # the RQ list stays exact


def test_weights_share_pops_in_proportion(store: BlockingStore, r: redis.Redis) -> None:
    r.hset(keys.WEIGHTS, "big", 3)
    store.enqueue_many([job(f"big{i}", user="big") for i in range(40)])
    store.enqueue_many([job(f"small{i}", user="small") for i in range(40)])
    first = drain(store, limit=40)
    big = sum(p.startswith("big") for p in first)
    assert 28 <= big <= 32  # 3:1


def test_queue_position_counts_priorities_and_shares(store: BlockingStore) -> None:
    store.enqueue_many([job(f"a{i}", user="a") for i in range(10)])
    b = [store.enqueue(job(f"b{i}", user="b")).id for i in range(3)]
    submitted = store.enqueue(job("urgent", priority="high", user="c"))
    high = submitted.id
    assert store.get(high).queue_position == 0 == submitted.queue_position
    # b's third job: 1 high, 2 of b before it, and a's jobs with an earlier turn (about 3)
    position = store.get(b[2]).queue_position
    assert position is not None and 5 <= position <= 7
    assert drain(store)[:1] == ["urgent"]


def test_cancel_and_requeue_keep_the_index(store: BlockingStore, r: redis.Redis) -> None:
    first = store.enqueue(job("one", user="u")).id
    second = store.enqueue(job("two", user="u")).id
    assert store.cancel(first) == "cancelled"
    popped = store.pop("w1", [M])
    assert popped is not None and popped.id == second
    assert int(r.hget(keys.RUNNING, M) or 0) == 1
    assert store.requeue(second, "test", worker_id="w1")[0] == "requeued"
    assert int(r.hget(keys.RUNNING, M) or 0) == 0
    again = store.pop("w2", [M])
    assert again is not None and again.id == second
    assert r.exists(keys.active_key(M, "normal")) == 0 and r.llen(keys.queue_key(M)) == 0


def test_foreign_jobs_in_the_rq_list_are_still_popped(store: BlockingStore, r: redis.Redis) -> None:
    ours = store.enqueue(job("ours")).id
    r.hset(keys.job_key("foreign"), mapping={"status": "queued", "data": "x", "model": M})
    r.rpush(keys.queue_key(M), "foreign")
    got = [store.pop("w1", [M]), store.pop("w1", [M])]
    assert [p.id for p in got if p] == [ours, "foreign"]


def test_cold_worker_waits_while_a_warm_one_claims_the_model(store: BlockingStore, r: redis.Redis) -> None:
    assert store.pop_scheduled("warm", [M], {M}) == (None, 0.0)  # an idle worker claims M warm
    job_id = store.enqueue(job("p")).id
    popped, wait = store.pop_scheduled("cold", [M], set())
    assert popped is None and 0 < wait <= LIMITS.cold_delay
    deadline = time.monotonic() + 10
    while popped is None and time.monotonic() < deadline:
        time.sleep(wait)
        popped, wait = store.pop_scheduled("cold", [M], set())
    assert popped is not None and popped.id == job_id
    assert store.get(job_id).worker == "cold"


def test_cold_worker_takes_at_once_when_nobody_is_warm(store: BlockingStore, r: redis.Redis) -> None:
    job_id = store.enqueue(job("p")).id
    popped, _ = store.pop_scheduled("cold", [M], set())
    assert popped is not None and popped.id == job_id
    assert r.zscore(keys.warm_key(M), "cold") is not None  # it loads the model now: the next job waits for it


def test_warm_worker_takes_at_once(store: BlockingStore, r: redis.Redis) -> None:
    store.pop_scheduled("other", [], {M})
    r.zadd(keys.warm_key(M), {"other": time.time() + 60})
    job_id = store.enqueue(job("p")).id
    popped, _ = store.pop_scheduled("warm", [M], {M})
    assert popped is not None and popped.id == job_id


def test_batch_is_all_or_nothing_on_a_full_queue(
    r: redis.Redis, open_store: Callable[[Limits], BlockingStore]
) -> None:
    store = open_store(dataclasses.replace(LIMITS, max_queue=50))
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})
    store.enqueue_many([job(f"p{i}") for i in range(45)])
    before = r.dbsize()
    with pytest.raises(QueueFull):
        store.enqueue_many([job(f"q{i}") for i in range(6)])
    assert r.dbsize() == before and r.llen(keys.queue_key(M)) == 45
    assert len(store.enqueue_many([job(f"q{i}") for i in range(5)])) == 5


def test_batch_refuses_an_unserved_model_naming_it(store: BlockingStore, r: redis.Redis) -> None:
    before = r.dbsize()
    with pytest.raises(ModelNotFound, match=r"jobs\[1\]"):
        store.enqueue_many([job("ok"), JobRequest(model="ghost", prompt="x")])
    assert r.dbsize() == before


def test_eta_from_recent_starts(store: BlockingStore, r: redis.Redis) -> None:
    now = time.time()
    r.lpush(keys.starts_key(M), *[f"{now - 10 + i:.3f}" for i in range(11)])  # one start per second
    ids = [store.enqueue(job(f"p{i}")).id for i in range(5)]
    view = store.get(ids[4])
    assert view.queue_position == 4 and view.estimated_start_at is not None


M2 = "n:latest"


def test_a_worker_at_capacity_switches_to_a_model_nobody_serves(
    r: redis.Redis, open_store: Callable[[Limits], BlockingStore]
) -> None:
    store = open_store(dataclasses.replace(LIMITS, switch_delay=0.3))
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})
    r.zadd(keys.model_workers_key(M2), {"w": time.time() + 60})
    store.enqueue_many([job(f"m{i}") for i in range(3)])
    waiting = store.enqueue(JobRequest(model="n", prompt="me")).id
    # full with M running: M is taken, N only probed; N has not waited the switch delay yet
    got = store.pop_planned("full", [M, M2], "1s")
    assert got.job is not None and got.job.model == M and got.switch is None
    time.sleep(0.35)
    got = store.pop_planned("full", [M, M2], "1s")
    assert got.job is None and got.switch == SwitchSignal(M2, {M: (2, 0)})
    assert r.zscore(keys.warm_key(M2), "full") is not None  # claimed: no other worker switches too
    assert store.pop_planned("other", [M2], "s").switch is None
    reserved = store.pop_planned("full", [M, M2], "1r")  # draining M would leave it out; r only claims
    assert reserved.job is not None and reserved.job.model == M
    assert store.get(waiting).status == "queued"
    taken = store.pop_planned("full", [M, M2], "1t")  # room now: the target is taken (it has waited long)
    assert taken.job is not None and taken.job.id == waiting


def test_no_switch_while_a_worker_claims_the_model(
    r: redis.Redis, open_store: Callable[[Limits], BlockingStore]
) -> None:
    store = open_store(dataclasses.replace(LIMITS, switch_delay=0.0))
    r.zadd(keys.model_workers_key(M2), {"w": time.time() + 60})
    store.pop_planned("serving", [M2], "1")  # a worker has N loaded
    store.enqueue(JobRequest(model="n", prompt="me"))
    assert store.pop_planned("full", [M2], "s") == Popped()


def test_with_room_an_unserved_model_goes_before_the_warm_queue(
    r: redis.Redis, open_store: Callable[[Limits], BlockingStore]
) -> None:
    store = open_store(dataclasses.replace(LIMITS, switch_delay=0.3))
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})
    r.zadd(keys.model_workers_key(M2), {"w": time.time() + 60})
    lone = store.enqueue(JobRequest(model="n", prompt="me")).id
    store.enqueue_many([job(f"m{i}") for i in range(5)])
    first = store.pop_planned("w", [M, M2], "1c")
    assert first.job is not None and first.job.model == M  # N has not waited the switch delay: warm first
    time.sleep(0.35)
    store.pop_planned("other", [], "")
    r.zadd(keys.warm_key(M2), {"other": 0})  # an expired claim says nothing
    second = store.pop_planned("w", [M, M2], "1c")
    assert second.job is not None and second.job.id == lone


def test_aging_serves_a_starved_priority_level_once_per_interval(
    r: redis.Redis, open_store: Callable[[Limits], BlockingStore]
) -> None:
    store = open_store(dataclasses.replace(LIMITS, priority_aging=0.3))
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})
    r.hset(keys.SERVED, f"{M}|low", "0")  # a level served long ago and then empty: its wait starts on arrival
    store.enqueue_many([job("low", priority="low"), *[job(f"high{i}", priority="high") for i in range(20)]])
    assert drain(store, limit=3) == ["high0", "high1", "high2"]  # strict while the low job is young
    time.sleep(0.35)
    assert drain(store, limit=2) == ["low", "high3"]  # then it gets one pop, and high goes on


def test_strict_priorities_without_aging(store: BlockingStore) -> None:
    store.enqueue_many([job("low", priority="low"), *[job(f"high{i}", priority="high") for i in range(3)]])
    time.sleep(0.05)
    assert drain(store) == ["high0", "high1", "high2", "low"]


def test_each_queue_has_its_own_delays(r: redis.Redis, open_store: Callable[[Limits], BlockingStore]) -> None:
    """A worker passes one cold and one switch delay per queue (derived from each model's load time)."""
    store = open_store(LIMITS)
    for model in (M, M2):
        r.zadd(keys.model_workers_key(model), {"w": time.time() + 60})
        store.pop_planned("warm", [model], "1")  # another worker has both loaded
    slow, quick = store.enqueue(job("slow")).id, store.enqueue(JobRequest(model="n", prompt="quick")).id
    time.sleep(0.15)
    got = store.pop_planned("cold", [M, M2], "00", delays=("30 0.1", "30 30"))
    assert got.job is not None and got.job.id == quick  # M2's delay has passed, M's has not
    left = store.pop_planned("cold", [M, M2], "00", delays=("30 0.1", "30 30"))
    assert left.job is None and 29 < left.wait <= 30
    assert store.get(slow).status == "queued"
    r.zadd(keys.model_workers_key("o:latest"), {"w": time.time() + 60})
    store.enqueue(JobRequest(model="o", prompt="nobody serves me"))
    time.sleep(0.15)
    assert store.pop_planned("full", [M, "o:latest"], "1s", delays=("30 30", "30 30")).switch is None
    switch = store.pop_planned("full", [M, "o:latest"], "1s", delays=("30 30", "30 0.1")).switch
    assert switch is not None and switch.model == "o:latest"


def test_a_host_full_of_loaded_models_helps_after_the_switch_delay(
    r: redis.Redis, open_store: Callable[[Limits], BlockingStore]
) -> None:
    """'e': the host's loaded models fill it (one idle): a cold job, served elsewhere, waits the switch delay."""
    store = open_store(LIMITS)
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})
    store.pop_planned("warm", [M], "1")  # another worker has M loaded
    queued = store.enqueue(job("wanted")).id
    time.sleep(0.15)
    assert store.pop_planned("full", [M], "e", delays=("0.1", "30")).job is None  # past the cold delay: waits
    assert store.pop_planned("full", [M], "c", delays=("0.1", "30")).job is not None  # with room: takes it
    assert store.get(queued).worker == "full"
    again = store.enqueue(job("again")).id
    r.zrem(keys.warm_key(M), "full")
    time.sleep(0.15)
    taken = store.pop_planned("full", [M], "e", delays=("30", "0.1")).job
    assert taken is not None and taken.id == again  # after the switch delay it does help
