"""Each Lua script of the job state machine driven directly against a real redis-server, with the Redis state it
leaves: these tests document the transitions (queued -> started -> finished / failed / canceled, and back)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from corral.common import keys, scripts
from corral.common.jobs import rq_now

pytestmark = pytest.mark.integration
M = "m:latest"
EVENTS = {"maxlen": 1000, "ttl_ms": 60_000}
ENQUEUED_AT = "2024-05-01T12:00:00.000000Z"


def text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [text(v) for v in value]
    return value


def hash_of(r: redis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(key).items()}


def events(r: redis.Redis, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(i.decode(), json.loads(f[b"e"])) for i, f in r.xrange(keys.events_key(job_id))]


def fields(job_id: str, **extra: str) -> dict[str, str]:
    """A job hash as an enqueue writes it (the fields the scripts read, and a few of RQ's)."""
    return {"status": "queued", "model": M, "attempt": "1", "seq": "1", "data": '["corral.generate",null,[],{}]',
            "run_timeout": "30", "origin": keys.queue_name(M), "enqueued_at": ENQUEUED_AT, "priority": "normal",
            "submitter": "anon", **extra}  # fmt: skip


def enqueue(r: redis.Redis, job_id: str, *, checks: str = "0", quota: int = 0, owner: str = "", deadline: float = 0,
            max_queue: int = 0, idem: tuple[str, str] = ("", ""), **extra: str) -> Any:  # fmt: skip
    head = scripts.EnqueueArgs(max_queue=max_queue, history_min="0", history_max=1000, quota=quota,
                               start_ts="2024-05-01T12:00:01.000000Z", checks=checks, idem=idem[0],
                               digest=idem[1], idem_ttl=60, **EVENTS)  # fmt: skip
    queued = json.dumps({"job": job_id, "seq": 0, "attempt": 1, "type": "queued"})
    block = scripts.JobBlock(id=job_id, event=queued, deadline=deadline, model=M, priority="normal",
                             submitter="anon", created="1714564800.5", owner=owner,
                             hash=json.dumps(fields(job_id, **extra)))  # fmt: skip
    return text(scripts.ENQUEUE(r, scripts.EnqueueKeys(queue=keys.queue_key(M)), [*head, *block]))


def pop(r: redis.Redis, worker: str, flags: str = "1", models: tuple[str, ...] = (M,), slots: int = 0) -> Any:
    args = scripts.PopArgs(worker=worker, now=rq_now(), flags=flags, cold_delay=5, warm_ttl=60, switch_delay=5,
                           aging=0, park_slots=slots, park_ttl=30, seen="", **EVENTS)  # fmt: skip
    script_keys = [keys.inflight_key(worker), *map(keys.queue_key, models)]
    return text(scripts.POP(r, script_keys, args))


def emit(r: redis.Redis, job_id: str, attempt: str, worker: str, *bodies: str) -> Any:
    args = scripts.EmitArgs(id=job_id, attempt=attempt, worker=worker, **EVENTS)
    return scripts.EMIT(r, scripts.JobKey(job=keys.job_key(job_id)), [*args, *bodies])


def finish(
    r: redis.Redis, job_id: str, attempt: str, worker: str, *chunks: str, timing: list[str] = ()
) -> Any:  # type: ignore[assignment]
    args = scripts.FinishArgs(id=job_id, attempt=attempt, worker=worker, status="finished", ended_at=rq_now(),
                              result='{"text":"ab"}', error="", body='{"type":"done"}', result_ttl=60,
                              metrics='{"tokens":2}', chunks=len(chunks), **EVENTS)  # fmt: skip
    hashes = [keys.histogram_key("h")] * (len(timing) // 2)
    return scripts.FINISH(
        r, [keys.job_key(job_id), keys.inflight_key(worker), *hashes], [*args, *chunks, *timing]
    )


def requeue(r: redis.Redis, job_id: str, worker: str = "", counts: str = "1", max_attempts: int = 3) -> Any:
    args = scripts.RequeueArgs(id=job_id, attempt="", worker=worker, reason="worker died", now=ENQUEUED_AT,
                               max_attempts=max_attempts, result_ttl=60, counts=counts, **EVENTS)  # fmt: skip
    script_keys = scripts.RequeueKeys(job=keys.job_key(job_id), inflight=keys.inflight_key(worker or "-"))
    return text(scripts.REQUEUE(r, script_keys, args))


def end_args(job_id: str) -> scripts.EndArgs:
    return scripts.EndArgs(id=job_id, now="2024-05-01T12:00:09.000000Z", result_ttl=60, **EVENTS)


@pytest.fixture
def channels(r: redis.Redis) -> Iterator[Any]:
    """Subscribes to channels; ``channels.read()`` returns what was published on them so far, in order."""
    pubsub = r.pubsub()

    class Listener:
        def on(self, *names: str) -> None:
            pubsub.subscribe(*names)
            for _ in names:
                assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]

        def read(self) -> list[tuple[str, str]]:
            r.publish(next(iter(pubsub.channels)).decode(), "END")
            out = []
            while (message := pubsub.get_message(timeout=5)) is not None and message["data"] != b"END":
                out.append((message["channel"].decode(), message["data"].decode()))
            return out

    yield Listener()
    pubsub.close()


def test_enqueue_writes_a_queued_job(r: redis.Redis, channels: Any) -> None:
    channels.on(keys.wake_channel(M), keys.chunks_channel("j1"))
    assert enqueue(r, "j1", deadline=1714564900.25) == [1]  # 1 + its queue position
    job = hash_of(r, keys.job_key("j1"))
    assert job.pop("enq_ts") and job == fields("j1")  # the hash as given, and when the script queued it
    assert text(r.lrange(keys.queue_key(M), 0, -1)) == ["j1"]  # RQ's list
    assert r.smembers(keys.RQ_QUEUES) == {keys.queue_key(M).encode()}
    assert text(r.lrange(keys.subqueue_key(M, "normal", "anon"), 0, -1)) == ["j1"]  # the fair-share index
    assert r.zrange(keys.active_key(M, "normal"), 0, -1, withscores=True) == [(b"anon", 0.0)]
    assert r.zscore(keys.DEADLINES, "j1") == 1714564900.25
    assert r.zscore(keys.HISTORY, "j1") == 1714564800.5 and text(r.lrange(keys.RECENT_JOBS, 0, -1)) == ["j1"]
    assert events(r, "j1") == [("1-0", {"job": "j1", "seq": 0, "attempt": 1, "type": "queued"})]
    assert 0 < r.pttl(keys.events_key("j1")) <= 60_000
    assert r.hget(keys.STATS, "submitted") == b"1"
    queued = json.dumps({"job": "j1", "seq": 0, "attempt": 1, "type": "queued"})
    assert channels.read() == [(keys.chunks_channel("j1"), queued), (keys.wake_channel(M), "j1")]
    assert enqueue(r, "j2") == [2]


def test_enqueue_refuses_writing_nothing(r: redis.Redis) -> None:
    assert enqueue(r, "j1", checks="1") == [-3] and r.dbsize() == 0  # no live worker holds the model
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})
    assert enqueue(r, "j1", checks="1", max_queue=1) == [1]
    before = r.dbsize()
    assert enqueue(r, "j2", max_queue=1) == [-1, 1] and r.dbsize() == before  # the queue is full
    assert enqueue(r, "j3", quota=1, owner="k") == [2]
    before = r.dbsize()
    assert (
        enqueue(r, "j4", quota=1, owner="k") == [-2, 1] and r.dbsize() == before
    )  # the owner's quota is used up
    assert r.smembers(keys.owner_jobs_key("k")) == {b"j3"}
    r.hset(keys.job_key("j3"), "status", "finished")  # an ended job leaves the owner's set when counted
    assert enqueue(r, "j4", quota=1, owner="k") == [3]
    assert r.smembers(keys.owner_jobs_key("k")) == {b"j4"}


