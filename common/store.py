"""The job store: each state change of a job is one call of its script (common.scripts), built here.

``AsyncJobStore`` is the store (the API, the worker); ``JobStore``, its sync surface for the janitor and the direct
client: the same calls (``_Calls``) and reply decoding, run on a sync client through one ``_run``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from . import jsonfast, keys, scripts
from .fastredis import FastRedis
from .jobs import (
    Idempotency,
    Limits,
    PoppedJob,
    PreparedJob,
    batch_submitted,
    check_enqueued,
    decode_popped,
    job_view,
    prepare_job,
    replayed,
    rq_now,
    submitted,
)
from .logs import job_submitted
from .outcomes import cancel_outcome, parse_events, requeue_outcome
from .replication import acked_or_refused
from .schedule import SwitchSignal, decode_position, decode_switch, warm_flags
from .schemas import JobRequest, JobView, Submitted

Call = tuple[scripts.LuaScript, Sequence[str], Sequence[Any]]
# a job's timing for the histograms, as script KEYS and ARGV (histograms.record_arguments)
Timing = tuple[list[str], list[Any]]


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


def _job_block(job: PreparedJob) -> scripts.JobBlock:
    return scripts.JobBlock(id=job.id, event=job.queued_event, deadline=job.deadline or 0, model=job.model,
                            priority=job.priority, submitter=job.submitter, created=repr(job.created),
                            owner=job.owner, hash=jsonfast.dumps(job.mapping))  # fmt: skip


class _Calls:
    """The script calls of the job lifecycle, (script, KEYS, ARGV), built once for both stores."""

    limits: Limits

    def _enqueue_args(
        self, max_jobs: int, start_ts: str, checks: str, idem: Idempotency | None, prefer: str = ""
    ) -> scripts.EnqueueArgs:
        limits = self.limits
        return scripts.EnqueueArgs(max_queue=limits.max_queue, maxlen=limits.events_maxlen,
                                   ttl_ms=limits.events_ttl_ms, history_min=repr(time.time() - limits.history_ttl),
                                   history_max=limits.history_max, quota=max_jobs, start_ts=start_ts,
                                   checks=checks, idem=idem.key if idem else "", digest=idem.digest if idem else "",
                                   idem_ttl=limits.idempotency_ttl, prefer=prefer)  # fmt: skip

    def _enqueue(self, job: PreparedJob, check_served: bool, idem: Idempotency | None = None, prefer: str = "",
                 ) -> Call:  # fmt: skip
        """ENQUEUE's call; ``check_served``: refuse the job when no live worker holds its model; ``prefer``: the
        parked worker to hand it to if that one is parked for its model."""
        checks = "1" if check_served else "0"
        head = self._enqueue_args(job.max_jobs, job.mapping["enqueued_at"], checks, idem, prefer)
        return (
            scripts.ENQUEUE,
            scripts.EnqueueKeys(queue=keys.queue_key(job.model)),
            [*head, *_job_block(job)],
        )

    def _enqueue_batch(
        self, jobs: list[PreparedJob], check_served: list[bool], idem: Idempotency | None = None
    ) -> Call:
        checks = "".join("1" if check else "0" for check in check_served)
        args: list[Any] = [*self._enqueue_args(jobs[0].max_jobs if jobs else 0, "", checks, idem)]
        for job in jobs:
            args += _job_block(job)
        return scripts.ENQUEUE_BATCH, scripts.NoKeys(), args

    def _pop(self, worker_id: str, models: list[str], flags: str, park: Park | None = None,
             delays: tuple[str, str] | None = None) -> Call:  # fmt: skip
        # delays: the cold and switch delays per queue (Delays.arguments), else the limits' for every queue
        limits, park = self.limits, park or Park()
        cold, switch = delays or (limits.cold_delay, limits.switch_delay)
        args = scripts.PopArgs(worker=worker_id, now=rq_now(), maxlen=limits.events_maxlen,
                               ttl_ms=limits.events_ttl_ms, flags=flags, cold_delay=cold,
                               warm_ttl=limits.warm_ttl, switch_delay=switch,
                               aging=limits.priority_aging, park_slots=park.slots, park_ttl=park.ttl,
                               seen=park.seen)  # fmt: skip
        return (
            scripts.POP,
            [*scripts.PopKeys(inflight=keys.inflight_key(worker_id)), *map(keys.queue_key, models)],
            args,
        )

    def _emit(self, job: PoppedJob, worker_id: str, bodies: tuple[str, ...]) -> Call:
        args = scripts.EmitArgs(id=job.id, attempt=job.attempt_arg, worker=worker_id,
                                maxlen=self.limits.events_maxlen, ttl_ms=self.limits.events_ttl_ms)  # fmt: skip
        return scripts.EMIT, scripts.JobKey(job=keys.job_key(job.id)), [*args, *bodies]

    def _finish(self, job: PoppedJob, worker_id: str, status: str, body: str, result: str, error: str,
                chunks: tuple[str, ...], metrics: str, timing: Timing) -> Call:  # fmt: skip
        """FINISH's call; ``timing``: the job's timing for the histograms (``histograms.record_arguments``)."""
        timing_keys, timing_args = timing
        limits = self.limits
        args = scripts.FinishArgs(id=job.id, attempt=job.attempt_arg, worker=worker_id, status=status,
                                  ended_at=rq_now(), result=result, error=error, body=body,
                                  maxlen=limits.events_maxlen, ttl_ms=limits.events_ttl_ms,
                                  result_ttl=limits.result_ttl, metrics=metrics, chunks=len(chunks))  # fmt: skip
        script_keys = scripts.FinishKeys(job=keys.job_key(job.id), inflight=keys.inflight_key(worker_id))
        return scripts.FINISH, [*script_keys, *timing_keys], [*args, *chunks, *timing_args]

    def _requeue(self, job_id: str, reason: str, attempt: str, worker_id: str, counts: bool) -> Call:
        limits = self.limits
        args = scripts.RequeueArgs(id=job_id, attempt=attempt, worker=worker_id, reason=reason,
                                   max_attempts=limits.max_retries + 1, now=rq_now(), maxlen=limits.events_maxlen,
                                   ttl_ms=limits.events_ttl_ms, result_ttl=limits.result_ttl,
                                   counts="1" if counts else "0")  # fmt: skip
        script_keys = scripts.RequeueKeys(
            job=keys.job_key(job_id), inflight=keys.inflight_key(worker_id or "-")
        )
        return scripts.REQUEUE, script_keys, args

    def _end_args(self, job_id: str) -> scripts.EndArgs:
        limits = self.limits
        return scripts.EndArgs(id=job_id, now=rq_now(), maxlen=limits.events_maxlen, ttl_ms=limits.events_ttl_ms,
                               result_ttl=limits.result_ttl)  # fmt: skip

    def _cancel(self, job_id: str) -> Call:
        return scripts.CANCEL, scripts.JobKey(job=keys.job_key(job_id)), self._end_args(job_id)

    def _expire_queued(self, job_id: str) -> Call:
        script_keys = scripts.ExpireKeys(job=keys.job_key(job_id), deadlines=keys.DEADLINES)
        return scripts.EXPIRE_QUEUED, script_keys, self._end_args(job_id)

    @staticmethod
    def _position(job_id: str) -> Call:
        return scripts.POSITION, scripts.NoKeys(), scripts.PositionArgs(id=job_id)

    @staticmethod
    def _events_range(job_id: str, after: int) -> tuple[str, str, str]:
        return keys.events_key(job_id), f"{after + 2}-0", "+"


class JobStore(_Calls):
    """The store's synchronous surface (the janitor, the direct-Redis client): the calls of ``AsyncJobStore``
    those need, on a sync client."""

    def __init__(self, client: redis.Redis, limits: Limits) -> None:
        self.redis = client
        self.limits = limits

    def _run(self, call: Call) -> Any:
        script, script_keys, args = call
        return script(self.redis, script_keys, args)

    def enqueue(self, request: JobRequest, job_id: str | None = None, owner: str = "", max_jobs: int = 0,
                idempotency: Idempotency | None = None) -> Submitted:  # fmt: skip
        """Queue a job (see ``AsyncJobStore.enqueue``)."""
        job = prepare_job(request, self.limits, job_id, owner, max_jobs)
        return submitted(job, self._run(self._enqueue(job, not request.wait, idempotency)))

    def get(self, job_id: str) -> JobView:
        raw = self.redis.hgetall(keys.job_key(job_id))
        place = (
            decode_position(self._run(self._position(job_id))) if raw.get(b"status") == b"queued" else None
        )
        return job_view(job_id, raw, *(place or (None, None)))

    def events(self, job_id: str, after: int = -1, count: int | None = None) -> list[dict[str, Any]]:
        return parse_events(self.redis.xrange(*self._events_range(job_id, after), count=count))

    def cancel(self, job_id: str) -> str:
        return cancel_outcome(job_id, self._run(self._cancel(job_id)))

    def requeue(
        self, job_id: str, reason: str, *, attempt: str = "", worker_id: str = "", counts: bool = True
    ) -> tuple[str, int]:
        """Put a started job back at the front of its queue (see ``AsyncJobStore.requeue``)."""
        return requeue_outcome(self._run(self._requeue(job_id, reason, attempt, worker_id, counts)))

    def expire_queued(self, job_id: str) -> bool:
        """Fail a job still queued whose queue-wait deadline has passed; False when it was no longer queued."""
        return bool(self._run(self._expire_queued(job_id)))

    def inflight(self, worker_id: str) -> list[str]:
        return [x.decode() for x in self.redis.lrange(keys.inflight_key(worker_id), 0, -1)]


class AsyncJobStore(_Calls):
    """The job store (API, worker)."""

    def __init__(self, client: aioredis.Redis, limits: Limits, fast: FastRedis | None = None) -> None:
        self.redis = client
        # the scripts of the job path go through the lean client when there is one (see common/fastredis.py)
        self.scripts_client: Any = fast or client
        self.limits = limits

    async def _run(self, call: Call) -> Any:
        script, script_keys, args = call
        return await script.call_async(self.scripts_client, script_keys, args)

    async def enqueue(self, request: JobRequest, job_id: str | None = None, owner: str = "", max_jobs: int = 0,
                      idempotency: Idempotency | None = None) -> Submitted:  # fmt: skip
        """Queue a job; ``owner`` (an API key id) is recorded and its ``max_jobs`` quota enforced atomically. With
        ``idempotency``, a key the owner used before answers that submit's job instead (nothing written)."""
        job, reply = await self._submit(request, job_id, owner, max_jobs, "", idempotency)
        return submitted(job, reply)

    async def enqueue_followed(self, request: JobRequest, job_id: str, reply_to: str, owner: str = "",
                               max_jobs: int = 0, idempotency: Idempotency | None = None,
                               prefer: Callable[[PreparedJob], str] | None = None, link_first: bool = False,
                               ) -> tuple[str, list[bytes]]:  # fmt: skip
        """Queue a job whose events its submitter follows on ``reply_to``: every event is published there too,
        except those the enqueue itself writes (queued, and started when a parked worker took the job at once),
        which are returned here, raw, after the job's id. A replayed ``idempotency`` key: the earlier job's id and
        no events (its events are not published on ``reply_to``). ``prefer``: called with the job before the
        enqueue; the parked worker it names gets the job if it is parked for the model (api/link.py). ``link_first``:
        the follower cannot resume elsewhere (a drop-in route's), so the worker may send it each chunk before the
        chunk's emit (worker/link.py)."""
        job, reply = await self._submit(request, job_id, owner, max_jobs, reply_to, idempotency, prefer,
                                        link_first)  # fmt: skip
        earlier = replayed(reply)
        if earlier is not None:
            return earlier[0][0], []
        check_enqueued(job, reply)
        started = reply[1:2]
        return job.id, [
            job.queued_event.encode(),
            *(raw if isinstance(raw, bytes) else raw.encode() for raw in started),
        ]

    async def _submit(self, request: JobRequest, job_id: str | None, owner: str, max_jobs: int, reply_to: str,
                      idem: Idempotency | None, prefer: Callable[[PreparedJob], str] | None = None,
                      link_first: bool = False) -> tuple[PreparedJob, list[Any]]:  # fmt: skip
        job = prepare_job(request, self.limits, job_id, owner, max_jobs, reply_to, link_first)
        # (the script checks that a live worker holds the model: no round trip of its own on the submit path)
        call = self._enqueue(job, not request.wait, idem, prefer(job) if prefer and not idem else "")
        reply = await self._replicated(call, lambda r: [submitted(job, r).id])
        if reply and int(reply[0]) > 0:  # queued (not refused, not an earlier submit's answer)
            job_submitted(job, int(reply[0]) - 1)
        return job, reply

    async def get(self, job_id: str) -> JobView:
        raw = await self.redis.hgetall(keys.job_key(job_id))
        place = None
        if raw.get(b"status") == b"queued":
            script, script_keys, args = self._position(job_id)
            place = decode_position(await script.call_async(self.redis, script_keys, args))
        return job_view(job_id, raw, *(place or (None, None)))

    async def enqueue_many(self, requests: list[JobRequest], owner: str = "", max_jobs: int = 0,
                           idempotency: Idempotency | None = None) -> list[Submitted]:  # fmt: skip
        """Enqueue jobs all or none, in one round trip (``idempotency``: see ``enqueue``)."""
        jobs = [prepare_job(r, self.limits, owner=owner, max_jobs=max_jobs) for r in requests]
        call = self._enqueue_batch(jobs, [not r.wait for r in requests], idempotency)
        reply = await self._replicated(call, lambda r: [s.id for s in batch_submitted(jobs, r)])
        answers = batch_submitted(jobs, reply)
        for job, answer in zip(jobs, answers if replayed(reply) is None else (), strict=False):
            job_submitted(job, answer.queue_position)
        return answers

    async def _replicated(self, call: Call, ids: Callable[[Any], list[str]]) -> Any:
        """An enqueue, acknowledged by ``limits.ack_replicas`` replicas when that is set (replication.py)."""
        if not self.limits.ack_replicas:
            return await self._run(call)
        # a pooled connection: a WAIT blocks its connection, and on the lean client's one every submit would wait
        limits = self.limits
        return await acked_or_refused(call, self.redis, limits.ack_replicas, limits.ack_timeout_ms, ids)

    async def exists(self, job_id: str) -> bool:
        return bool(await self.redis.exists(keys.job_key(job_id)))

    async def owner(self, job_id: str) -> str | None:
        """A job's owner ('' if none; None: no such job). On the lean client: a burst of readers grew the pool."""
        status, owner = await self.scripts_client.execute_command(
            "HMGET", keys.job_key(job_id), "status", "owner"
        )
        return None if status is None else owner.decode() if owner else ""

    async def events(self, job_id: str, after: int = -1, count: int | None = None) -> list[dict[str, Any]]:
        return parse_events(await self.redis.xrange(*self._events_range(job_id, after), count=count))

    async def cancel(self, job_id: str) -> str:
        return cancel_outcome(job_id, await self._run(self._cancel(job_id)))

    async def pop(self, worker_id: str, models: list[str], warm: set[str] | None = None) -> PoppedJob | None:
        """The next job of ``models`` (in order); ``warm``: the models loaded here (None: all), others later."""
        return (await self.pop_scheduled(worker_id, models, warm))[0]

    async def pop_scheduled(self, worker_id: str, models: list[str],
                            warm: set[str] | None) -> tuple[PoppedJob | None, float]:  # fmt: skip
        popped = await self.pop_planned(worker_id, models, _flags(models, warm))
        return popped.job, popped.wait

    async def pop_planned(self, worker_id: str, models: list[str], flags: str, park: Park | None = None,
                          delays: tuple[str, str] | None = None) -> Popped:  # fmt: skip
        """One pop with explicit flags per queue (``schedule.plan_pop``); ``park``: see :class:`Park`."""
        reply = await self._run(self._pop(worker_id, models, flags, park, delays)) if models else None
        return _popped(reply, self.limits.job_timeout)

    async def unpark(self, worker_id: str, seen: str = "") -> PoppedJob | None:
        """End the worker's park; a job an enqueue handed it that it has not seen (``seen``) is returned."""
        reply = await self._run(self._pop(worker_id, [], "", Park(seen=seen)))
        return _popped(reply, self.limits.job_timeout).job

    async def emit(self, job: PoppedJob, worker_id: str, *bodies: str) -> int:
        """Publish events of a running job, in one round trip. -1: fenced off, 1: cancel asked, 0: carry on."""
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
        """End a job (rq status finished / failed / canceled) with its last event, after ``chunks`` events, and
        record its ``timing``. False: fenced off (nothing written)."""
        call = self._finish(job, worker_id, status, body, result, error, chunks, metrics, timing)
        return bool(await self._run(call))

    async def requeue(
        self, job_id: str, reason: str, *, attempt: str = "", worker_id: str = "", counts: bool = True
    ) -> tuple[str, int]:
        """Put a started job back at the front of its queue (or fail it past the retry limit)."""
        return requeue_outcome(await self._run(self._requeue(job_id, reason, attempt, worker_id, counts)))

    async def inflight(self, worker_id: str) -> list[str]:
        return [x.decode() for x in await self.redis.lrange(keys.inflight_key(worker_id), 0, -1)]
