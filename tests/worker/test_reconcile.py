"""The in-flight check's grace: a job is re-queued only when two checks in a row found it listed and not run here
(a pop's reply may be on its way at one check); what runs or waits for a slot is not. At a stop, all but what
runs goes back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ResponseError

from corral.worker.reconcile import Reconcile

from .test_handed import job, worker

pytestmark = pytest.mark.unit


class FakeStore:
    def __init__(self) -> None:
        self.listed: list[str] = []
        self.requeued: list[str] = []

    async def inflight(self, worker_id: str) -> list[str]:
        return list(self.listed)

    async def requeue(self, job_id: str, reason: str, **fence: Any) -> tuple[str, int]:
        assert fence == {"worker_id": "w1"}
        self.requeued.append(job_id)
        self.listed.remove(job_id)
        return "requeued", 2


class Checks(Reconcile):
    """The check's rule on a ``FakeStore`` (its Redis read is in test_reconcile_park.py): no hand kept by a park."""

    async def listing(self) -> tuple[list[str], str]:
        return await self.store.inflight(self.worker_id), ""


def test_only_a_job_listed_and_not_run_at_two_checks_in_a_row_is_requeued() -> None:
    async def scenario() -> None:
        store, known = FakeStore(), {"running", "waiting-for-a-slot"}
        check = Checks(store, "w1", lambda: known)  # type: ignore[arg-type]
        store.listed = ["running", "waiting-for-a-slot", "in-transit", "lost"]
        assert await check.check() == []  # first sight: a grace
        known.add("in-transit")  # its pop's reply arrived: it runs now
        assert await check.check() == ["lost"]
        assert store.requeued == ["lost"]
        store.listed.append("late")
        assert await check.check() == []
        store.listed.remove("late")  # finished meanwhile: never requeued
        assert await check.check() == [] and store.requeued == ["lost"]
        store.listed.append("left")
        assert not await check.release({"running", "in-transit"})  # (what runs stays listed)
        # a handed job still waiting for a slot will not start now: it goes back too
        assert store.requeued == ["lost", "waiting-for-a-slot", "left"]
        assert store.listed == ["running", "in-transit"]

    asyncio.run(scenario())


def test_a_handed_job_waiting_for_a_slot_counts_as_held() -> None:
    async def scenario() -> None:
        w, started = worker(slots=1)
        w.dispatcher.on_handed(job("a"))
        w.dispatcher.on_handed(job("b"))  # no slot free: it waits in the pop loop's hands
        assert started == ["a/1"] and w.dispatcher.holding() == {"b"}
        assert w.reconcile.known() == {"a", "b"}

    asyncio.run(scenario())


def test_a_stale_attempt_ending_leaves_the_next_attempt_known() -> None:
    """Two attempts of one job on this worker (the janitor took it for dead and it popped the job again): before,
    the first one's end dropped the second from the running jobs, and the in-flight check re-queued it as it ran."""

    class Runner:
        def __init__(self) -> None:
            self.ends: dict[int, asyncio.Event] = {}

        def send_early(self, job: Any) -> None:
            return None

        def log_started(self, job: Any) -> None:
            return None

        async def run(self, active: Any) -> Any:
            await self.ends.setdefault(active.job.start_seq, asyncio.Event()).wait()
            return type("Outcome", (), {"host_unavailable": False, "model_missing": False})()

    async def scenario() -> None:
        w, _ = worker(slots=2)
        runner = Runner()
        w.jobs.runner = runner  # type: ignore[assignment]
        w.jobs.launch = type(w.jobs).launch.__get__(w.jobs)  # type: ignore[method-assign]
        for seq in (1, 5):
            await w.jobs.slots.acquire()
            w.jobs.start(job("a", start_seq=seq))
        await asyncio.sleep(0)
        runner.ends[1].set()  # the stale attempt ends
        for _ in range(5):
            await asyncio.sleep(0)
        assert w.reconcile.known() == {"a"} and w.jobs.active["a"].job.start_seq == 5
        runner.ends[5].set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert w.reconcile.known() == set()

    asyncio.run(scenario())


def test_a_refused_command_does_not_end_the_checks() -> None:
    """Before: any error but a lost connection (an OOM or MISCONF refusal, a replica's READONLY) ended the check
    loop for the worker's life, and a job whose pop reply was lost later stayed started forever."""

    class Refusing(FakeStore):
        def __init__(self) -> None:
            super().__init__()
            self.refusals = 1
            self.requeue_seen = asyncio.Event()

        async def inflight(self, worker_id: str) -> list[str]:
            if self.refusals:
                self.refusals -= 1
                raise ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
            return await super().inflight(worker_id)

        async def requeue(self, job_id: str, reason: str, **fence: Any) -> tuple[str, int]:
            self.requeue_seen.set()
            return await super().requeue(job_id, reason, **fence)

    async def scenario() -> None:
        store = Refusing()
        store.listed = ["lost"]
        task = asyncio.create_task(Checks(store, "w1", set).run(0.0))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(store.requeue_seen.wait(), 5)
        finally:
            task.cancel()
        assert store.requeued == ["lost"] and store.refusals == 0

    asyncio.run(scenario())