def test_pop_starts_the_next_job(r: redis.Redis) -> None:
    enqueue(r, "j1", deadline=time.time() + 60)
    reply = pop(r, "w1")
    assert reply == ["j1", "1", fields("j1")["data"], "30", M, ENQUEUED_AT, 1]  # seq 1: its started event
    job = hash_of(r, keys.job_key("j1"))
    assert (job["status"], job["worker_name"], job["attempt"], job["seq"]) == ("started", "w1", "1", "2")
    assert job["started_at"] == job["last_heartbeat"] >= ENQUEUED_AT
    assert text(r.lrange(keys.inflight_key("w1"), 0, -1)) == ["j1"]
    assert r.llen(keys.queue_key(M)) == 0 and not r.exists(keys.subqueue_key(M, "normal", "anon"))
    assert not r.exists(keys.active_key(M, "normal")) and r.zscore(keys.DEADLINES, "j1") is None
    assert r.hget(keys.RUNNING, M) == b"1" and r.llen(keys.starts_key(M)) == 1
    assert r.zscore(keys.warm_key(M), "w1") is not None  # flag '1': the worker claims the model warm
    assert events(r, "j1")[1] == (
        "2-0",
        {"job": "j1", "seq": 1, "attempt": 1, "type": "started", "worker": "w1"},
    )
    assert pop(r, "w1") is None


