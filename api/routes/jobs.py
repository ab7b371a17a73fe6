"""Native job routes: submit, read, follow (SSE or NDJSON), cancel."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Send

from corral.common import jsonfast
from corral.common.errors import InvalidFields, InvalidRequest, JobNotFound, PayloadTooLarge
from corral.common.logs import job_event as log_job_event
from corral.common.names import is_job_id
from corral.common.schemas import BatchRequest, BatchSubmitted, JobRequest, JobStatus, JobView, Submitted

from ..apikeys import Scope, job_quota, may_see
from ..body import json_body, openapi_body
from ..bus import Event, submit_followed
from ..deps import HubDep, PrincipalDep, RedisDep, SettingsDep, StoreDep, get_principal
from ..fastlane import FastRouter
from ..follow import Batch, follow_batches
from ..history import list_history, make_filters, parse_cursor
from ..inputs import check_request
from ..sse import KEEPALIVE, sse_event
from ..streaming import LeanStream
from ..submitter import apply_headers, attribute, idempotency_of

router = FastRouter(prefix="/jobs", tags=["jobs"])
parse_job_request = json_body(JobRequest)
NDJSON = "application/x-ndjson"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def checked_id(job_id: str) -> str:
    if not is_job_id(job_id):
        raise JobNotFound(job_id[:64])
    return job_id


async def owned(store: StoreDep, job_id: str, principal: PrincipalDep) -> str:
    """The id of a job the caller may see; 404 for a malformed id (before Redis), an unknown job, or another
    key's job (the same answer: a job id says nothing about whether it exists)."""
    checked_id(job_id)
    if not may_see(principal, await store.owner(job_id)):
        raise JobNotFound(job_id)
    return job_id


OwnedJob = Annotated[str, Depends(owned)]


@router.fast_post(
    "",
    status_code=202,
    response_model=Submitted,
    openapi_extra=openapi_body(JobRequest),
    responses={
        404: {"description": "no live worker has the model"},
        413: {"description": "prompt too large"},
    },
)
async def submit_job(http: Request) -> Response:
    """Validate a job and put it on the queue of its model: 202 with its id, or with ``"stream": true`` its
    events at once (SSE, or NDJSON by ``Accept``; the id is in the ``X-Corral-Job`` header and every event).
    404 when no live worker has the model (unless ``wait`` is true), 413 when the prompt is over
    ``CORRAL_MAX_PROMPT_BYTES``. An ``Idempotency-Key`` header the same key used within
    ``CORRAL_IDEMPOTENCY_TTL`` answers that submit's job again (422 for another body)."""
    # The hot path: one parameter, no dependency graph to solve (six dependencies cost more CPU than the
    # validation and the enqueue together); the body is documented through ``openapi_extra``.
    state = http.app.state
    request = await parse_job_request(http)
    check_request(request, state.settings)
    if "x-corral-priority" in http.headers or "x-corral-user" in http.headers:
        apply_headers(request, http.headers)
    principal = await get_principal(http)
    attribute(request, principal)
    quota = job_quota(principal, state.settings.max_jobs_per_key)
    idem = idempotency_of(http.headers, [request]) if "idempotency-key" in http.headers else None
    if not request.stream:
        submitted = await state.store.enqueue(request, None, principal.id, quota, idem)
        # built here rather than re-validated through response_model: this is the hot path
        return Response(submitted.model_dump_json(), status_code=202, media_type="application/json")
    # the events come to this process's own channel: no subscribe, no replay read
    job = await submit_followed(state.store, state.hub, request, principal.id, quota, idem)
    events = follow_batches(state.redis, state.hub, job.id, 0, expected=job.expected)
    return event_response(http, events, {"X-Corral-Job": job.id, "Location": f"/jobs/{job.id}"})


