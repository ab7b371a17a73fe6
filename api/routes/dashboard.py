"""``GET /dashboard``: a live page for operators (one self-contained HTML file: no build step, nothing fetched
from elsewhere), and ``GET /dashboard/data``, the snapshot it polls. Both read Redis only, so any API replica
shows the whole fleet."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from corral.common import keys, stored
from corral.common.jobs import unix_time
from corral.common.schemas import RQ_TO_STATUS

from ..apikeys import Principal, Scope, may_see
from ..deps import PrincipalDep, RedisDep, SettingsDep
from .fleet import hide_others_jobs, list_workers, queue_depths

router = APIRouter(prefix="/dashboard", tags=["dashboard"])

# the page's script and style are inline; it talks to this origin only
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}
JOB_FIELDS = ("status", "model", "kind", "attempt", "worker_name", "created_at", "enqueued_at", "started_at",
              "ended_at", "error", "seq", "owner")  # fmt: skip
OWNER = JOB_FIELDS.index("owner")
WORKER_FIELDS_LEFT_OUT = ("tags", "ps")  # Ollama's raw listings: large, and the page shows models already


@functools.cache
def page() -> bytes:
    return (resources.files("corral.api") / "static" / "dashboard.html").read_bytes()


@router.get("", response_class=Response, responses={200: {"content": {"text/html": {}}}})
async def dashboard() -> Response:
    """The live dashboard: workers, queue depth over time, recent jobs, a job's tokens as they stream."""
    return Response(page(), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def job_row(job_id: str, values: list[bytes | None]) -> dict[str, Any] | None:
    """A recent job as the page lists it; None once its hash has expired."""
    h = dict(zip(JOB_FIELDS, map(stored.text, values), strict=True))
    if h["status"] is None:
        return None
    return {
        "id": job_id,
        "status": RQ_TO_STATUS.get(h["status"], "failed"),
        "model": h["model"] or "",
        "kind": h["kind"] or "generate",
        "attempt": stored.integer(h["attempt"], 1),
        "worker": h["worker_name"],
        "created": unix_time(h["created_at"]),
        "enqueued": unix_time(h["enqueued_at"]),
        "started": unix_time(h["started_at"]) if h["status"] != "queued" else None,
        "ended": unix_time(h["ended_at"]),
        "error": (h["error"] or "")[:300] or None,
        "events": stored.integer(h["seq"], 0),
    }


async def recent_jobs(client: Any, limit: int, principal: Principal) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs the caller may see: every job for an admin key, its own for any other (read
    from the whole recent list, so a busy neighbour does not empty its page)."""
    everyone = principal.scope is Scope.ADMIN
    ids = [i.decode() for i in await client.lrange(keys.RECENT_JOBS, 0, limit - 1 if everyone else -1)]
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job_key(job_id), JOB_FIELDS)
    found: Iterable[tuple[str, Any]] = zip(ids, await pipe.execute() if ids else [], strict=True)
    if not everyone:
        found = ((i, values) for i, values in found if may_see(principal, (values[OWNER] or b"").decode()))
    rows = (job_row(job_id, values) for job_id, values in found)
    return [row for row in rows if row is not None][:limit]


@router.get("/data")
async def dashboard_data(
    client: RedisDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=keys.RECENT_JOBS_MAX, description="recent jobs to list")] = 30,
) -> dict[str, Any]:
    """What the dashboard shows, in one answer: the server's time, workers, queue depths, job counters and the
    most recent jobs (newest first; times are Unix seconds). A non-admin key sees only its own jobs, in the
    list and in the workers' ``running``; the counts are the fleet's."""
    workers = [
        {k: v for k, v in w.items() if k not in WORKER_FIELDS_LEFT_OUT}
        for w in await list_workers(client, settings.heartbeat_ttl)
    ]
    await hide_others_jobs(client, principal, workers)
    stats = {k.decode(): int(v) for k, v in (await client.hgetall(keys.STATS)).items()}
    queues = await queue_depths(client)
    jobs = await recent_jobs(client, limit, principal)
    # taken after the reads: no time in the answer is later (a job that ended while they ran has no negative age)
    return {"time": time.time(), "workers": workers, "queues": queues, "stats": stats, "jobs": jobs}
