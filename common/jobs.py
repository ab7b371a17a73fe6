"""The job store on top of RQ: enqueue, read, cancel, and the worker side's pop / emit / finish / requeue.

A job is an RQ job (``rq:job:<id>``, JSON serializer, function name from ``JOB_FUNCTIONS``) on the RQ queue of its
model. Corral adds a few readable fields to the hash: ``model``, ``kind``, ``attempt``, ``seq`` (next event
number), ``result`` (JSON), ``error``, ``cancel``. Command building and result parsing are pure functions; the sync
(worker, client) and async (API) callers only differ in whether they ``await`` the pipeline.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from . import jsonfast, keys, stored
from .delays import COLD_FALLBACK, SWITCH_FALLBACK
from .errors import IdempotencyConflict, JobNotFound, ModelNotFound, QueueFull, RateLimited
from .schemas import ANONYMOUS, RQ_TO_STATUS, JobRequest, JobView, Submitted
from .settings import Settings

# The only functions a worker ever runs; anything else found in a job is refused, never imported.
JOB_FUNCTIONS: dict[str, str] = {
    "generate": "corral.generate",
    "chat": "corral.chat",
    "embed": "corral.embed",
    "show": "corral.show",
}
ALLOWED_FUNCTIONS = frozenset(JOB_FUNCTIONS.values())
RQ_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


# the last whole second rq_now formatted and its text, as one object (read and replaced whole: threads share it)
_second: tuple[int, str] = (-1, "")


def rq_now(now: float | None = None) -> str:
    """Now (or the epoch time ``now``) in RQ's timestamp format (``RQ_TIME_FORMAT``), the seconds' text formatted
    once a second (datetime's isoformat cost ~4 us a call, on every submit)."""
    global _second
    if now is None:
        now = time.time()
    whole = int(now)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int((now - whole) * 1e6):06d}Z"


def new_job_id() -> str:
    """A job id: a random (version 4) UUID's 32 hex digits, as ``uuid.uuid4().hex`` gives, without building a
    UUID object (~5 us on every submit)."""
    value = int.from_bytes(os.urandom(16))
    value = value & ~(0xC000 << 48) | 0x8000 << 48  # the RFC 4122 variant
    return f"{value & ~(0xF000 << 64) | 0x4000 << 64:032x}"  # version 4


def event_json(job_id: str, seq: int, attempt: int, body: dict[str, Any]) -> str:
    """One event as the Lua scripts build it: job, seq, attempt first, then the body's fields."""
    return jsonfast.dumps({"job": job_id, "seq": seq, "attempt": attempt, **body})


@dataclass(frozen=True)
class Limits:
    """The settings the job scripts need, in the units Redis wants."""

    events_maxlen: int
    events_ttl_ms: int
    result_ttl: int
    job_timeout: float
    max_retries: int
    queue_timeout: float = 0.0
    max_queue: int = 0
    history_ttl: int = 86400
    history_max: int = 100_000
    cold_delay: float = 0.0
    warm_ttl: float = 6.0
    switch_delay: float = 10.0
    priority_aging: float = 0.0
    idempotency_ttl: int = 86400
    ack_replicas: int = 0
    ack_timeout_ms: int = 500

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            events_maxlen=settings.events_maxlen,
            events_ttl_ms=settings.result_ttl * 1000,
            result_ttl=settings.result_ttl,
            job_timeout=settings.job_timeout,
            max_retries=settings.max_retries,
            queue_timeout=settings.queue_timeout,
            max_queue=settings.max_queue,
            history_ttl=settings.history_ttl,
            history_max=settings.history_max,
            cold_delay=COLD_FALLBACK if settings.cold_delay is None else settings.cold_delay,
            warm_ttl=settings.heartbeat_ttl,
            switch_delay=SWITCH_FALLBACK if settings.switch_delay is None else settings.switch_delay,
            priority_aging=settings.priority_aging,
            idempotency_ttl=settings.idempotency_ttl,
            ack_replicas=settings.ack_replicas,
            ack_timeout_ms=settings.ack_timeout_ms,
        )