def test_a_pop_that_finds_nothing_parks_the_worker(r: redis.Redis) -> None:
    assert pop(r, "w1", flags="10", models=(M, "cold:latest"), slots=3) is None
    assert r.zscore(keys.parked_key(M), "w1") == scripts.WARM_PARK + 3  # warm parks rank first
    assert r.zscore(keys.parked_key("cold:latest"), "w1") == 3
    park = hash_of(r, keys.park_key("w1"))
    assert park["models"] == f"{M} cold:latest" and float(park["until"]) > time.time()
    assert pop(r, "w1", models=()) is None  # no queues: only the park ends
    assert not r.exists(keys.park_key("w1"), keys.parked_key(M), keys.parked_key("cold:latest"))


def test_enqueue_hands_its_job_to_a_parked_worker(r: redis.Redis, channels: Any) -> None:
    channels.on(keys.control_channel("w1"))  # a live worker listens on its control channel
    r.hset(keys.worker_key("w1"), "healthy", "1")
    pop(r, "w1", slots=1)
    reply = enqueue(r, "j1")
    started = {"job": "j1", "seq": 1, "attempt": 1, "type": "started", "worker": "w1"}
    assert reply[0] == 1 and json.loads(reply[1]) == started  # the started event, for the submitter
    job = hash_of(r, keys.job_key("j1"))
    assert (job["status"], job["worker_name"], job["seq"]) == ("started", "w1", "2")
    assert job["started_at"] == job["last_heartbeat"] == "2024-05-01T12:00:01.000000Z"
    assert r.llen(keys.queue_key(M)) == 0 and text(r.lrange(keys.inflight_key("w1"), 0, -1)) == ["j1"]
    assert [e["type"] for _, e in events(r, "j1")] == ["queued", "started"]
    handed = ["j1", "1", fields("j1")["data"], "30", M, ENQUEUED_AT, 1]
    assert json.loads(hash_of(r, keys.park_key("w1"))["job"]) == handed  # kept for its next pop
    assert channels.read() == [
        (keys.control_channel("w1"), json.dumps({"dispatch": handed}, separators=(",", ":")))
    ]
    assert not r.exists(keys.parked_key(M)) and r.hget(keys.RUNNING, M) == b"1"


def test_emit_appends_events_and_publishes_them(r: redis.Redis, channels: Any) -> None:
    enqueue(r, "j1", reply_to="corral:reply:api1")
    pop(r, "w1")
    channels.on(keys.chunks_channel("j1"), "corral:reply:api1")
    assert emit(r, "j1", "1", "w1", '{"type":"chunk","text":"a"}', '{"type":"chunk","text":"b"}') == 0
    assert r.hget(keys.job_key("j1"), "seq") == b"4"
    chunk = {"job": "j1", "seq": 3, "attempt": 1, "type": "chunk", "text": "b"}
    assert events(r, "j1")[-1] == ("4-0", chunk)
    assert [json.loads(data)["seq"] for _, data in channels.read()] == [2, 2, 3, 3]  # each on both channels
    r.hset(keys.job_key("j1"), "cancel", "1")
    assert emit(r, "j1", "1", "w1", '{"type":"chunk","text":"c"}') == 1  # written, and a cancel is asked


def test_finish_ends_the_job_and_records_its_timing(r: redis.Redis) -> None:
    enqueue(r, "j1")
    pop(r, "w1")
    r.hset(keys.job_key("j1"), "cancel", "1")
    timing = ["m|1", "1", "m|sum", "0.25"]
    assert finish(r, "j1", "1", "w1", '{"type":"chunk","text":"ab"}', timing=timing) == 1
    job = hash_of(r, keys.job_key("j1"))
    assert (job["status"], job["result"], job["metrics"]) == ("finished", '{"text":"ab"}', '{"tokens":2}')
    assert "cancel" not in job and "error" not in job and job["ended_at"]
    assert [(i, e["type"]) for i, e in events(r, "j1")] == [
        ("1-0", "queued"), ("2-0", "started"), ("3-0", "chunk"), ("4-0", "done")]  # fmt: skip
    assert 0 < r.ttl(keys.job_key("j1")) <= 60 and r.llen(keys.inflight_key("w1")) == 0
    assert r.hget(keys.RUNNING, M) == b"0" and r.hget(keys.STATS, "finished:finished") == b"1"
    assert hash_of(r, keys.histogram_key("h")) == {"m|1": "1", "m|sum": "0.25"}