@router.get("")
async def list_jobs(
    client: RedisDep,
    principal: PrincipalDep,
    status: Annotated[
        JobStatus | None, Query(description="queued, running, succeeded, failed, cancelled")
    ] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    worker: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[str | None, Query(max_length=64, description="epoch seconds or ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> dict[str, Any]:
    """The job history, newest first: what ran where, how long it queued, time to first token, tokens/s,
    attempts, error. Paginated with ``next_cursor``; kept ``CORRAL_HISTORY_TTL`` seconds."""
    filters = make_filters(status, model, worker, since)
    if principal.scope is not Scope.ADMIN:  # tenancy: a key sees its own jobs only
        filters = dataclasses.replace(filters, owner=principal.id)
    position = parse_cursor(cursor) if cursor else None
    jobs, next_cursor = await list_history(client, filters, limit, position)
    return {"jobs": jobs, "next_cursor": next_cursor}


def invalid_item(index: int, message: str) -> InvalidFields:
    return InvalidFields([{"loc": ("body", "jobs", index), "msg": message, "type": "value_error"}])


@router.post(
    "/batch",
    status_code=202,
    response_model=BatchSubmitted,
    openapi_extra=openapi_body(BatchRequest),
    responses={422: {"description": "an invalid job (named by its index): nothing was queued"}},
)
async def submit_batch(
    batch: Annotated[BatchRequest, Depends(json_body(BatchRequest))],
    http: Request,
    store: StoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> BatchSubmitted:
    """Validate every job, then queue them all in one Redis round trip, or none: 202 with their ids in order.
    422 naming the index of an invalid job, 404 when a model has no live worker, 429 when a model's queue
    would pass ``CORRAL_MAX_QUEUE``; nothing is queued in every such case. An ``Idempotency-Key`` header: see
    ``POST /jobs``."""
    if len(batch.jobs) > settings.max_batch:
        raise invalid_item(settings.max_batch, f"a batch holds at most {settings.max_batch} jobs")
    for index, request in enumerate(batch.jobs):
        if request.stream:
            raise invalid_item(index, "stream is not supported in a batch; follow GET /jobs/{id}/events")
        try:
            check_request(request, settings)
        except PayloadTooLarge as exc:
            raise PayloadTooLarge(f"jobs[{index}]: {exc.message}") from None
        except InvalidRequest as exc:
            raise invalid_item(index, exc.message) from None
        apply_headers(request, http.headers)
        attribute(request, principal)
    quota = job_quota(principal, settings.max_jobs_per_key)
    idem = idempotency_of(http.headers, batch.jobs)
    return BatchSubmitted(jobs=await store.enqueue_many(batch.jobs, principal.id, quota, idem))


@router.get("/{job_id}", response_model=JobView, response_model_exclude_none=True)
async def get_job(job_id: str, store: StoreDep, principal: PrincipalDep) -> JobView:
    """Status, worker, attempt, timestamps; when done, the full text (or embeddings) and Ollama's stats."""
    view = await store.get(checked_id(job_id))
    if not may_see(principal, view.owner or ""):
        raise JobNotFound(job_id)
    return view


@router.delete("/{job_id}")
async def cancel_job(job_id: OwnedJob, store: StoreDep) -> dict[str, str]:
    """Cancel: a queued job leaves its queue at once; a running one is stopped by its worker."""
    outcome = await store.cancel(job_id)
    # cancelled: it was queued; cancelling: its worker stops it and logs it finished
    log_job_event("cancelled" if outcome == "cancelled" else "cancel_requested", job_id)
    return {"id": job_id, "status": outcome}


MAX_SEQ = 2**62  # far past any job's events, and within a Redis stream id (64 bits)


def start_seq(from_: int | None, last_event_id: str | None) -> int:
    if from_ is not None:
        return from_
    if last_event_id:
        try:
            start = int(last_event_id) + 1
        except ValueError:
            raise InvalidRequest("Last-Event-ID must be an event seq (an integer)") from None
        if not 0 < start <= MAX_SEQ:
            raise InvalidRequest(f"Last-Event-ID must be an event seq (an integer from 0 to {MAX_SEQ - 1})")
        return start
    return 0


def job_event(event: dict[str, Any]) -> bytes:
    """A job event as a Server-Sent Event: its seq the id (``Last-Event-ID`` resumes after it), its type the name.
    An event the hub shares between readers is encoded once."""
    if not isinstance(event, Event):
        return sse_event(event, event["type"], event["seq"])
    if event.sse is None:
        event.sse = sse_event(event, event["type"], event["seq"])
    return event.sse


async def sse(batches: AsyncIterator[Batch | None]) -> AsyncIterator[bytes]:
    """One write per batch of events that arrived together."""
    async for batch in batches:
        yield KEEPALIVE if batch is None else b"".join(map(job_event, batch))


async def ndjson(batches: AsyncIterator[Batch | None]) -> AsyncIterator[bytes]:
    async for batch in batches:
        if batch is not None:
            yield b"".join(jsonfast.dumpb(event) + b"\n" for event in batch)


class EventStream(LeanStream):
    """A streaming response whose head goes out with its first events (one write for the client to read instead
    of two or three; the first events of a streamed submit, queued and started, arrive at once)."""

    async def stream_response(self, send: Send) -> None:
        chunks = aiter(self.body_iterator)
        first = await anext(chunks, b"")
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@router.get("/{job_id}/events")
async def job_events(
    job_id: OwnedJob,
    request: Request,
    store: StoreDep,
    hub: HubDep,
    from_: Annotated[
        int | None, Query(alias="from", ge=0, le=MAX_SEQ, description="first seq to send")
    ] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Every event of the job in order, from ``?from=N`` or after ``Last-Event-ID``, until done/error/cancelled.

    Server-Sent Events by default; NDJSON with ``Accept: application/x-ndjson``."""
    start = start_seq(from_, last_event_id)
    return event_response(request, follow_batches(store.scripts_client, hub, job_id, start))


def event_response(
    request: Request, batches: AsyncIterator[Batch | None], headers: dict[str, str] | None = None
) -> StreamingResponse:
    """SSE by default, NDJSON when the client accepts ``application/x-ndjson``."""
    headers = {**STREAM_HEADERS, **(headers or {})}
    if NDJSON in request.headers.get("accept", ""):
        return EventStream(ndjson(batches), media_type=NDJSON, headers=headers)
    return EventStream(sse(batches), media_type="text/event-stream", headers=headers)