@dataclass(frozen=True)
class Idempotency:
    """A submit's ``Idempotency-Key`` and the digest of what it asks (its validated requests, in order): the
    enqueue answers a key its owner used before with that submit's jobs, or refuses it for another digest."""

    key: str
    digest: str

    @classmethod
    def of(cls, key: str, requests: list[JobRequest]) -> Idempotency:
        # canonical: keys sorted (the same options in another order are the same request), ASCII (a lone
        # surrogate in a prompt is escaped, not an error)
        canonical = json.dumps(
            [r.model_dump(mode="json") for r in requests], sort_keys=True, separators=(",", ":")
        )
        return cls(key, hashlib.sha256(canonical.encode()).hexdigest())


def replayed(reply: list[Any]) -> list[tuple[str, int]] | None:
    """The jobs (id, queue position) of the earlier submit an enqueue's reply names (its Idempotency-Key was
    used before with the same body: nothing was written); None for a reply about this submit."""
    code = int(reply[0]) if reply else 0
    if code == -5:
        raise IdempotencyConflict("this Idempotency-Key was used with another request body")
    if code != -4:
        return None
    parts = (_text(reply[1]) or "").split("|")
    return [(parts[i], int(parts[i + 1]) - 1) for i in range(0, len(parts) - 1, 2)]


@dataclass(slots=True)
class PreparedJob:
    id: str
    model: str
    kind: str
    mapping: dict[str, Any]
    queued_event: str
    deadline: float = 0.0
    created: float = field(default_factory=time.time)
    owner: str = ""
    max_jobs: int = 0
    priority: str = "normal"
    submitter: str = ANONYMOUS
    call: list[Any] = field(default_factory=list)  # the RQ call ``mapping["data"]`` encodes


@functools.lru_cache(maxsize=1024)
def _fixed_fields(model: str, kind: str, timeout: float | None, limits: Limits) -> dict[str, str]:
    """The job hash's fields that follow from the model, kind, timeout and limits alone (formatted once)."""
    seconds = float(timeout or limits.job_timeout)
    return {
        "origin": keys.queue_name(model),
        "description": f"{kind} {model}",
        "timeout": str(max(1, math.ceil(seconds))),  # RQ keeps whole seconds; Corral reads run_timeout
        "result_ttl": str(limits.result_ttl),
        "status": "queued",
        "model": model,
        "kind": kind,
        "attempt": "1",
        "seq": "1",
        "max_attempts": str(limits.max_retries + 1),
        "run_timeout": f"{seconds:g}",
    }


def prepare_job(request: JobRequest, limits: Limits, job_id: str | None = None, owner: str = "", max_jobs: int = 0,
                reply_to: str = "", link_first: bool = False) -> PreparedJob:  # fmt: skip
    """Build the RQ job hash of a validated request (no I/O).

    The hash has the fields RQ's ``Job.fetch`` reads (``data`` is the JSON call RQ's JSONSerializer writes; RQ
    reads it uncompressed as well as compressed), built directly: ``Job.create`` and ``to_dict`` cost more than
    the rest of a submit together. Every value is text, so the script takes the hash as one JSON argument."""
    assert request.kind is not None
    job_id = job_id or new_job_id()
    call: list[Any] = [JOB_FUNCTIONS[request.kind], None, [], {"request": request.ollama_body()}]
    if reply_to:  # the worker sends its chunk events to that API directly as well (common/link.py), and
        call[3]["reply_to"] = reply_to  # before their emit when its reader cannot resume (worker/link.py)
        if link_first:
            call[3]["link_first"] = True
    # one reading of the clock for every time of the job: its creation (the history's score) and its RQ times
    # (created, enqueued, and started for a job handed at once) agree to the microsecond
    created = time.time()
    now = rq_now(created)
    mapping = {
        "created_at": now,
        "data": jsonfast.dumps(call),
        **_fixed_fields(request.model, request.kind, request.timeout, limits),
        "enqueued_at": now,
        "priority": request.priority,
        "submitter": request.submitter or ANONYMOUS,
    }
    queue_timeout = request.queue_timeout or limits.queue_timeout
    deadline = created + queue_timeout if queue_timeout else 0.0
    if deadline:
        mapping["queue_timeout"] = f"{queue_timeout:g}"
    if owner:
        mapping["owner"] = owner  # the id of the API key that created the job (tenancy)
    if reply_to:
        mapping["reply_to"] = reply_to  # every event is published there too (common.bus.ChunkHub.expect)
    queued = event_json(job_id, 0, 1, {"type": "queued", "model": request.model, "kind": request.kind})
    return PreparedJob(job_id, request.model, request.kind, mapping, queued, deadline,
                       owner=owner, max_jobs=max_jobs if owner else 0, priority=request.priority,
                       submitter=request.submitter or ANONYMOUS, created=created, call=call)  # fmt: skip


