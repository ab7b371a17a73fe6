"""What this worker's engine has: the models it can serve (``/api/tags``), those it holds in memory (``/api/ps``),
how many it can hold at once, and which it may claim as warm to the pop (delay scheduling)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

import redis.asyncio as aioredis

from corral.common import keys
from corral.common.delays import LoadTimes
from corral.common.names import normalise_model
from corral.common.schedule import Capacity

from .backends import ENGINE_ERRORS, Backend

log = logging.getLogger("corral.worker")


def model_names(entries: list[dict[str, Any]]) -> list[str]:
    return [str(m.get("name") or m.get("model")) for m in entries]


class Models:
    """The engine's models as this worker knows them. ``wake`` is set whenever what it may take changes (the pop
    loop waiting for a job then pops again)."""

    def __init__(
        self,
        backend: Backend,
        redis: aioredis.Redis,
        worker_id: str,
        where: str,
        capacity: int,
        wake: asyncio.Event,
    ) -> None:
        self.backend = backend
        self.redis = redis
        self.worker_id = worker_id
        self.where = where  # the engine's URL with its secrets hidden, for the log
        self.wake = wake
        self.names: list[str] = []  # the queue names of the models it serves
        self.local_names: dict[str, str] = {}  # queue name -> the engine's own name for the model
        self.loaded: list[str] = []
        self.tags: list[dict[str, Any]] = []  # the engine's answers, as the heartbeat shows them
        self.ps: list[dict[str, Any]] = []
        self.healthy = False
        self.down = False  # the engine did not answer the last model-list read (logged once)
        self.dropped: set[str] = set()  # models gone since the last heartbeat (it withdraws them)
        self.running: Counter[str] = Counter()  # model -> jobs of it running here
        self.recent: dict[str, float] = {}  # model -> when this worker last started one of its jobs
        self.claimed: set[str] = set()  # models this worker has told the pop it has loaded
        self.withheld: set[str] = set()  # models being deleted: no longer served (worker/modelops.py)
        # one read of the lists at a time: a read begun before a pull ended never lands after one begun after it
        self.reading = asyncio.Lock()
        self.capacity = Capacity(capacity)
        # set when a job's model has just been loaded: the model lists' reader reads /api/ps at once, not at its
        # next turn, so an eviction withdraws its warm claim and teaches the capacity before more jobs are placed
        self.loaded_changed = asyncio.Event()
        self.load_times = LoadTimes()  # measured by Jobs.measure_load

    async def refresh(self) -> None:
        """Read /api/tags and /api/ps; on failure keep the last list and mark this host unhealthy."""
        async with self.reading:
            await self._refresh()

    async def _refresh(self) -> None:
        try:
            tags = await self.backend.list_models()
            asked = time.monotonic()
            ps = await self.backend.loaded_models()
        except ENGINE_ERRORS as exc:
            if not self.down:
                log.warning(
                    "%s at %s unavailable (%s); not taking jobs", self.backend.kind, self.where, exc.message
                )
            self.down = True
            self.healthy = False
            self.wake.set()  # the pop loop leaves its park
            return
        mapping = {}
        for name in model_names(tags):
            try:
                mapping[normalise_model(name)] = name
            except Exception:  # a name Corral cannot queue is skipped, not fatal
                log.warning("skipping model with unusable name %r", name)
        names = sorted(set(mapping) - self.withheld)
        if names != self.names:
            log.info("models: %s", ", ".join(names) or "(none)")
        if self.down:
            log.info("%s at %s is up", self.backend.kind, self.where)
        self.down = False
        self.dropped |= set(self.names) - set(names)
        self.local_names.clear()
        self.local_names.update(mapping)
        self.names = names
        self.tags, self.ps = tags, ps
        self.set_loaded(model_names(ps), asked)
        self.healthy = True
        self.wake.set()

    def set_loaded(self, names: list[str], asked: float) -> None:
        """What /api/ps said; jobs started since the question was asked still count as warm."""
        self.loaded = sorted(normalise_model(n) for n in names)
        self.recent = {m: t for m, t in self.recent.items() if t >= asked}
        if self.capacity.observe(set(self.loaded), set(self.running)):
            log.info("the backend evicted a model to load another: it holds %d at once (learned; set "
                     "CORRAL_MAX_LOADED_MODELS to say so up front)", self.capacity.limit)  # fmt: skip

    async def refresh_loaded(self, keep: set[str]) -> None:
        """Read /api/ps alone (between the slower /api/tags reads) and withdraw the warm claims on models no longer
        warm here, but for those in ``keep`` (a model this worker is switching to)."""
        with contextlib.suppress(*ENGINE_ERRORS):
            asked = time.monotonic()
            ps = await self.backend.loaded_models()
            self.set_loaded(model_names(ps), asked)
            self.ps = ps
        stale = self.claimed - self.warm() - keep
        if stale:
            pipe = self.redis.pipeline(transaction=False)
            for model in stale:
                pipe.zrem(keys.warm_key(model), self.worker_id)
            await pipe.execute()
            self.claimed -= stale

    def warm(self) -> set[str]:
        """Models loaded in the engine, as far as this worker knows: /api/ps, plus its running and recent jobs."""
        return set(self.loaded) | set(self.recent) | set(self.running)

    def job_started(self, model: str) -> None:
        """A job of ``model`` started here: the pop or the hand that gave it claimed the model for this worker."""
        self.running[model] += 1
        self.recent[model] = time.monotonic()
        self.claimed.add(model)

    def job_ended(self, model: str) -> bool:
        """Count a job of ``model`` out; True when that was the last one running."""
        self.running[model] -= 1
        if self.running[model] > 0:
            return False
        del self.running[model]
        return True
