"""The jobs running on this worker: its slots, and ``Jobs.start``, the one way a job starts here (one asyncio task
per job: no process is forked per job and no thread per slot, whose GIL hand-offs would cost more CPU per job than
the work itself)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from corral.common.jobs import PoppedJob

from .execute import Active, JobRunner
from .models import Models

log = logging.getLogger("corral.worker")
# Fault injection for the tests: the worker dies (like a SIGKILL) at the named point. Never set in production.
FAULT_POINT = os.environ.get("CORRAL_TEST_FAULT", "")


def nanoseconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def crash_here(point: str) -> None:
    if point == FAULT_POINT:
        os._exit(137)


class Slots:
    """The worker's free job slots: a counting semaphore that can also be taken without waiting (a job handed by
    an enqueue starts from the message handler, not a task)."""

    def __init__(self, total: int) -> None:
        self.free = total
        self._freed = asyncio.Event()

    def try_acquire(self) -> bool:
        if self.free <= 0:
            return False
        self.free -= 1
        return True

    async def acquire(self) -> None:
        while not self.try_acquire():
            self._freed.clear()
            await self._freed.wait()

    def release(self) -> None:
        self.free += 1
        self._freed.set()


class Jobs:
    """The running jobs (by id, for cancels and the heartbeat) and the slots they hold. ``wake`` is set when a job
    ends whose model no other job runs: a pop that found nothing it could take may find something now."""

    def __init__(self, runner: JobRunner, models: Models, slots: int, wake: asyncio.Event) -> None:
        self.runner = runner
        self.models = models
        self.slots = Slots(slots)
        self.wake = wake
        self.active: dict[str, Active] = {}
        self.cold: set[str] = set()  # running jobs that found their model cold here: their load is measured
        runner.on_final = self.measure

    def start(self, job: PoppedJob) -> Active | None:
        """Start ``job`` in the slot the caller holds, unless this start of it runs already (the slot then goes
        back and None is returned).

        Every job starts here, handed or popped. A job an enqueue hands to a parked worker comes twice when its
        message is still on its way as the worker's next pop runs: by the message, and by that pop's answer (the
        hand is kept for the next pop in case the message is lost). Both pass here, and the second is a no-op
        while the first runs; a job re-queued and popped again has a new start sequence and starts. A start seen
        before that no longer runs starts again: after Redis lost its last writes (a power loss, a failover), the
        pop that took the job is forgotten, its run here was fenced off, and a pop takes it again with the same
        start sequence (ignored, the job would stay started and not run until the in-flight check re-queued it,
        an attempt spent). A duplicate whose first start ended meanwhile is fenced off at its first event."""
        if self.confirm(job):
            self.slots.release()
            return None
        crash_here("after_pop")
        cold = job.model not in self.models.warm()
        if cold:
            self.cold.add(job.id)
        self.models.job_started(job.model)
        active = self.launch(job)
        if cold:  # once loaded, what the engine holds has changed (it may have evicted a model): read it now
            active.on_loaded = self.models.loaded_changed.set
        return active

    def confirm(self, job: PoppedJob) -> bool:
        """Whether this start of ``job`` runs here already; it is then confirmed (a job an API sent ahead over the
        direct link runs before its hand comes: this is the hand)."""
        running = self.active.get(job.id)
        if running is None or running.job.start_seq != job.start_seq:
            return False
        running.job.confirmed = True
        return True

    def launch(self, job: PoppedJob) -> Active:
        """The job's task, with its request written to the backend first (a turn of the loop and the task's set-up
        before it would run). Only ``start`` calls it."""
        active = Active(job)
        self.active[job.id] = active
        active.early = early = self.runner.send_early(job)
        active.task = asyncio.create_task(self._run(active), name=f"job-{job.id}")
        # the started line, after the task's first step: its request is on its way to the engine by then
        asyncio.get_running_loop().call_soon(self.runner.log_started, job)
        if early is not None:  # a task cancelled before it ran never reads the answer: drop it
            active.task.add_done_callback(lambda _task: early.discard())
        return active

    async def _run(self, active: Active) -> None:
        try:
            outcome = await self.runner.run(active)
            if outcome.host_unavailable:
                self.models.healthy = False
            if outcome.model_missing or outcome.host_unavailable:
                await self.models.refresh()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s crashed the runner; it stays in flight for recovery", active.job.id)
        finally:
            if self.active.get(active.job.id) is active:  # (not another attempt of the job, started since)
                del self.active[active.job.id]
            self.cold.discard(active.job.id)
            last_of_model = self.models.job_ended(active.job.model)
            self.slots.release()
            active.accepted()  # (a handed job that ended before its backend answered)
            if self.models.capacity.limit and last_of_model:
                self.wake.set()  # a model drained: a pop that found nothing it could take may find something now

    def measure(self, job: PoppedJob, final: dict[str, Any]) -> None:
        """The engine's durations (ns) of a job (the scheduling delays follow them: common/delays.py): its time
        on the job, and for a job that found its model cold, its ``load_duration``: this host's load time."""
        load, total = nanoseconds(final.get("load_duration")), nanoseconds(final.get("total_duration"))
        if job.id in self.cold and load is not None:
            self.models.load_times.observe(job.model, load / 1e9)
        if total is not None:
            self.models.load_times.observe_job(job.model, (total - (load or 0)) / 1e9)

    def cancel(self, job_id: str) -> None:
        """Cancel a running job (a job not running here is left alone)."""
        active = self.active.get(job_id)
        if active is not None:
            log.info("cancelling job %s", job_id)
            active.request_cancel()

    def running(self) -> list[str]:
        return list(self.active)

    async def finish(self) -> None:
        """Wait for every running job to end (the worker drains)."""
        running = [a.task for a in self.active.values() if a.task is not None]
        await asyncio.gather(*running, return_exceptions=True)
