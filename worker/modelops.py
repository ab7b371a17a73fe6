"""The worker's model tasks: pulls, deletes, copies, creates and preloads that the API placed on this host
(``common.modelops``), run one at a time from this worker's task list, with progress on the operation's stream.

A task leaves the list only when it has ended, so a worker killed mid-pull runs it again when it comes back (Ollama
keeps the partial download and resumes). When a task changes what the engine has, the model lists are read and the
heartbeat sent at once: a pulled model's queued jobs start without waiting for the next model refresh. A delete
first stops this worker taking the model's jobs and lets the running ones finish.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from corral.common import keys, modelops
from corral.common.connections import TRANSIENT
from corral.common.errors import CorralError
from corral.common.settings import Settings

from .backends import Backend
from .backends.admin import OllamaAdmin, model_admin
from .dispatch import PARK_TTL
from .models import Models

log = logging.getLogger("corral.worker")
PROGRESS_EVERY = 0.25  # seconds between two progress events of one host (a status change goes out at once)
IDLE_POLL = 1.0  # seconds between two looks at the task list when no control message came
REPLACE_EVERY = 2.0  # seconds between two looks for dead hosts' shares


class NotSupported(CorralError):
    code = "not_supported"


class Progress:
    """Ollama's pull lines → Corral's progress events: bytes, percent, speed (bytes/s over the last seconds), ETA."""

    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=32)
        self.sent_at = 0.0
        self.status = ""

    def event(self, line: dict[str, Any], worker: str, now: float) -> dict[str, Any] | None:
        status = str(line.get("status") or "")
        total, completed = int(line.get("total") or 0), int(line.get("completed") or 0)
        if total:
            if self.samples and completed < self.samples[-1][1]:
                self.samples.clear()  # another layer
            self.samples.append((now, completed))
        if status == self.status and now - self.sent_at < PROGRESS_EVERY:
            return None
        self.status, self.sent_at = status, now
        event: dict[str, Any] = {"type": "progress", "worker": worker, "status": status}
        if total:
            t0, c0 = self.samples[0]
            speed = (completed - c0) / (now - t0) if now - t0 > 0.05 else 0.0
            event.update(digest=line.get("digest"), total=total, completed=completed,
                         percent=round(100.0 * completed / total, 1), speed=round(speed),
                         eta=round((total - completed) / speed, 1) if speed > 0 else None)  # fmt: skip
        return event


class ModelTasks:
    """Runs this worker's model tasks. ``on_control`` takes the control messages that concern them."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, backend: Backend, models: Models,
                 beat: Callable[[], Awaitable[None]]) -> None:  # fmt: skip
        self.redis = redis
        self.settings = settings
        self.worker_id = settings.worker_id
        self.admin: OllamaAdmin | None = model_admin(backend)
        self.kind = backend.kind
        self.models = models
        self.beat = beat
        self.wake = asyncio.Event()
        self.current: tuple[str, asyncio.Task[None]] | None = None
        self.cancel_asked = ""  # the operation whose cancel stopped the running task
        self.last_replace = 0.0

    def on_control(self, command: dict[str, Any]) -> bool:
        if "modelop" in command:
            self.wake.set()
            return True
        if "modelop_cancel" in command:
            if self.current is not None and self.current[0] == command["modelop_cancel"]:
                self.cancel_asked = self.current[0]
                self.current[1].cancel()
            return True
        return False

    async def run(self) -> None:
        """Take tasks until cancelled; Redis going away is waited out."""
        while True:
            try:
                raw = await self.redis.lindex(keys.model_tasks_key(self.worker_id), 0)
                if raw is None:
                    await self.replace_dead()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_POLL):
                            await self.wake.wait()
                    self.wake.clear()
                    continue
                await self.run_task(raw)
            except TRANSIENT as exc:
                log.warning("model tasks: redis unavailable (%s)", exc)
                await asyncio.sleep(IDLE_POLL)
            except Exception:  # a bug must not end the loop: the task stays first and is tried again
                log.exception("model task failed")
                await asyncio.sleep(IDLE_POLL)

    async def replace_dead(self) -> None:
        """Every few seconds one worker (a lock) gives dead hosts' shares of ``replicas`` operations to others."""
        if time.monotonic() - self.last_replace < REPLACE_EVERY:
            return
        self.last_replace = time.monotonic()
        if await self.redis.set(keys.MODEL_OPS_LOCK, self.worker_id, nx=True, px=int(REPLACE_EVERY * 1000)):
            for op_id, dead, to in await modelops.replace_dead_shares(
                self.redis, self.settings.heartbeat_ttl, self.settings.model_op_replace_after
            ):
                log.warning("model operation %s: %s is gone, its share goes to %s", op_id, dead, to)

    async def run_task(self, raw: bytes) -> None:
        task = json.loads(raw)
        op_id, kind, model = str(task["op"]), str(task["kind"]), str(task["model"])
        op = await modelops.get_op(self.redis, op_id)
        state = (op or {}).get("hosts", {}).get(self.worker_id, {})
        if op is None or state.get("status") not in ("queued", "running"):
            await self.redis.lrem(keys.model_tasks_key(self.worker_id), 1, raw)  # ended, moved or expired
            return
        pulled = model if kind == "pull" else ""
        if await self.redis.hget(keys.model_op_key(op_id), "cancel"):
            await modelops.end_host(self.redis, op_id, self.worker_id, "cancelled", self.settings.result_ttl,
                                    model=pulled)  # fmt: skip
            return
        starting: dict[str, Any] = {"type": "progress", "worker": self.worker_id, "status": "starting"}
        await modelops.add_event(self.redis, op_id, starting, self.worker_id, {"status": "running"})
        log.info("model task %s: %s %s", op_id, kind, model)
        runner = asyncio.create_task(self.perform(op_id, kind, model, dict(task.get("params") or {})))
        self.current = (op_id, runner)
        status, error = "succeeded", ""
        try:
            await runner
        except asyncio.CancelledError:
            if self.cancel_asked != op_id:
                raise  # this worker is stopping: the task stays in the list
            status = "cancelled"
        except CorralError as exc:
            status, error = "failed", exc.message
        finally:
            self.current = None
        log.info("model task %s: %s %s %s%s", op_id, kind, model, status, f" ({error})" if error else "")
        await modelops.end_host(
            self.redis, op_id, self.worker_id, status, self.settings.result_ttl, error, pulled
        )

    async def perform(self, op_id: str, kind: str, model: str, params: dict[str, Any]) -> None:
        if self.admin is None:
            raise NotSupported(f"model management is not supported by the {self.kind} backend: {kind} {model} "
                               "on the engine itself")  # fmt: skip
        local = self.models.local_names.get(model, model)
        if kind == "pull":
            await self.follow(op_id, self.admin.pull(model))
        elif kind == "create":
            await self.follow(op_id, self.admin.create({**params, "model": model}))
        elif kind == "delete":
            await self.delete(model, local)
        elif kind == "copy":
            await self.admin.copy(local, str(params["destination"]))
        elif kind == "load":
            await self.admin.preload(local, params.get("keep_alive"))
        await self.advertise()

    async def follow(self, op_id: str, lines: Any) -> None:
        progress = Progress()
        async for line in lines:
            event = progress.event(line, self.worker_id, time.monotonic())
            if event is not None:
                fields = ("total", "completed", "percent", "speed", "eta")
                state: dict[str, Any] = {k: event[k] for k in fields if k in event}
                state.update(status="running", step=event["status"])
                await modelops.add_event(self.redis, op_id, event, self.worker_id, state)

    async def delete(self, model: str, local: str) -> None:
        """Stop taking the model's jobs (withdrawn from the heartbeat, the park renewed), let the running ones
        finish, then delete it."""
        assert self.admin is not None
        self.models.withheld.add(model)
        try:
            if model in self.models.names:
                self.models.names = [m for m in self.models.names if m != model]
                self.models.dropped.add(model)
            await self.beat()
            self.models.wake.set()
            since = time.monotonic()
            while self.models.running.get(model) or time.monotonic() - since < PARK_TTL:
                await asyncio.sleep(0.05)
            await self.admin.delete(local)
        finally:
            self.models.withheld.discard(model)

    async def advertise(self) -> None:
        """Read the engine's lists and beat now: the fleet sees the change at once."""
        await self.models.refresh()
        await self.beat()

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()
