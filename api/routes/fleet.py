"""Fleet routes: workers, models, queues, health."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from corral.common import keys
from corral.common.errors import WorkerNotFound
from corral.common.names import WORKER_ID_RE
from corral.common.registry import list_workers

from ..apikeys import Principal, Scope, may_see
from ..deps import HubDep, PrincipalDep, RedisDep, SettingsDep

router = APIRouter(tags=["fleet"])


async def hide_others_jobs(client: Any, principal: Principal, workers: list[dict[str, Any]]) -> None:
    """Tenancy: a non-admin key finds in each worker's ``running`` only its own jobs (``slots_busy`` still
    counts them all); one round trip for the owners."""
    if principal.scope is Scope.ADMIN:
        return
    ids = sorted({str(job_id) for worker in workers for job_id in worker.get("running", ())})
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job_key(job_id), "owner")
    owners = zip(ids, await pipe.execute() if ids else [], strict=True)
    mine = {job_id for job_id, owner in owners if owner is not None and may_see(principal, owner.decode())}
    for worker in workers:
        if "running" in worker:
            worker["running"] = [job_id for job_id in worker["running"] if str(job_id) in mine]


@router.get("/workers")
async def workers(client: RedisDep, settings: SettingsDep, principal: PrincipalDep) -> dict[str, Any]:
    """Every registered worker with its heartbeat; ``alive`` is false once the heartbeat has expired. A
    non-admin key sees only its own jobs' ids in ``running``."""
    found = await list_workers(client, settings.heartbeat_ttl)
    await hide_others_jobs(client, principal, found)
    return {"workers": found}


@router.post("/workers/{worker_id}/drain", status_code=202)
async def drain_worker(worker_id: str, client: RedisDep) -> dict[str, str]:
    """Ask a worker to drain: it takes no new job, finishes its running ones, then deregisters and exits."""
    if not WORKER_ID_RE.fullmatch(worker_id) or not await client.exists(keys.worker_key(worker_id)):
        raise WorkerNotFound(f"worker '{worker_id[:128]}' not found", worker_id=worker_id[:128])
    await client.publish(keys.control_channel(worker_id), json.dumps({"drain": True}))
    return {"id": worker_id, "status": "draining"}


@router.get("/models")
async def models(client: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    """The models the live fleet has: how many workers hold each, how many have it loaded, queue depth, and
    ``hosts``: each worker that has it, loaded or on disk, its size there."""
    table: dict[str, dict[str, Any]] = {}
    for worker in await list_workers(client, settings.heartbeat_ttl):
        if not worker["alive"] or worker.get("state") != "active":
            continue
        sizes = {str(t.get("name")): int(t.get("size") or 0) for t in worker.get("tags") or []}
        for name in worker["models"]:
            row = table.setdefault(name, {"name": name, "workers": 0, "loaded": 0, "queued": 0, "hosts": []})
            row["workers"] += 1
            row["loaded"] += name in worker["loaded"]
            size = sizes.get(name, sizes.get(name.removesuffix(":latest"), 0))
            row["hosts"].append({"worker": worker["id"], "loaded": name in worker["loaded"], "size": size})
    pipe = client.pipeline(transaction=False)
    for name in table:
        pipe.llen(keys.queue_key(name))
    for row, depth in zip(table.values(), await pipe.execute() if table else [], strict=True):
        row["queued"] = depth
    return {"models": sorted(table.values(), key=lambda r: r["name"])}


async def queue_depths(client: Any) -> dict[str, int]:
    """Model → jobs waiting, for every model queue Corral has used (one round trip for the depths)."""
    prefix = keys.RQ_QUEUE_PREFIX + keys.QUEUE_NAME_PREFIX
    names = sorted(k.decode() for k in await client.smembers(keys.RQ_QUEUES))
    names = [n for n in names if n.startswith(prefix)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    depths = await pipe.execute() if names else []
    return {n[len(prefix) :]: int(d) for n, d in zip(names, depths, strict=True)}


@router.get("/queues")
async def queues(client: RedisDep) -> dict[str, Any]:
    """Every model queue Corral has used: jobs waiting and jobs running now."""
    depths = await queue_depths(client)
    running = {k.decode(): max(0, int(v)) for k, v in (await client.hgetall(keys.RUNNING)).items()}
    rows = [
        {"queue": keys.queue_name(model), "model": model, "queued": depth, "running": running.get(model, 0)}
        for model, depth in depths.items()
    ]
    return {"queues": rows}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(client: RedisDep, hub: HubDep) -> JSONResponse:
    """Readiness: Redis answers and the event bus is connected."""
    await client.ping()
    ready = hub.connected.is_set()
    body = {"status": "ready" if ready else "starting", "redis": "ok", "bus": "ok" if ready else "connecting"}
    return JSONResponse(body, status_code=200 if ready else 503)
