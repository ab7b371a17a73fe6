"""Warm claims follow the placement decisions as they are taken: a worker that takes or is handed a job of a model
it has not loaded claims the model in the same script, so the next job of that model waits for it (the cold delay)
rather than making another idle host load the model too (docs/scheduling.md, "Warm first")."""

from __future__ import annotations

import time

import pytest
import redis

from corral.common import keys

from .test_scripts import M, enqueue, hash_of, pop

pytestmark = pytest.mark.integration


def live_worker(r: redis.Redis, worker: str) -> redis.client.PubSub:
    """A worker the enqueue may hand jobs to: healthy, listening on its control channel."""
    r.hset(keys.worker_key(worker), "healthy", "1")
    listener = r.pubsub()
    listener.subscribe(keys.control_channel(worker))
    assert listener.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    return listener


def claim_of(r: redis.Redis, worker: str, model: str = M) -> float | None:
    return r.zscore(keys.warm_key(model), worker)


def test_a_pop_that_takes_a_cold_job_claims_its_model_at_once(r: redis.Redis) -> None:
    enqueue(r, "j1")
    assert pop(r, "w1", flags="c")[0] == "j1"  # nobody has the model: taken at once
    claim = claim_of(r, "w1")
    assert claim is not None and claim > time.time() + 50  # (the pop's warm_ttl is 60 s)


def test_a_cold_job_waiting_for_its_delay_is_not_claimed(r: redis.Redis) -> None:
    r.zadd(keys.warm_key(M), {"w0": time.time() + 60})  # another worker has it loaded
    enqueue(r, "j1")
    assert isinstance(pop(r, "w1", flags="c"), int)  # the milliseconds until the cold delay has passed
    assert claim_of(r, "w1") is None


def test_a_job_handed_to_a_cold_parked_worker_claims_its_model(r: redis.Redis) -> None:
    listeners = [live_worker(r, w) for w in ("w1", "w2")]
    try:
        pop(r, "w1", flags="c", slots=4)  # both idle, neither has the model loaded
        pop(r, "w2", flags="c", slots=4)
        assert hash_of(r, keys.park_key("w1"))["claim"] == "60"
        first = enqueue(r, "j1")
        loader = "w1" if r.lrange(keys.inflight_key("w1"), 0, -1) else "w2"
        other = "w2" if loader == "w1" else "w1"
        assert first[0] == 1 and claim_of(r, loader) is not None and claim_of(r, other) is None
        enqueue(
            r, "j2"
        )  # the loader is loading the model: the other idle worker is woken, not handed the job
        assert r.lrange(keys.inflight_key(other), 0, -1) == []
        assert r.lrange(keys.queue_key(M), 0, -1) == [b"j2"]
    finally:
        for listener in listeners:
            listener.close()


def test_a_job_handed_to_a_warm_parked_worker_writes_no_claim(r: redis.Redis) -> None:
    listener = live_worker(r, "w1")
    try:
        pop(r, "w1", flags="1", slots=4)  # the pop claims the loaded model itself
        r.zrem(keys.warm_key(M), "w1")
        enqueue(r, "j1")
        assert r.lrange(keys.inflight_key("w1"), 0, -1) == [b"j1"] and claim_of(r, "w1") is None
    finally:
        listener.close()