def batch_submitted(jobs: list[PreparedJob], reply: list[Any]) -> list[Submitted]:
    """The answers of ENQUEUE_BATCH; a job whose model no live worker holds raises ``ModelNotFound`` (naming its
    index), a model queue the batch would overfill ``QueueFull`` and a used-up job quota ``RateLimited`` (nothing
    written in any of these cases)."""
    earlier = replayed(reply)
    if earlier is not None:
        return [_answer(job, job_id, place) for job, (job_id, place) in zip(jobs, earlier, strict=True)]
    if reply and int(reply[0]) == -3:
        index = int(reply[1])
        raise ModelNotFound(jobs[index].model, index=index)
    if reply and int(reply[0]) == -2:
        submitted(jobs[0], reply)  # raises
    if reply and int(reply[0]) < 0:
        model = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        raise QueueFull(model, int(reply[2]))
    return [submitted(job, [n]) for job, n in zip(jobs, reply, strict=True)]


def check_enqueued(job: PreparedJob, reply: list[Any]) -> None:
    """Raise for an ENQUEUE reply that refused the job: ``ModelNotFound`` (no live worker holds its model),
    ``RateLimited`` (the owner's quota is used up) or ``QueueFull`` (nothing was written in any case)."""
    if int(reply[0]) == -3:
        raise ModelNotFound(job.model)
    if int(reply[0]) == -2:
        raise RateLimited(
            f"this API key has {int(reply[1])} jobs queued or running, its limit; retry when one ends",
            retry_after=1.0,
        )
    if int(reply[0]) < 0:
        raise QueueFull(job.model, int(reply[1]))


def submitted(job: PreparedJob, reply: list[Any]) -> Submitted:
    """The 202 answer from the ENQUEUE reply (an earlier submit's, for a replayed Idempotency-Key); a refused job
    raises (``check_enqueued``)."""
    earlier = replayed(reply)
    if earlier is not None:
        return _answer(job, *earlier[0])
    check_enqueued(job, reply)
    return _answer(job, job.id, int(reply[0]) - 1)


def _answer(job: PreparedJob, job_id: str, position: int) -> Submitted:
    return Submitted(
        id=job_id,
        status="queued",
        model=job.model,
        kind=job.kind,
        queue=keys.queue_name(job.model),
        queue_position=position,
    )


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _iso(value: str | None) -> str | None:
    """RQ's timestamps are naive UTC; show them as RFC 3339."""
    if not value:
        return None
    return value if value.endswith("Z") else value + "Z"