def test_a_stale_attempt_is_fenced_off(r: redis.Redis) -> None:
    enqueue(r, "j1")
    pop(r, "w1")
    assert requeue(r, "j1", worker="w1") == ["requeued", 2]
    pop(r, "w2")
    before = (hash_of(r, keys.job_key("j1")), events(r, "j1"))
    assert emit(r, "j1", "1", "w1", '{"type":"chunk","text":"stale"}') == -1
    assert finish(r, "j1", "1", "w1", timing=["m|1", "1"]) == 0
    assert (
        emit(r, "j1", "2", "w1", '{"type":"chunk","text":"stale"}') == -1
    )  # the right attempt, not its worker
    assert (hash_of(r, keys.job_key("j1")), events(r, "j1")) == before  # nothing written
    assert not r.exists(keys.histogram_key("h"))
    assert emit(r, "j1", "2", "w2", '{"type":"chunk","text":"fresh"}') == 0


def test_a_stale_attempt_on_the_same_worker_leaves_the_running_ones_entry(r: redis.Redis) -> None:
    """Before: the stale attempt's fenced-off finish took the job out of the list while its next attempt ran on the
    same worker (started, listed nowhere: stuck for good if that worker then died)."""
    enqueue(r, "j1")
    pop(r, "w1")
    assert requeue(r, "j1", worker="w1") == ["requeued", 2]  # (a janitor that took w1 for dead)
    pop(r, "w1")  # attempt 2, on the same worker
    assert finish(r, "j1", "1", "w1") == 0
    assert text(r.lrange(keys.inflight_key("w1"), 0, -1)) == ["j1"]
    assert finish(r, "j1", "2", "w1") == 1 and r.llen(keys.inflight_key("w1")) == 0


def test_rescue_puts_back_a_queued_job_in_no_queue_and_a_started_one_in_no_list(r: redis.Redis) -> None:
    for job_id in ("j0", "j1", "j2"):
        enqueue(r, job_id)
    pop(r, "w1")  # j0
    r.lrem(keys.inflight_key("w1"), 0, "j0")
    r.lrem(keys.queue_key(M), 0, "j2")
    r.lrem(keys.subqueue_key(M, "normal", "anon"), 0, "j2")
    rescue = scripts.RESCUE
    reply = rescue(r, scripts.NoKeys(), scripts.RescueArgs(cursor=0, step=10, budget=100))
    assert reply == [0, [b"j2"], [b"j0"], []]
    assert text(r.lrange(keys.queue_key(M), 0, -1)) == ["j2", "j1"]
    assert text(r.lrange(keys.subqueue_key(M, "normal", "anon"), 0, -1)) == ["j2", "j1"]
    assert text(r.lrange(keys.inflight_key("w1"), 0, -1)) == ["j0"]
    assert rescue(r, scripts.NoKeys(), scripts.RescueArgs(cursor=0, step=10, budget=100)) == [0, [], [], []]


def test_requeue_puts_a_job_back_at_the_front_then_gives_up(r: redis.Redis, channels: Any) -> None:
    enqueue(r, "j0")
    enqueue(r, "j1")
    pop(r, "w1")  # j0
    channels.on(keys.wake_channel(M))
    assert requeue(r, "j0", worker="other") == ["skipped"]  # fenced: not that worker's
    assert requeue(r, "j0", worker="w1", counts="0") == ["requeued", 1]  # an attempt that does not count
    job = hash_of(r, keys.job_key("j0"))
    assert (job["status"], job["attempt"], job["enqueued_at"]) == ("queued", "1", ENQUEUED_AT)
    assert not {"worker_name", "started_at", "cancel"} & set(job)
    assert text(r.lrange(keys.queue_key(M), 0, -1)) == ["j0", "j1"]  # at the front
    assert text(r.lrange(keys.subqueue_key(M, "normal", "anon"), 0, -1)) == ["j0", "j1"]
    assert events(r, "j0")[-1][1] == {
        "job": "j0",
        "seq": 2,
        "attempt": 1,
        "type": "retry",
        "reason": "worker died",
    }
    assert channels.read() == [(keys.wake_channel(M), "j0")] and r.hget(keys.STATS, "requeued") == b"1"
    assert r.hget(keys.RUNNING, M) == b"0" and requeue(r, "j0") == ["skipped"]  # not started
    outcomes = []
    for _ in range(3):
        pop(r, "w1")
        outcomes.append(requeue(r, "j0", max_attempts=3))
    assert outcomes == [["requeued", 2], ["requeued", 3], ["failed", 3]]
    job = hash_of(r, keys.job_key("j0"))
    assert (job["status"], job["error"]) == ("failed", "gave up after 3 attempts: worker died")
    assert events(r, "j0")[-1][1]["type"] == "error" and 0 < r.ttl(keys.job_key("j0")) <= 60
    assert r.hget(keys.STATS, "finished:failed") == b"1"


