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
from corral.common.registry import decode_worker
from corral.common.schemas import RQ_TO_STATUS

from ..apikeys import Principal, Scope, may_see
from ..deps import PrincipalDep, RedisDep, SettingsDep
from .fleet import hide_others_jobs

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


SNAPSHOT_TRIES = 3


async def read_snapshot(client: Any, limit: int, principal: Principal, ttl: float) -> dict[str, Any]:
    """Workers, queue depths, running counts, counters and recent jobs, all read in one MULTI/EXEC: the page's
    totals and its job table come from one instant, so they agree (a job started between two separate reads
    would be running in one and queued in the other). The ids to read are listed in a round trip before; if a
    job was submitted in between, the list is read again (bounded)."""
    everyone = principal.scope is Scope.ADMIN
    last = limit - 1 if everyone else -1  # any other key reads the whole list: a busy neighbour hides nothing
    prefix = keys.RQ_QUEUE_PREFIX + keys.QUEUE_NAME_PREFIX
    for _ in range(SNAPSHOT_TRIES):
        listing = client.pipeline(transaction=False)
        listing.zrange(keys.WORKERS, 0, -1, withscores=True)
        listing.smembers(keys.RQ_QUEUES)
        listing.lrange(keys.RECENT_JOBS, 0, last)
        workers, queue_keys, job_ids = await listing.execute()
        queue_keys = sorted(q.decode() for q in queue_keys if q.decode().startswith(prefix))
        pipe = client.pipeline(transaction=True)
        pipe.lrange(keys.RECENT_JOBS, 0, last)
        pipe.hgetall(keys.STATS)
        pipe.hgetall(keys.RUNNING)
        for queue_key in queue_keys:
            pipe.llen(queue_key)
        for worker_id, _score in workers:
            pipe.hgetall(keys.worker_key(worker_id.decode()))
        for job_id in job_ids:
            pipe.hmget(keys.job_key(job_id.decode()), JOB_FIELDS)
        now_ids, stats, running, *rest = await pipe.execute()
        if now_ids == job_ids:
            break
    depths, rest = rest[: len(queue_keys)], rest[len(queue_keys) :]
    return {
        "workers": [
            decode_worker(worker_id.decode(), raw, score, ttl)
            for (worker_id, score), raw in zip(workers, rest[: len(workers)], strict=True)
        ],
        "queues": {q[len(prefix) :]: int(d) for q, d in zip(queue_keys, depths, strict=True)},
        "running": {m.decode(): max(0, int(n)) for m, n in running.items() if int(n) > 0},
        "stats": {k.decode(): int(v) for k, v in stats.items()},
        "jobs": visible_jobs(
            zip([i.decode() for i in job_ids], rest[len(workers) :], strict=True), limit, principal
        ),
    }


def visible_jobs(found: Iterable[tuple[str, Any]], limit: int, principal: Principal) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs the caller may see: every job for an admin key, its own for any other."""
    if principal.scope is not Scope.ADMIN:
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
    """What the dashboard shows, in one answer read at one instant: the server's time, workers, queue depths,
    jobs running per model, job counters and the most recent jobs (newest first; times are Unix seconds). A
    non-admin key sees only its own jobs, in the list and in the workers' ``running``; the counts are the
    fleet's."""
    snapshot = await read_snapshot(client, limit, principal, settings.heartbeat_ttl)
    workers = snapshot["workers"]
    for worker in workers:
        for name in WORKER_FIELDS_LEFT_OUT:
            worker.pop(name, None)
    await hide_others_jobs(client, principal, workers)
    # taken after the reads: no time in the answer is later (a job that ended while they ran has no negative age)
    return {"time": time.time(), **snapshot}
