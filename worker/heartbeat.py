"""The worker's housekeeping: the engine's model lists read on a timer, and the heartbeat that tells the fleet what
this worker serves, runs and holds (a worker whose heartbeat expires is declared dead by the janitor)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from corral.common import registry
from corral.common.connections import TRANSIENT
from corral.common.settings import Settings
from corral.common.tasks import cancel_and_wait

from .load import cpu_ram, gpu_stats
from .models import Models

log = logging.getLogger("corral.worker")
CHANGE_GATHERING = 0.05  # seconds between a model's load and the /api/ps read it causes


def worker_info(settings: Settings) -> registry.WorkerInfo:
    """What the heartbeat says of this worker that does not change while it runs."""
    return registry.WorkerInfo(
        id=settings.worker_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        ollama_url=settings.engine_display_url,
        slots_total=settings.worker_slots,
        backend=settings.engine_kind,
        max_loaded_models=settings.max_loaded_models,
        weight=settings.worker_weight,
        started_at=time.time(),
    )


class Heartbeat:
    """Beats for one worker: ``running`` gives the ids of its running jobs, ``keep_claimed`` the models whose warm
    claims stay while not warm (a switch's target), ``draining`` whether it is draining."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        models: Models,
        running: Callable[[], list[str]],
        keep_claimed: Callable[[], set[str]],
        draining: asyncio.Event,
        host_load: bool = True,
    ) -> None:
        self.redis = redis
        self.host_load = host_load  # this machine's CPU, RAM and GPUs are the engine's (false in a fleet)
        self.settings = settings
        self.models = models
        self.running = running
        self.keep_claimed = keep_claimed
        self.draining = draining
        self.info = worker_info(settings)

    async def beat(self) -> None:
        info, models = self.info, self.models
        info.models = list(models.names)
        info.loaded = list(models.loaded)
        info.tags, info.ps = models.tags, models.ps
        info.max_loaded_models = models.capacity.limit
        info.load_seconds = models.load_times.report()
        info.running = self.running()
        info.state = "draining" if self.draining.is_set() else "active"
        info.healthy = models.healthy
        if self.host_load:
            info.cpu_percent, info.ram_used, info.ram_total = cpu_ram()
        dropped = set(models.dropped)
        # the models of its running jobs stay claimed: pops renew claims, and a worker whose slots are all busy
        # does not pop; with jobs longer than a claim lasts, every other host would take them for free and load them
        claims = set(models.running)
        pipe = self.redis.pipeline(transaction=True)
        registry.heartbeat_commands(pipe, info, self.settings.heartbeat_ttl, dropped, claims)
        await pipe.execute()
        models.dropped -= dropped  # (kept for the next beat if this one did not reach Redis)

    async def refresh(self, last_refresh: float) -> float:
        """The model lists: both every ``model_refresh_interval``, else /api/ps alone; when the lists were last
        read in full."""
        if time.monotonic() - last_refresh >= self.settings.model_refresh_interval:
            await self.models.refresh()
            if self.host_load:
                self.info.gpu = await asyncio.to_thread(gpu_stats)
            return time.monotonic()
        if self.models.healthy:
            await self.models.refresh_loaded(self.keep_claimed())
        return last_refresh

    async def run(self) -> None:
        """Beat every ``heartbeat_interval`` until cancelled, on a fixed cadence. The model lists are read by a task
        of their own (``refresh_forever``): a beat carries the lists last read, so a slow engine delays no beat."""
        refresher = asyncio.create_task(self.refresh_forever())
        logged = False
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.beat()
                    if logged:
                        log.info("redis is back")
                    logged = False
                except TRANSIENT as exc:
                    if not logged:
                        log.warning("heartbeat failed, redis unavailable: %s", exc)
                    logged = True
                await asyncio.sleep(max(0.0, self.settings.heartbeat_interval - (time.monotonic() - started)))
        finally:
            await cancel_and_wait([refresher])

    async def refresh_forever(self) -> None:
        """Read the model lists every ``heartbeat_interval`` (a read that takes longer is given up), and /api/ps at
        once when a job's model has just been loaded (``Models.loaded_changed``), until cancelled."""
        interval = self.settings.heartbeat_interval
        last_refresh = 0.0
        changed = self.models.loaded_changed
        while True:
            started = time.monotonic()
            changed.clear()
            try:
                async with asyncio.timeout(interval):
                    last_refresh = await self.refresh(last_refresh)
            except TimeoutError:
                log.warning(
                    "reading the backend's model lists took over %gs; heartbeat sent without them", interval
                )
            except TRANSIENT as exc:
                log.debug("model lists not refreshed, redis unavailable: %s", exc)
            pause = max(interval / 4, interval - (time.monotonic() - started))
            await asyncio.sleep(min(pause, CHANGE_GATHERING))  # loads that end together cost one read
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, pause - CHANGE_GATHERING)):
                    await changed.wait()