def test_cancel_a_queued_a_running_an_ended_and_a_missing_job(r: redis.Redis, channels: Any) -> None:
    enqueue(r, "j0")
    enqueue(r, "j1")
    cancel = scripts.CANCEL
    assert text(cancel(r, scripts.JobKey(job=keys.job_key("j1")), end_args("j1"))) == ["cancelled"]
    job = hash_of(r, keys.job_key("j1"))
    assert (job["status"], job["ended_at"]) == ("canceled", "2024-05-01T12:00:09.000000Z")
    assert text(r.lrange(keys.queue_key(M), 0, -1)) == ["j0"]
    assert text(r.lrange(keys.subqueue_key(M, "normal", "anon"), 0, -1)) == ["j0"]
    assert events(r, "j1")[-1][1]["type"] == "cancelled" and 0 < r.ttl(keys.job_key("j1")) <= 60
    assert r.hget(keys.STATS, "finished:canceled") == b"1"
    pop(r, "w1")
    channels.on(keys.control_channel("w1"))
    assert text(cancel(r, scripts.JobKey(job=keys.job_key("j0")), end_args("j0"))) == ["cancelling", "w1"]
    assert r.hget(keys.job_key("j0"), "cancel") == b"1" and r.hget(keys.job_key("j0"), "status") == b"started"
    assert channels.read() == [(keys.control_channel("w1"), '{"cancel":"j0"}')]
    assert text(cancel(r, scripts.JobKey(job=keys.job_key("j1")), end_args("j1"))) == ["canceled"]
    assert text(cancel(r, scripts.JobKey(job=keys.job_key("nope")), end_args("nope"))) == ["missing"]


def test_a_queued_job_past_its_deadline_expires(r: redis.Redis) -> None:
    enqueue(r, "j1", deadline=time.time() - 1, queue_timeout="5")
    expire = scripts.EXPIRE_QUEUED
    script_keys = scripts.ExpireKeys(job=keys.job_key("j1"), deadlines=keys.DEADLINES)
    assert expire(r, script_keys, end_args("j1")) == 1
    job = hash_of(r, keys.job_key("j1"))
    assert (job["status"], job["error"]) == ("failed", "expired: not started within 5s in the queue")
    assert r.llen(keys.queue_key(M)) == 0 and not r.exists(
        keys.subqueue_key(M, "normal", "anon"), keys.DEADLINES
    )
    assert events(r, "j1")[-1][1]["type"] == "error" and r.hget(keys.STATS, "expired") == b"1"
    enqueue(r, "j2", deadline=time.time() - 1)
    pop(r, "w1")  # started in time: the expiry only drops its deadline
    r.zadd(keys.DEADLINES, {"j2": 1})
    assert (
        expire(r, scripts.ExpireKeys(job=keys.job_key("j2"), deadlines=keys.DEADLINES), end_args("j2")) == 0
    )
    assert r.hget(keys.job_key("j2"), "status") == b"started" and not r.exists(keys.DEADLINES)


