"""The worker's side of push dispatch: a handed job starts at once when a slot is free, waits for the pop loop
when none is, and a job that comes both by message and by a pop starts once; and the heartbeat, which no slow
backend holds up."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from corral.common.jobs import PoppedJob
from corral.common.settings import Settings
from corral.worker.engine import Slots, Worker
from corral.worker.execute import Active

pytestmark = pytest.mark.unit


def worker(slots: int) -> tuple[Worker, list[str]]:
    w = Worker(Settings(redis_url="redis://127.0.0.1:1/0", worker_id="w", worker_slots=slots))
    started: list[str] = []

    def start_job(job: PoppedJob) -> Active:
        started.append(f"{job.id}/{job.start_seq}")
        w.active[job.id] = Active(job)
        return w.active[job.id]

    w.start_job = start_job  # type: ignore[method-assign]
    return w, started


def job(job_id: str, start_seq: int = 1) -> PoppedJob:
    return PoppedJob(id=job_id, attempt=1, model="m:latest", timeout=30, start_seq=start_seq)


def test_a_handed_job_starts_once_whether_by_message_or_by_pop() -> None:
    async def scenario() -> None:
        w, started = worker(slots=2)
        w.on_handed(job("a"))
        assert started == ["a/1"] and w.seen == "a" and w.slots.free == 1
        assert not w.wake.is_set()  # the pop loop parks again once the backend has taken the request:
        w.active["a"].accepted()
        assert w.wake.is_set()
        await w.slots.acquire()  # the next pop returns it too (its message was not seen when the pop ran)
        w.take(job("a"))
        assert started == ["a/1"] and w.slots.free == 1  # the slot went back
        await w.slots.acquire()
        w.take(
            job("a", start_seq=3)
        )  # re-queued (the same attempt: its host lacked the model) and popped again
        assert started == ["a/1", "a/3"] and w.slots.free == 0

    asyncio.run(scenario())


def test_a_job_handed_with_no_free_slot_waits_for_the_pop_loop() -> None:
    async def scenario() -> None:
        w, started = worker(slots=1)
        await w.slots.acquire()
        w.on_handed(job("b"))
        assert started == [] and [j.id for j in w.handed] == ["b"] and w.wake.is_set()

    asyncio.run(scenario())


def test_slots_wait_for_a_release() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        assert slots.try_acquire() and not slots.try_acquire()
        waiter = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        assert not waiter.done()
        slots.release()
        await asyncio.wait_for(waiter, 1)
        assert slots.free == 0

    asyncio.run(scenario())


def test_the_heartbeat_goes_out_while_the_backend_does_not_answer() -> None:
    """A model-list read that never returns (a backend or a pool that hangs) must not stop the heartbeat: the
    janitor would declare a live worker dead and re-queue its jobs."""

    async def scenario() -> int:
        w = Worker(Settings(redis_url="redis://127.0.0.1:1/0", worker_id="w", heartbeat_interval=0.05))
        beats = 0
        two = asyncio.Event()

        async def hang() -> None:
            await asyncio.Event().wait()

        async def beat() -> None:
            nonlocal beats
            beats += 1
            if beats == 2:
                two.set()

        w.refresh_models = hang  # type: ignore[method-assign]
        w.refresh_loaded = hang  # type: ignore[method-assign]
        w.beat = beat  # type: ignore[method-assign]
        task = asyncio.create_task(w.housekeeping())
        try:
            await asyncio.wait_for(two.wait(), 5)
        finally:
            task.cancel()
        return beats

    assert asyncio.run(scenario()) >= 2


def test_a_job_task_cancelled_before_it_ran_drops_the_request_sent_early() -> None:
    """start_job writes the job's request before its task runs; a task cancelled first (a cancel, shutdown) never
    reads the answer, so the request is dropped (its connection closed, its client back in the pool)."""

    class Sent:
        dropped = 0

        def discard(self) -> None:
            self.dropped += 1

    async def scenario() -> None:
        w = Worker(Settings(redis_url="redis://127.0.0.1:1/0", worker_id="w", worker_slots=1))
        sent = Sent()
        w.runner.send_early = lambda job: sent  # type: ignore[assignment,method-assign,return-value]
        active = w.start_job(job("c"))
        assert active.early is sent and active.task is not None
        active.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await active.task
        assert sent.dropped == 1
        await w.ollama.close()

    asyncio.run(scenario())