def job_view(
    job_id: str, raw: dict[Any, Any], position: int | None = None, eta: str | None = None
) -> JobView:
    """Turn a job hash (HGETALL) into the public view; a damaged field is left out, with ``error`` saying so."""
    if not raw:
        raise JobNotFound(job_id)
    h = {stored.text(k): v for k, v in raw.items()}

    def get(name: str) -> str | None:
        return stored.text(h.get(name))

    result = stored.json_object(h.get("result"))
    status = RQ_TO_STATUS.get(get("status") or "", "failed")
    fields = {
        "id": job_id,
        "model": get("model") or "",
        "kind": get("kind") if get("kind") in JOB_FUNCTIONS else "generate",
        "status": status,
        "attempt": stored.integer(h.get("attempt"), 1),
        "worker": get("worker_name") or None,
        "queue": get("origin") or "",
        "queue_position": position if status == "queued" else None,
        "estimated_start_at": eta if status == "queued" else None,
        "priority": get("priority") or "normal",
        "submitter": get("submitter"),
        "created_at": _iso(get("created_at")),
        "enqueued_at": _iso(get("enqueued_at")),
        "started_at": _iso(get("started_at")) if status != "queued" else None,
        "ended_at": _iso(get("ended_at")),
        **{k: (result or {}).get(k) for k in ("text", "message", "embeddings", "final")},
        "error": get("error") or (None if result is not None else stored.RESULT_UNREADABLE),
        "events": stored.integer(h.get("seq"), 0),
        "owner": get("owner") or None,
    }
    try:
        return JobView.model_validate(fields)
    except ValidationError as exc:  # a field of the wrong shape: the view without it
        bad = {str(e["loc"][0]) for e in exc.errors(include_url=False) if e["loc"]}
        kept = {k: v for k, v in fields.items() if k not in bad}
        kept["error"] = (
            fields["error"] or f"stored fields of this job are unreadable: {', '.join(sorted(bad))}"
        )
        return JobView.model_validate(kept)


@dataclass
class PoppedJob:
    """A job a worker has taken: the fence (id, attempt) and the decoded RQ call."""

    id: str
    attempt: int
    model: str
    timeout: float
    func_name: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    refusal: str | None = None
    popped_at: float = field(default_factory=time.monotonic)
    queue_wait: float | None = None  # seconds between (re-)enqueue and this pop, by the hosts' clocks
    start_seq: int = -1  # seq of this start's ``started`` event: one start, whether handed, popped or both
    first_token_at: float | None = None  # monotonic, set by the runner at the first chunk
    # False for a job an API sent ahead of its hand, until the hand comes (worker/link.py)
    confirmed: bool = True

    @property
    def attempt_arg(self) -> str:
        return str(self.attempt)


def unix_time(rq_time: str | None) -> float | None:
    """An RQ timestamp (``2024-05-01T12:00:00.123456Z``, UTC) as a Unix time; None when absent or malformed."""
    if not rq_time or len(rq_time) != 27 or rq_time[10] != "T" or rq_time[-1] != "Z":
        return None
    try:  # the exact format checked above; fromisoformat parses it ~20x faster than strptime (a worker's pop)
        return datetime.fromisoformat(rq_time).timestamp()
    except ValueError:
        return None


def queue_wait(enqueued_at: str | None) -> float | None:
    """Seconds since a job's ``enqueued_at``, never negative; None when absent."""
    then = unix_time(enqueued_at)
    return None if then is None else max(time.time() - then, 0.0)


def decode_popped(reply: list[Any], default_timeout: float) -> PoppedJob:
    """Decode POP's reply. A job whose data is not Corral's JSON call of an allowed function gets a refusal."""
    job_id, attempt, data, timeout, model = (_text(x) if i != 2 else x for i, x in enumerate(reply[:5]))
    popped = PoppedJob(
        id=str(job_id),
        attempt=int(attempt or 1),
        model=str(model or ""),
        timeout=float(timeout) if timeout else default_timeout,
        queue_wait=queue_wait(_text(reply[5]) if len(reply) > 5 else None),
        start_seq=int(reply[6]) if len(reply) > 6 else -1,
    )
    try:
        raw = data if isinstance(data, bytes) else str(data).encode()
        if raw[:1] != b"[":  # RQ compresses; Corral's jobs and hand-written ones are plain JSON calls
            with contextlib.suppress(zlib.error):
                raw = zlib.decompress(raw)
        func_name, _instance, args, kwargs = jsonfast.loads_exact(raw)
    except Exception:  # anything not a JSON call (a pickle, garbage) is refused unread
        popped.refusal = "job data is not a Corral job (not JSON); refused"
        return popped
    if func_name not in ALLOWED_FUNCTIONS or args or not isinstance(kwargs, dict):
        popped.refusal = f"job function {str(func_name)[:100]!r} is not allowed; refused"
        return popped
    popped.func_name = func_name
    popped.kwargs = kwargs
    return popped