def test_the_batch_enqueue_is_all_or_nothing(r: redis.Redis) -> None:
    def batch(ids: list[str], checks: str, max_queue: int = 0, idem: tuple[str, str] = ("", "")) -> Any:
        head = scripts.EnqueueArgs(max_queue=max_queue, history_min="0", history_max=1000, quota=0, start_ts="",
                                   checks=checks, idem=idem[0], digest=idem[1], idem_ttl=60, **EVENTS)  # fmt: skip
        blocks = [scripts.JobBlock(id=i, event="{}", deadline=0, model=M, priority="normal", submitter="anon",
                                   created="1", owner="", hash=json.dumps(fields(i))) for i in ids]  # fmt: skip
        return text(scripts.ENQUEUE_BATCH(r, scripts.NoKeys(), [*head, *(a for b in blocks for a in b)]))

    assert batch(["a", "b"], "01") == [-3, 1] and r.dbsize() == 0  # the second job's model has no live worker
    assert batch(["a", "b", "c"], "000", max_queue=2) == [-1, M, 0] and r.dbsize() == 0
    assert batch(["a", "b"], "00") == [1, 2]
    assert text(r.lrange(keys.queue_key(M), 0, -1)) == ["a", "b"] and r.hget(keys.STATS, "submitted") == b"2"
    # an Idempotency-Key: the first batch is remembered whole, a replay writes nothing
    assert batch(["c", "d"], "00", idem=("k", "d1")) == [3, 4]
    assert batch(["e", "f"], "00", idem=("k", "d1")) == [-4, "c|3|d|4"]
    assert batch(["e", "f"], "00", idem=("k", "d2")) == [-5]
    assert r.llen(keys.queue_key(M)) == 4 and not r.exists(keys.job_key("e"))


def test_an_idempotency_key_answers_its_first_job_within_its_window(r: redis.Redis) -> None:
    record = keys.idempotency_key("", "k1")
    assert enqueue(r, "j1", idem=("k1", "d1")) == [1]
    assert r.get(record) == b"d1|j1|1" and 55 < r.ttl(record) <= 60
    before = {k: r.dump(k) for k in r.keys("*")}
    # the same key and digest: the first job, nothing written; another digest: refused, nothing written
    assert enqueue(r, "j2", idem=("k1", "d1")) == [-4, "j1|1"]
    assert enqueue(r, "j3", idem=("k1", "d2")) == [-5]
    assert {k: r.dump(k) for k in r.keys("*")} == before
    # the key is the owner's: another owner's (and no key at all) queue a job of their own
    assert enqueue(r, "j4", owner="o2", idem=("k1", "d1")) == [2]
    assert enqueue(r, "j5") == [3]
    assert r.get(keys.idempotency_key("o2", "k1")) == b"d1|j4|2"
    # once the window has passed, the key queues a new job
    r.pexpire(record, 1)
    for _ in range(1000):
        if not r.exists(record):
            break
        time.sleep(0.001)
    assert enqueue(r, "j6", idem=("k1", "d2")) == [4]
    assert text(r.lrange(keys.queue_key(M), 0, -1)) == ["j1", "j4", "j5", "j6"]


def test_position_counts_the_jobs_expected_first(r: redis.Redis) -> None:
    for i in range(3):
        enqueue(r, f"j{i}")
    r.lpush(keys.starts_key(M), "100.000", "101.000")
    position = scripts.POSITION
    assert text(position(r, scripts.NoKeys(), scripts.PositionArgs(id="j2"))) == [2, M, "101.000", "100.000"]
    pop(r, "w1")
    assert position(r, scripts.NoKeys(), scripts.PositionArgs(id="j0")) is None  # started: no position


def test_a_pop_at_capacity_signals_a_switch_to_an_unserved_model(r: redis.Redis) -> None:
    enqueue(r, "j1")
    r.hset(keys.job_key("j1"), "enq_ts", f"{time.time() - 10:.6f}")  # waited longer than the switch delay
    enqueue(r, "j2")
    r.rpush(keys.queue_key("other:latest"), "x")
    # then per warm model: its name, its queued jobs and the other workers claiming it
    assert pop(r, "w1", flags="1s", models=("other:latest", M)) == ["switch", M, "other:latest", 1, 0]
    assert r.zscore(keys.warm_key(M), "w1") is not None  # claimed: no other worker switches too
    assert r.llen(keys.queue_key(M)) == 2  # nothing taken


def test_the_janitor_lock_is_released_only_by_its_holder(r: redis.Redis) -> None:
    r.set(keys.JANITOR_LOCK, "mine")
    release = scripts.RELEASE_LOCK
    assert release(r, scripts.LockKey(lock=keys.JANITOR_LOCK), scripts.LockArgs(token="theirs")) == 0
    assert release(r, scripts.LockKey(lock=keys.JANITOR_LOCK), scripts.LockArgs(token="mine")) == 1
    assert not r.exists(keys.JANITOR_LOCK)
