"""The worker process (asyncio): its parts put together, and its life from start to drain and stop.

One event loop runs everything: the dispatcher's pop loop (``dispatch``), one task per running job (``jobs``), the
pub/sub listener for wake-ups and control messages (``control``) and the housekeeping that reads the engine's models
and sends the heartbeat (``models``, ``heartbeat``). The janitor runs in a thread with its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from corral.common import link, registry
from corral.common.connections import TRANSIENT, async_redis, sync_redis
from corral.common.delays import Delays
from corral.common.fastredis import FastRedis, fast_redis
from corral.common.janitor import Janitor
from corral.common.jobs import Limits
from corral.common.settings import Settings, redacted_url
from corral.common.store import AsyncJobStore, JobStore
from corral.common.tasks import cancel_and_wait

from .backends import make_backend
from .control import Control
from .dispatch import Dispatcher
from .execute import JobRunner
from .heartbeat import Heartbeat
from .jobs import Jobs
from .link import Links
from .modelops import ModelTasks
from .models import Models
from .reconcile import Reconcile

log = logging.getLogger("corral.worker")


@dataclass(frozen=True)
class Shared:
    """What the workers of one fleet process share (``worker.fleet``): its Redis clients. A worker given them
    neither closes them nor runs a janitor (the fleet runs one), and its heartbeat leaves out this machine's load
    (its engine is elsewhere)."""

    redis: aioredis.Redis
    fast: FastRedis | None


class Worker:
    """One worker: ``run`` serves until ``drain`` (SIGTERM, SIGINT or a drain message) and the running jobs end."""

    def __init__(self, settings: Settings, shared: Shared | None = None) -> None:
        self.settings = settings
        self.id = settings.worker_id
        self.shared = shared
        self.redis = (
            shared.redis if shared else async_redis(settings.redis_url, name=f"corral-worker:{self.id}")
        )
        self.fast = shared.fast if shared else fast_redis(settings.redis_url)
        self.store = AsyncJobStore(self.redis, Limits.from_settings(settings), fast=self.fast)
        self.backend = make_backend(settings)
        self.draining = asyncio.Event()
        wake = asyncio.Event()
        self.models = Models(self.backend, self.redis, self.id, settings.engine_display_url,
                             settings.max_loaded_models, wake)  # fmt: skip
        self.links = Links(self.redis, link.enabled(settings.direct_link, settings.redis_url))
        runner = JobRunner(self.store, self.backend, self.id, self.models.local_names, self.links)
        self.jobs = Jobs(runner, self.models, settings.worker_slots, wake)
        self.dispatcher = Dispatcher(self.store, self.id, self.models, self.jobs, settings.push_dispatch, wake,
                                     self.draining, Delays.from_settings(settings))  # fmt: skip
        self.heartbeat = Heartbeat(self.redis, settings, self.models, self.jobs.running,
                                   self.dispatcher.keep_claimed, self.draining, host_load=shared is None)  # fmt: skip
        self.reconcile = Reconcile(
            self.store, self.id, lambda: set(self.jobs.active) | self.dispatcher.holding()
        )
        self.model_tasks = ModelTasks(self.redis, settings, self.backend, self.models, self.heartbeat.beat)
        self.control = Control(settings.redis_url, self.redis, self.id, self.dispatcher, self.jobs, self.drain,
                               self.model_tasks.on_control)  # fmt: skip
        # jobs sent ahead over the direct link; where this worker is parked, said on it
        if self.links.enabled:
            self.links.on_line = self.control.on_link_line
            self.links.on_job = self.dispatcher.on_early
            self.dispatcher.announce = self.links.announce

    async def recover_own_jobs(self) -> None:
        """Jobs a previous life of this worker id left in flight go back to the front of their queues."""
        for job_id in await self.store.inflight(self.id):
            state, attempt = await self.store.requeue(
                job_id, f"worker {self.id} restarted", worker_id=self.id
            )
            log.warning(
                "job %s left running by a previous %s: %s (attempt %d)", job_id, self.id, state, attempt
            )

    async def run(self) -> None:
        """Serve until drained: recover, start the helpers, take jobs, finish them, deregister and close."""
        await self.wait_for_redis()
        if self.draining.is_set():
            await self.close_redis()
            return
        await self.recover_own_jobs()
        await self.models.refresh()
        await self.heartbeat.beat()
        sync_client, janitor_stop = self.start_janitor()
        helpers = [asyncio.create_task(self.heartbeat.run()), asyncio.create_task(self.control.listen()),
                   asyncio.create_task(self.reconcile.run(self.settings.heartbeat_interval)),
                   asyncio.create_task(self.model_tasks.run())]  # fmt: skip
        log.info("worker %s up: %s %s, %d slots", self.id, self.backend.kind, self.settings.engine_display_url,
                 self.settings.worker_slots)  # fmt: skip
        try:
            await self.dispatcher.run()
            log.info("worker %s draining: finishing %d running job(s)", self.id, len(self.jobs.active))
            await self.jobs.finish()
        finally:
            janitor_stop.set()
            await cancel_and_wait(helpers)
            await self.close()
            if sync_client is not None:
                sync_client.close()
            log.info("worker %s stopped", self.id)

    def start_janitor(self) -> tuple[redis.Redis | None, threading.Event]:
        """The janitor's thread and its connection (a fleet's workers have none: their fleet runs one)."""
        if self.shared is not None:
            return None, threading.Event()
        sync_client = sync_redis(self.settings.redis_url, name=f"corral-janitor:{self.id}")
        janitor = Janitor(JobStore(sync_client, self.store.limits), self.settings.heartbeat_ttl,
                          self.settings.janitor_interval)  # fmt: skip
        _thread, janitor_stop = janitor.start()
        return sync_client, janitor_stop

    async def close(self) -> None:
        """Put back what is left in flight and not running, deregister (when Redis answers; a list not emptied
        keeps the worker listed, for the janitor) and close the connections."""
        with contextlib.suppress(*TRANSIENT):
            if await self.reconcile.release(set(self.jobs.active)):
                await registry.deregister_async(self.redis, self.id, self.models.names)
        await self.backend.close()
        await self.links.aclose()
        await self.model_tasks.close()
        await self.close_redis()

    async def close_redis(self) -> None:
        if self.shared is not None:
            return
        await self.redis.aclose()
        if self.fast is not None:
            await self.fast.aclose()

    async def wait_for_redis(self) -> None:
        """Ping until Redis answers (a SIGTERM meanwhile ends the wait: there is nothing to drain yet)."""
        delay, attempt = 0.1, 0
        while not self.draining.is_set():
            attempt += 1
            try:
                await self.redis.ping()
                return
            except TRANSIENT as exc:
                log.warning("redis at %s not reachable (attempt %d): %s", redacted_url(self.settings.redis_url),
                            attempt, exc)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def drain(self) -> None:
        """Stop taking jobs, finish the running ones, deregister. A second signal exits at once."""
        if self.draining.is_set():
            log.warning("second signal: exiting now; running jobs will be re-queued")
            os._exit(1)
        self.stop_taking()

    def stop_taking(self) -> None:
        """Drain without the second-signal exit: take no new job, finish the running ones, then stop."""
        self.draining.set()
        self.dispatcher.wake.set()


async def _main(settings: Settings) -> None:
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.drain)
    await worker.run()


def run_worker(settings: Settings) -> None:
    """Run a worker until it is drained. uvloop (installed with uvicorn[standard]) when there: its transports and
    scheduling cost a fraction of the default loop's CPU per job."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(settings))
    else:
        uvloop.run(_main(settings))


__all__ = ["Shared", "Worker", "run_worker"]
