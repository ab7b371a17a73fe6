"""The worker's in-flight list held against what it runs: a job listed in ``corral:inflight:<worker>`` that this
worker does not run (the reply of the pop that took it was lost) goes back to the front of its queue with
attempt + 1, through the same script as a dead worker's jobs (fenced, a ``retry`` event, ``CORRAL_MAX_RETRIES``).
A pop's reply may still be on its way when the list is read, so a job is re-queued only when two checks in a row
found it listed and not run here. A job an enqueue handed this worker while it was parked is listed at once; if
its message is lost, the park keeps it for the worker's next pop (within ``IDLE_POLL``, or the park's end), so it
is not an orphan while the park holds it: the checks may come faster than that pop, and re-queueing it would
spend an attempt on a job the worker is about to start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from corral.common import keys
from corral.common.connections import TRANSIENT
from corral.common.store import AsyncJobStore

log = logging.getLogger("corral.worker")


class Reconcile:
    """Checks one worker's in-flight list; ``known`` gives the ids of the jobs it runs or holds to start."""

    def __init__(self, store: AsyncJobStore, worker_id: str, known: Callable[[], set[str]]) -> None:
        self.store = store
        self.worker_id = worker_id
        self.known = known
        self.suspects: set[str] = set()  # listed and not run at the last check

    async def requeue(self, job_id: str, reason: str) -> None:
        state, attempt = await self.store.requeue(job_id, reason, worker_id=self.worker_id)
        log.warning("job %s was in flight on %s but not running: %s (attempt %d)", job_id, self.worker_id, state,
                    attempt)  # fmt: skip

    async def listing(self) -> tuple[list[str], str]:
        """The in-flight list and the job the park keeps for the next pop ('' when none), read at one moment."""
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(keys.inflight_key(self.worker_id), 0, -1)
            pipe.hget(keys.park_key(self.worker_id), "id")
            listed, hand = await pipe.execute()
        return [job_id.decode() for job_id in listed], hand.decode() if hand else ""

    async def check(self) -> list[str]:
        """One check: the jobs re-queued (listed and not run here at this check and the one before)."""
        listed, hand = await self.listing()
        known = self.known() | {hand}
        orphans = {job_id for job_id in listed if job_id not in known}
        due = sorted(orphans & self.suspects)
        self.suspects = orphans - set(due)
        for job_id in due:
            if job_id not in self.known():  # (started while an earlier requeue ran)
                await self.requeue(job_id, f"worker {self.worker_id} was not running it")
        return due

    async def release(self, running: set[str]) -> bool:
        """At a stop: every listed job not ``running`` here (handed jobs that waited for a slot included: they will
        not start now) goes back to its queue. True when the list is empty after it (nothing left for the janitor)."""
        for job_id in await self.store.inflight(self.worker_id):
            if job_id not in running:
                await self.requeue(job_id, f"worker {self.worker_id} stopped")
        return not await self.store.inflight(self.worker_id)

    async def run(self, interval: float) -> None:
        """Check every ``interval`` seconds until cancelled; Redis outages and refused commands are waited out (a
        loop that ended would leave this worker's orphans started for as long as it lives)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except TRANSIENT as exc:
                self.suspects.clear()  # the next check starts afresh
                log.debug("in-flight check skipped, redis unavailable: %s", exc)
            except Exception as exc:  # a command refused (OOM, MISCONF...): this loop must never end
                self.suspects.clear()
                log.warning("in-flight check failed (%s: %s); trying again", type(exc).__name__, exc)
