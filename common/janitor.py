"""The janitor: finds workers whose heartbeat expired and puts their in-flight jobs back on their queues.

Every API and worker process runs one; a Redis lock (``SET NX PX`` with a token) makes exactly one act per pass.
A job re-queued here goes to the *front* of its model queue with ``attempt + 1`` and a ``retry`` event, or fails
with a reason once it has used ``CORRAL_MAX_RETRIES`` re-queues. Jobs whose queue-wait deadline passed are expired.
Right after a Redis restart every heartbeat may look expired (the workers beat into the Redis that went down, and
need a moment to reconnect), so until Redis has been up for two heartbeat TTLs the janitor declares dead only the
workers whose last heartbeat reached this Redis, after it started. It also walks the in-flight lists (a bounded
``SCAN`` step per pass) for those whose owner is not registered at all (a worker that stopped, or whose entry was
dropped) and re-queues their jobs the same way. And it takes a step of the walk over the job history for jobs
outside every list (``orphans``): a queued job in no queue, a started job in no in-flight list.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

import redis

from . import keys
from .connections import TRANSIENT
from .logs import job_event, job_requeued
from .orphans import OrphanWalk
from .scripts import RELEASE_LOCK, LockArgs, LockKey
from .store import JobStore

log = logging.getLogger("corral.janitor")
DEAD_WORKER_KEEP = 3600.0  # seconds a dead worker stays listed (marked dead) in /workers
# a heartbeat counts as one into this Redis when it is this much later than the start Redis reports (its uptime
# is in whole seconds; a worker's clock a little ahead of Redis' must not pass a beat before the restart off as one)
STARTED_MARGIN = 1.0
INFLIGHT_SCAN = 200  # in-flight keys looked at per pass (SCAN's COUNT): a pass stays short with any fleet


@dataclass
class Sweep:
    """What one pass did."""

    acted: bool = False
    dead_workers: int = 0
    requeued: int = 0
    failed: int = 0
    expired: int = 0
    rescued: int = 0  # jobs put back in their queue or in-flight list (orphans.py)


class Janitor:
    def __init__(self, store: JobStore, heartbeat_ttl: float, interval: float = 1.0) -> None:
        self.store = store
        self.redis: redis.Redis = store.redis
        self.heartbeat_ttl = heartbeat_ttl
        self.interval = interval
        self.token = uuid.uuid4().hex
        self.cursor = 0  # where the walk over the in-flight lists goes on
        self.orphans = OrphanWalk(self.redis)

    def sweep(self) -> Sweep:
        """One pass, if this process wins the lock."""
        result = Sweep()
        lock_ms = int(max(self.interval * 5, 5) * 1000)
        if not self.redis.set(keys.JANITOR_LOCK, self.token, nx=True, px=lock_ms):
            return result
        try:
            result.acted = True
            beats_after = self._beats_count_after()
            self._reap_dead_workers(result, beats_after)
            if not beats_after:  # (right after a Redis restart the workers may not have registered again yet)
                self._reap_unregistered(result)
            self._expire_waiting(result)
            rescued = self.orphans.next_step()
            result.rescued = len(rescued)
        finally:
            RELEASE_LOCK(self.redis, LockKey(lock=keys.JANITOR_LOCK), LockArgs(token=self.token))
        return result

    def _beats_count_after(self) -> float:
        """The time after which a worker's last heartbeat must be for its absence to mean death: none (0) once Redis
        has been up two heartbeat TTLs, else Redis' start (a worker that last beat before it gets that long to
        reconnect and beat again)."""
        uptime = float(self.redis.info("server").get("uptime_in_seconds", 0))
        if uptime >= 2 * self.heartbeat_ttl:
            return 0.0
        seconds, micros = self.redis.time()
        return float(seconds) + float(micros) / 1e6 - uptime + STARTED_MARGIN

    def _reap_dead_workers(self, result: Sweep, beats_after: float) -> None:
        """The listed workers whose heartbeat hash has expired: their jobs re-queued. Every hash is checked in one
        round trip (a pass makes the same few round trips with any number of workers)."""
        now = time.time()
        listed = self.redis.zrange(keys.WORKERS, 0, -1, withscores=True)
        pipe = self.redis.pipeline(transaction=False)
        for raw_id, _last_seen in listed:
            pipe.exists(keys.worker_key(raw_id.decode()))
        beating = pipe.execute() if listed else []
        for (raw_id, last_seen), alive in zip(listed, beating, strict=True):
            worker_id = raw_id.decode()
            if last_seen <= beats_after or alive:
                continue
            inflight = self.store.inflight(worker_id)
            if inflight:
                result.dead_workers += 1
                log.warning("worker %s is dead (last heartbeat %.1fs ago); re-queueing %d job(s)",
                            worker_id, now - last_seen, len(inflight))  # fmt: skip
                self._requeue_all(result, worker_id, f"worker {worker_id} died")
            if now - last_seen > DEAD_WORKER_KEEP:
                self._forget_models(worker_id)
                self.redis.zrem(keys.WORKERS, worker_id)

    def _requeue_all(self, result: Sweep, worker_id: str, reason: str) -> None:
        for job_id in self.store.inflight(worker_id):
            outcome = self.store.requeue(job_id, reason, worker_id=worker_id)
            job_requeued(job_id, outcome, reason, worker=worker_id)
            state = outcome[0]
            result.requeued += state == "requeued"
            result.failed += state == "failed"

    def _reap_unregistered(self, result: Sweep) -> None:
        """One step of the walk over the in-flight lists: those of workers neither listed nor beating."""
        prefix = keys.inflight_key("")
        self.cursor, found = self.redis.scan(self.cursor, match=keys.inflight_key("*"), count=INFLIGHT_SCAN)
        for raw in found:
            worker_id = raw.decode()[len(prefix) :]
            if self.redis.zscore(keys.WORKERS, worker_id) is not None or self.redis.exists(
                keys.worker_key(worker_id)
            ):
                continue
            log.warning("in-flight jobs of unregistered worker %s: re-queueing", worker_id)
            result.dead_workers += 1
            self._requeue_all(result, worker_id, f"worker {worker_id} is gone")

    def _forget_models(self, worker_id: str) -> None:
        """Drop a long-dead worker from the models' holder sets: once, as it leaves the list (its entries there
        are scored by when its heartbeat expired, so they never counted as a live holder meanwhile; this walk
        over the keyspace is too dear for every pass)."""
        for key in self.redis.scan_iter(keys.model_workers_key("*"), count=500):
            self.redis.zrem(key, worker_id)

    def _expire_waiting(self, result: Sweep) -> None:
        due = self.redis.zrangebyscore(keys.DEADLINES, "-inf", time.time(), start=0, num=500)
        for raw in due:
            expired = self.store.expire_queued(raw.decode())
            result.expired += expired
            if expired:
                job_event("finished", raw.decode(), status="failed", reason="queue deadline passed")

    def run(self, stop: threading.Event) -> None:
        """Sweep every ``interval`` seconds until ``stop`` is set; Redis outages are waited out."""
        logged = False
        while not stop.is_set():
            try:
                self.sweep()
                logged = False
            except TRANSIENT as exc:
                if not logged:
                    log.warning("janitor paused, redis unavailable: %s", exc)
                logged = True
            except Exception:
                log.exception("janitor pass failed")
            stop.wait(self.interval)

    def start(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name="janitor", daemon=True)
        thread.start()
        return thread, stop
