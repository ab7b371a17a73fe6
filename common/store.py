"""Sync and async front-ends of the job store: the same scripts and arguments, awaited or not.

``JobStore`` (sync) serves the janitor, the CLI and the direct-Redis client; ``AsyncJobStore`` serves the API
and the worker. The argument lists live in ``_Calls`` so the two never drift apart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from . import jsonfast, keys, scripts
from .errors import JobNotCancellable, JobNotFound
from .fastredis import FastRedis
from .jobs import (
    Limits,
    PoppedJob,
    PreparedJob,
    batch_arguments,
    batch_submitted,
    check_enqueued,
    decode_popped,
    enqueue_arguments,
    job_view,
    prepare_job,
    rq_now,
    submitted,
)
from .schedule import SwitchSignal, decode_position, decode_switch, warm_flags
from .schemas import JobRequest, JobView, Submitted

Call = tuple[scripts.LuaScript, list[str], list[Any]]
# a job's timing for the histograms, as script KEYS and ARGV (histograms.record_arguments)
Timing = tuple[list[str], list[Any]]


def parse_events(entries: list[Any]) -> list[dict[str, Any]]:
    """XRANGE entries → event dicts, in order."""
    out = []
    for _id, fields in entries:
        raw = fields.get(b"e") or fields.get("e")
        out.append(jsonfast.loads(raw))
    return out


def _word(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _cancel_outcome(job_id: str, reply: list[Any]) -> str:
    state = _word(reply[0])
    if state == "missing":
        raise JobNotFound(job_id)
    if state in ("cancelled", "cancelling"):
        return state
    raise JobNotCancellable(f"job '{job_id}' has already ended ({state})", job_id=job_id, state=state)


def _requeue_outcome(reply: list[Any]) -> tuple[str, int]:
    return _word(reply[0]), int(reply[1]) if len(reply) > 1 else 0


@dataclass(frozen=True)
class Popped:
    """POP's answer: the job; or none and the seconds until a cold worker may take one (0: nothing to wait for);
    or a signal to switch models (a worker at its model capacity, a model nobody serves)."""

    job: PoppedJob | None = None
    wait: float = 0.0
    switch: SwitchSignal | None = None


@dataclass(frozen=True)
class Park:
    """How a pop that finds nothing parks the worker for the models it may take (push dispatch): with ``slots``
    free slots (0: no park) for ``ttl`` seconds; ``seen`` is the last job handed to it that it has started."""

    slots: int = 0
    ttl: float = 2.0
    seen: str = ""


def _popped(reply: Any, default_timeout: float) -> Popped:
    if isinstance(reply, int):
        return Popped(wait=reply / 1000)
    signal = decode_switch(reply)
    if signal is not None:
        return Popped(switch=signal)
    return Popped(decode_popped(reply, default_timeout) if reply else None)


def _flags(models: list[str], warm: set[str] | None) -> str:
    return "1" * len(models) if warm is None else warm_flags(models, warm)


class _Calls:
    """The script calls of the job lifecycle: (script, keys, args), built once for both front-ends."""

    limits: Limits
    redis: Any

    def _event_args(self) -> list[Any]:
        return [self.limits.events_maxlen, self.limits.events_ttl_ms, self.limits.result_ttl]

    def _pop(self, worker_id: str, models: list[str], flags: str, park: Park | None = None) -> Call:
        queue_keys = [keys.queue_key(m) for m in models]
        limits = self.limits
        park = park or Park()
        args = [worker_id, rq_now(), limits.events_maxlen, limits.events_ttl_ms, flags, limits.cold_delay,
                limits.warm_ttl, limits.switch_delay, limits.priority_aging,
                park.slots, park.ttl, park.seen]  # fmt: skip
        return scripts.POP, [keys.inflight_key(worker_id), *queue_keys], args

    def _prepare_batch(
        self, requests: list[JobRequest], owner: str, max_jobs: int
    ) -> tuple[list[PreparedJob], list[Any]]:
        jobs = [prepare_job(r, self.limits, owner=owner, max_jobs=max_jobs) for r in requests]
        return jobs, batch_arguments(jobs, self.limits, [not r.wait for r in requests])

    def _emit(self, job: PoppedJob, worker_id: str, bodies: tuple[str, ...]) -> Call:
        args = [
            job.id,
            job.attempt_arg,
            worker_id,
            self.limits.events_maxlen,
            self.limits.events_ttl_ms,
            *bodies,
        ]
        return scripts.EMIT, [keys.job_key(job.id)], args

    def _finish(
        self,
        job: PoppedJob,
        worker_id: str,
        status: str,
        body: str,
        result: str,
        error: str,
        chunks: tuple[str, ...],
        metrics: str = "",
        timing: Timing = ([], []),
    ) -> Call:
        """FINISH's call; ``timing``: the job's timing for the histograms (``histograms.record_arguments``)."""
        timing_keys, timing_args = timing
        args = [
            job.id,
            job.attempt_arg,
            worker_id,
            status,
            rq_now(),
            result,
            error,
            body,
            *self._event_args(),
            metrics,
            len(chunks),
            *chunks,
            *timing_args,
        ]
        return scripts.FINISH, [keys.job_key(job.id), keys.inflight_key(worker_id), *timing_keys], args

    def _requeue(self, job_id: str, reason: str, attempt: str, worker_id: str, counts: bool) -> Call:
        limits = self.limits
        args = [job_id, attempt, worker_id, reason, limits.max_retries + 1, rq_now(), limits.events_maxlen,
                limits.events_ttl_ms, limits.result_ttl, "1" if counts else "0"]  # fmt: skip
        return scripts.REQUEUE, [keys.job_key(job_id), keys.inflight_key(worker_id or "-")], args

    def _cancel(self, job_id: str) -> Call:
        return scripts.CANCEL, [keys.job_key(job_id)], [job_id, rq_now(), *self._event_args()]


class JobStore(_Calls):
    """Synchronous job store (janitor, CLI, direct-Redis client)."""

    def __init__(self, client: redis.Redis, limits: Limits) -> None:
        self.redis = client
        self.limits = limits

    def _run(self, call: Call) -> Any:
        script, script_keys, args = call
        return script(self.redis, script_keys, args)

    def enqueue(
        self, request: JobRequest, job_id: str | None = None, owner: str = "", max_jobs: int = 0
    ) -> Submitted:
        """Queue a job; ``owner`` (an API key id) is recorded and its ``max_jobs`` quota enforced atomically."""
        job = prepare_job(request, self.limits, job_id, owner, max_jobs)
        script_keys, args = enqueue_arguments(job, self.limits, check_served=not request.wait)
        return submitted(job, scripts.ENQUEUE(self.redis, script_keys, args))

    def get(self, job_id: str) -> JobView:
        raw = self.redis.hgetall(keys.job_key(job_id))
        place = None
        if raw.get(b"status") == b"queued":
            place = decode_position(scripts.POSITION(self.redis, [], [job_id]))
        return job_view(job_id, raw, *(place or (None, None)))

    def enqueue_many(self, requests: list[JobRequest], owner: str = "", max_jobs: int = 0) -> list[Submitted]:
        """Enqueue jobs all or none, in one round trip."""
        jobs, args = self._prepare_batch(requests, owner, max_jobs)
        return batch_submitted(jobs, scripts.ENQUEUE_BATCH(self.redis, [], args))

    def events(self, job_id: str, after: int = -1, count: int | None = None) -> list[dict[str, Any]]:
        entries = self.redis.xrange(keys.events_key(job_id), f"{after + 2}-0", "+", count=count)
        return parse_events(entries)

    def cancel(self, job_id: str) -> str:
        return _cancel_outcome(job_id, self._run(self._cancel(job_id)))

    def pop(self, worker_id: str, models: list[str], warm: set[str] | None = None) -> PoppedJob | None:
        """Take the next job of ``models`` (in that order); ``warm``: the models this worker has loaded
        (None: all), the others only after the cold delay."""
        return self.pop_scheduled(worker_id, models, warm)[0]

    def pop_scheduled(
        self, worker_id: str, models: list[str], warm: set[str] | None
    ) -> tuple[PoppedJob | None, float]:
        popped = self.pop_planned(worker_id, models, _flags(models, warm))
        return popped.job, popped.wait

    def pop_planned(self, worker_id: str, models: list[str], flags: str, park: Park | None = None) -> Popped:
        """One pop with explicit flags per queue (``schedule.plan_pop``); ``park``: see :class:`Park`."""
        reply = self._run(self._pop(worker_id, models, flags, park)) if models else None
        return _popped(reply, self.limits.job_timeout)

    def unpark(self, worker_id: str, seen: str = "") -> PoppedJob | None:
        reply = self._run(self._pop(worker_id, [], "", Park(seen=seen)))
        return _popped(reply, self.limits.job_timeout).job

    def emit(self, job: PoppedJob, worker_id: str, *bodies: str) -> int:
        """Publish events of a running job, in one round trip. -1: fenced off, 1: cancel asked, 0: carry on."""
        return int(self._run(self._emit(job, worker_id, bodies)))

    def finish(
        self,
        job: PoppedJob,
        worker_id: str,
        status: str,
        body: str,
        result: str = "",
        error: str = "",
        chunks: tuple[str, ...] = (),
        metrics: str = "",
        timing: Timing = ([], []),
    ) -> bool:
        """End a job (rq status finished / failed / canceled) with its last event, after ``chunks`` events, and
        record its ``timing``. False: fenced off (nothing written)."""
        call = self._finish(job, worker_id, status, body, result, error, chunks, metrics, timing)
        return bool(self._run(call))

    def requeue(
        self, job_id: str, reason: str, *, attempt: str = "", worker_id: str = "", counts: bool = True
    ) -> tuple[str, int]:
        """Put a started job back at the front of its queue (or fail it past the retry limit)."""
        return _requeue_outcome(self._run(self._requeue(job_id, reason, attempt, worker_id, counts)))

    def inflight(self, worker_id: str) -> list[str]:
        return [x.decode() for x in self.redis.lrange(keys.inflight_key(worker_id), 0, -1)]


class AsyncJobStore(_Calls):
    """Asynchronous job store (API, worker)."""

    def __init__(self, client: aioredis.Redis, limits: Limits, fast: FastRedis | None = None) -> None:
        self.redis = client
        # the scripts of the job path go through the lean client when there is one (see common/fastredis.py)
        self.scripts_client: Any = fast or client
        self.limits = limits

    async def _run(self, call: Call) -> Any:
        script, script_keys, args = call
        return await script.call_async(self.scripts_client, script_keys, args)

    async def enqueue(
        self, request: JobRequest, job_id: str | None = None, owner: str = "", max_jobs: int = 0
    ) -> Submitted:
        """Queue a job; ``owner`` (an API key id) is recorded and its ``max_jobs`` quota enforced atomically."""
        job, reply = await self._enqueue(request, job_id, owner, max_jobs, "")
        return submitted(job, reply)

    async def enqueue_followed(
        self, request: JobRequest, job_id: str, reply_to: str, owner: str = "", max_jobs: int = 0
    ) -> list[bytes]:
        """Queue a job whose events its submitter follows on ``reply_to``: every event is published there too,
        except those the enqueue itself writes (queued, and started when a parked worker took the job at once),
        which are returned here, raw."""
        job, reply = await self._enqueue(request, job_id, owner, max_jobs, reply_to)
        check_enqueued(job, reply)
        started = reply[1:2]
        return [
            job.queued_event.encode(),
            *(raw if isinstance(raw, bytes) else raw.encode() for raw in started),
        ]

    async def _enqueue(
        self, request: JobRequest, job_id: str | None, owner: str, max_jobs: int, reply_to: str
    ) -> tuple[PreparedJob, list[Any]]:
        job = prepare_job(request, self.limits, job_id, owner, max_jobs, reply_to)
        # (the script checks that a live worker holds the model: no round trip of its own on the submit path)
        script_keys, args = enqueue_arguments(job, self.limits, check_served=not request.wait)
        return job, await scripts.ENQUEUE.call_async(self.scripts_client, script_keys, args)

    async def get(self, job_id: str) -> JobView:
        raw = await self.redis.hgetall(keys.job_key(job_id))
        place = None
        if raw.get(b"status") == b"queued":
            place = decode_position(await scripts.POSITION.call_async(self.redis, [], [job_id]))
        return job_view(job_id, raw, *(place or (None, None)))

    async def enqueue_many(
        self, requests: list[JobRequest], owner: str = "", max_jobs: int = 0
    ) -> list[Submitted]:
        """Enqueue jobs all or none, in one round trip."""
        jobs, args = self._prepare_batch(requests, owner, max_jobs)
        return batch_submitted(jobs, await scripts.ENQUEUE_BATCH.call_async(self.scripts_client, [], args))

    async def exists(self, job_id: str) -> bool:
        return bool(await self.redis.exists(keys.job_key(job_id)))

    async def owner(self, job_id: str) -> str | None:
        """The owner of a job ('' when it has none), or None when there is no such job."""
        status, owner = await self.redis.hmget(keys.job_key(job_id), "status", "owner")
        if status is None:
            return None
        return owner.decode() if owner else ""

    async def events(self, job_id: str, after: int = -1, count: int | None = None) -> list[dict[str, Any]]:
        entries = await self.redis.xrange(keys.events_key(job_id), f"{after + 2}-0", "+", count=count)
        return parse_events(entries)

    async def cancel(self, job_id: str) -> str:
        return _cancel_outcome(job_id, await self._run(self._cancel(job_id)))

    async def pop(self, worker_id: str, models: list[str], warm: set[str] | None = None) -> PoppedJob | None:
        return (await self.pop_scheduled(worker_id, models, warm))[0]

    async def pop_scheduled(
        self, worker_id: str, models: list[str], warm: set[str] | None
    ) -> tuple[PoppedJob | None, float]:
        popped = await self.pop_planned(worker_id, models, _flags(models, warm))
        return popped.job, popped.wait

    async def pop_planned(
        self, worker_id: str, models: list[str], flags: str, park: Park | None = None
    ) -> Popped:
        reply = await self._run(self._pop(worker_id, models, flags, park)) if models else None
        return _popped(reply, self.limits.job_timeout)

    async def unpark(self, worker_id: str, seen: str = "") -> PoppedJob | None:
        """End the worker's park; a job an enqueue handed it that it has not seen (``seen``) is returned."""
        reply = await self._run(self._pop(worker_id, [], "", Park(seen=seen)))
        return _popped(reply, self.limits.job_timeout).job

    async def emit(self, job: PoppedJob, worker_id: str, *bodies: str) -> int:
        return int(await self._run(self._emit(job, worker_id, bodies)))

    def emit_now(self, job: PoppedJob, worker_id: str, bodies: tuple[str, ...]) -> asyncio.Future[Any] | None:
        """``emit`` written at once from synchronous code (a chunk's event goes out without waiting for a turn of
        the event loop); None when the lean client has no live connection. Await its reply with
        ``fastredis.reply_of``; on NOSCRIPT or a connection error, call ``emit``."""
        script, script_keys, args = self._emit(job, worker_id, bodies)
        future: asyncio.Future[Any] | None = script.send_now(self.scripts_client, script_keys, args)
        return future

    async def finish(
        self,
        job: PoppedJob,
        worker_id: str,
        status: str,
        body: str,
        result: str = "",
        error: str = "",
        chunks: tuple[str, ...] = (),
        metrics: str = "",
        timing: Timing = ([], []),
    ) -> bool:
        """Write a job's end (and its timing, in the same call); False when fenced off (nothing written)."""
        call = self._finish(job, worker_id, status, body, result, error, chunks, metrics, timing)
        return bool(await self._run(call))

    async def requeue(
        self, job_id: str, reason: str, *, attempt: str = "", worker_id: str = "", counts: bool = True
    ) -> tuple[str, int]:
        return _requeue_outcome(await self._run(self._requeue(job_id, reason, attempt, worker_id, counts)))

    async def inflight(self, worker_id: str) -> list[str]:
        return [x.decode() for x in await self.redis.lrange(keys.inflight_key(worker_id), 0, -1)]
