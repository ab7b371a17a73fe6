"""Costs that must not grow with the fleet or the queue (docs/scaling.md): a janitor pass makes the same round trips
with 5 or 50 live workers and walks no keyspace for a dead one still listed; a pop takes a job from deep in its RQ
list (fair share, priorities) out of the list from the nearer end, and leaves the rest in order."""

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
Q = keys.queue_key("m:latest")


def beat(r: redis.Redis, worker: str) -> None:
    r.zadd(keys.WORKERS, {worker: time.time()})
    r.hset(keys.worker_key(worker), "state", "active")
    r.pexpire(keys.worker_key(worker), 60_000)


def pass_cost(r: redis.Redis, janitor: Janitor, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """One janitor pass: its round trips (a pipeline is one) and its SCAN calls."""
    sent = []
    send = redis.connection.Connection.send_packed_command

    def counted(self: redis.connection.Connection, command: object, check_health: bool = True) -> None:
        sent.append(command)
        send(self, command, check_health)

    before = r.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
    with monkeypatch.context() as patch:
        patch.setattr(redis.connection.Connection, "send_packed_command", counted)
        assert janitor.sweep().acted
    scans = r.info("commandstats").get("cmdstat_scan", {}).get("calls", 0) - before
    return len(sent), scans


def test_a_janitor_pass_costs_the_same_round_trips_with_any_fleet(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    janitor = Janitor(JobStore(r, LIMITS), heartbeat_ttl=0.0)  # (0: no grace after Redis' start)
    for i in range(5):
        beat(r, f"w{i}")
    janitor.sweep()  # (the first pass loads the lock's script)
    small, _ = pass_cost(r, janitor, monkeypatch)
    for i in range(5, 50):
        beat(r, f"w{i}")
    large, _ = pass_cost(r, janitor, monkeypatch)
    assert large == small  # one pipeline of EXISTS for all 50, not a round trip each


def test_a_listed_dead_worker_costs_no_walk_over_the_keyspace(
    store: BlockingStore, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    r.zadd(keys.model_workers_key("m:latest"), {"dead": time.time() + 60})
    job = store.enqueue(JobRequest(model="m", prompt="x")).id
    assert store.pop("dead", ["m:latest"]) is not None
    r.zadd(keys.WORKERS, {"dead": time.time() - 10})  # listed, its heartbeat hash gone
    r.mset({f"other:{i}": 1 for i in range(3000)})
    janitor = Janitor(JobStore(r, LIMITS), heartbeat_ttl=0.0)
    # one SCAN a pass: the bounded step of the walk over the in-flight lists, none over the whole keyspace
    assert pass_cost(r, janitor, monkeypatch)[1] == 1  # its jobs re-queued ...
    assert store.get(job).status == "queued"
    assert [pass_cost(r, janitor, monkeypatch)[1] for _ in range(3)] == [
        1,
        1,
        1,
    ]  # ... and the same on later passes
    assert r.zscore(keys.WORKERS, "dead") is not None  # still listed (as dead) for /workers
    # once dropped from the list (after DEAD_WORKER_KEEP), its model entries go too
    r.zadd(keys.WORKERS, {"dead": time.time() - 7200})
    janitor.sweep()
    assert (
        r.zscore(keys.WORKERS, "dead") is None
        and r.zscore(keys.model_workers_key("m:latest"), "dead") is None
    )


def test_a_pop_takes_a_job_from_deep_in_the_list_and_keeps_the_rest_in_order(
    store: BlockingStore, r: redis.Redis
) -> None:
    r.zadd(keys.model_workers_key("m:latest"), {"w": time.time() + 60})
    batch = [store.enqueue(JobRequest(model="m", prompt=str(i), submitter="a")).id for i in range(6)]
    late = store.enqueue(JobRequest(model="m", prompt="b", submitter="b")).id
    urgent = store.enqueue(JobRequest(model="m", prompt="c", submitter="c", priority="high")).id
    middle = store.enqueue(JobRequest(model="m", prompt="d", submitter="d")).id
    rest = [store.enqueue(JobRequest(model="m", prompt=str(i), submitter="a")).id for i in range(6, 9)]
    expected = [*batch, late, urgent, middle, *rest]
    assert [x.decode() for x in r.lrange(Q, 0, -1)] == expected
    taken = []
    while popped := store.pop("w", ["m:latest"]):
        taken.append(popped.id)
        expected.remove(popped.id)
        assert [x.decode() for x in r.lrange(Q, 0, -1)] == expected  # the one job out, the rest in order
    assert taken[0] == urgent and sorted(taken) == sorted([*batch, late, urgent, middle, *rest])
    assert taken.index(late) < 3 and taken.index(middle) < 4  # fair share: not behind a's whole batch
