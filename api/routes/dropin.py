"""What the Ollama and OpenAI drop-in routes share: submit a job from a translated body, wait for its end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from pydantic import ValidationError

from corral.common import keys, stored
from corral.common.errors import InvalidRequest
from corral.common.registry import list_workers
from corral.common.schemas import JobRequest
from corral.common.settings import Settings
from corral.common.store import AsyncJobStore

from ..apikeys import Principal, job_quota
from ..bus import ChunkHub, Followed, submit_followed
from ..follow import follow_batches
from ..inputs import check_request
from ..submitter import attribute, header_fields, idempotency_of


async def submit(
    store: AsyncJobStore,
    settings: Settings,
    hub: ChunkHub,
    body: dict[str, Any],
    principal: Principal,
    headers: Mapping[str, str] | None = None,
) -> Followed:
    """Validate a translated body like ``POST /jobs`` does and enqueue it as ``principal``'s job, to be followed
    here at once; ``X-Corral-Priority`` and ``X-Corral-User`` headers give the scheduling fields, and an
    ``Idempotency-Key`` one the earlier job of the same key and body."""
    if headers is not None:
        body = {**header_fields(headers), **body}
    try:
        request = JobRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "body"
        raise InvalidRequest(f"{where}: {first.get('msg')}") from None
    check_request(request, settings)
    attribute(request, principal)
    idem = idempotency_of(headers, [request]) if headers is not None else None
    quota = job_quota(principal, settings.max_jobs_per_key)
    # (its reader cannot resume elsewhere: a restart after tokens ends its stream with an error, ``retry_message``)
    return await submit_followed(store, hub, request, principal.id, quota, idem, link_first=True)


async def events_of(client: Any, hub: ChunkHub, job: Followed) -> AsyncIterator[dict[str, Any]]:
    """The job's events, idle ticks left out."""
    async for batch in follow_batches(client, hub, job.id, expected=job.expected):
        for event in batch or ():
            yield event


async def outcome(client: Any, hub: ChunkHub, job: Followed) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait for the job's end: its last event and, when it succeeded, its stored result."""
    job_id = job.id
    last: dict[str, Any] = {}
    async for event in events_of(client, hub, job):
        last = event
    result: dict[str, Any] | None = {}
    if last.get("type") == "done":
        result = stored.json_object(await client.hget(keys.job_key(job_id), "result"))
        if result is None:  # a damaged hash: the job's answer is lost, as if it had failed
            return {"type": "error", "error": f"job {job_id}: {stored.RESULT_UNREADABLE}"}, {}
    return last, result or {}


def failure_message(event: dict[str, Any], job_id: str) -> str:
    if event.get("type") == "cancelled":
        return f"job {job_id} was cancelled"
    return str(event.get("error") or f"job {job_id} ended without a result")


def retry_message(event: dict[str, Any], job_id: str) -> str:
    return (f"job {job_id} was restarted on another worker after tokens were sent ({event.get('reason')}); "
            f"follow GET /jobs/{job_id}/events for the full answer")  # fmt: skip


async def fleet_models(client: Any, settings: Settings) -> dict[str, dict[str, Any]]:
    """Model name → Ollama's /api/tags entry, over live active workers (first one wins)."""
    models: dict[str, dict[str, Any]] = {}
    for worker in await list_workers(client, settings.heartbeat_ttl):
        if not worker["alive"] or worker.get("state") != "active":
            continue
        tags = {str(t.get("name")): t for t in worker.get("tags") or []}
        for name in worker.get("models") or []:
            models.setdefault(name, tags.get(name) or {"name": name, "model": name})
    return models


async def fleet_loaded(client: Any, settings: Settings) -> list[dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = {}
    for worker in await list_workers(client, settings.heartbeat_ttl):
        if worker["alive"]:
            for entry in worker.get("ps") or []:
                loaded.setdefault(str(entry.get("name")), entry)
    return list(loaded.values())
