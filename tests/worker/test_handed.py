"""The worker's side of push dispatch: a handed job starts at once when a slot is free, waits for the pop loop
when none is, and a job that comes both by message and by a pop starts once (``Jobs.start``, the one way a job
starts); and the heartbeat, which no slow backend holds up."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from corral.common.jobs import PoppedJob
from corral.common.settings import Settings
from corral.worker.execute import Active
from corral.worker.jobs import Slots
from corral.worker.lifecycle import Worker

pytestmark = pytest.mark.unit


def worker(slots: int) -> tuple[Worker, list[str]]:
    w = Worker(Settings(redis_url="redis://127.0.0.1:1/0", worker_id="w", worker_slots=slots))
    started: list[str] = []

    def launch(job: PoppedJob) -> Active:
        started.append(f"{job.id}/{job.start_seq}")
        w.jobs.active[job.id] = Active(job)
        return w.jobs.active[job.id]

    w.jobs.launch = launch  # type: ignore[method-assign]
    return w, started


def job(job_id: str, start_seq: int = 1) -> PoppedJob:
    return PoppedJob(id=job_id, attempt=1, model="m:latest", timeout=30, start_seq=start_seq)


def test_a_handed_job_starts_once_whether_by_message_or_by_pop() -> None:
    async def scenario() -> None:
        w, started = worker(slots=2)
        d, slots = w.dispatcher, w.jobs.slots
        d.on_handed(job("a"))
        assert started == ["a/1"] and d.seen == "a" and slots.free == 1
        assert not d.wake.is_set()  # the pop loop parks again once the backend has taken the request:
        w.jobs.active["a"].accepted()
        assert d.wake.is_set()
        await slots.acquire()  # the next pop returns it too (its message was not seen when the pop ran)
        assert d.start(job("a")) is None
        assert started == ["a/1"] and slots.free == 1  # the slot went back
        await slots.acquire()  # re-queued (the same attempt: its host lacked the model) and popped again:
        d.start(job("a", start_seq=3))
        assert started == ["a/1", "a/3"] and slots.free == 0

    asyncio.run(scenario())


def test_a_popped_job_then_its_message_starts_once() -> None:
    """The other order: the pop's answer first, the hand's message after it."""

    async def scenario() -> None:
        w, started = worker(slots=2)
        d = w.dispatcher
        await d.slots.acquire()
        d.start(job("e"))
        d.on_handed(job("e"))
        assert started == ["e/1"] and d.slots.free == 1 and d.wake.is_set()

    asyncio.run(scenario())


def test_a_job_handed_with_no_free_slot_waits_for_the_pop_loop() -> None:
    async def scenario() -> None:
        w, started = worker(slots=1)
        d = w.dispatcher
        await d.slots.acquire()
        d.on_handed(job("b"))
        assert started == [] and [j.id for j in d.handed] == ["b"] and d.wake.is_set()

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

        async def hang(*_args: object) -> None:
            await asyncio.Event().wait()

        async def beat() -> None:
            nonlocal beats
            beats += 1
            if beats == 2:
                two.set()

        w.models.refresh = hang  # type: ignore[method-assign]
        w.models.refresh_loaded = hang  # type: ignore[method-assign,assignment]
        w.heartbeat.beat = beat  # type: ignore[method-assign]
        task = asyncio.create_task(w.heartbeat.run())
        try:
            await asyncio.wait_for(two.wait(), 5)
        finally:
            task.cancel()
        return beats

    assert asyncio.run(scenario()) >= 2


def test_a_job_task_cancelled_before_it_ran_drops_the_request_sent_early() -> None:
    """A job's request is written before its task runs; a task cancelled first (a cancel, shutdown) never
    reads the answer, so the request is dropped (its connection closed, its client back in the pool)."""

    class Sent:
        dropped = 0

        def discard(self) -> None:
            self.dropped += 1

    async def scenario() -> None:
        w = Worker(Settings(redis_url="redis://127.0.0.1:1/0", worker_id="w", worker_slots=1))
        sent = Sent()
        w.jobs.runner.send_early = lambda job: sent  # type: ignore[assignment,method-assign,return-value]
        active = w.jobs.launch(job("c"))
        assert active.early is sent and active.task is not None
        active.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await active.task
        assert sent.dropped == 1
        await w.backend.close()

    asyncio.run(scenario())


def test_a_start_seen_before_that_no_longer_runs_starts_again() -> None:
    """Redis lost the pop that took the job (its last second, a power loss or a failover): the run here was
    fenced off and ended, and a pop takes the job again with the same start sequence. Before, that start was
    ignored: the job stayed started with nothing running it until the in-flight check re-queued it (an attempt
    spent, ~2 check intervals)."""

    async def scenario() -> None:
        w, started = worker(slots=2)
        await w.jobs.slots.acquire()
        w.dispatcher.start(job("r"))
        del w.jobs.active["r"]  # that run ended (fenced off: Redis had forgotten the pop)
        w.jobs.slots.release()
        await w.jobs.slots.acquire()
        assert w.dispatcher.start(job("r")) is not None
        assert started == ["r/1", "r/1"] and w.reconcile.known() == {"r"}

    asyncio.run(scenario())
