"""Model operations in Redis: a pull, delete, copy, create or load of a model on chosen hosts, as durable work.

An operation is a hash (``keys.model_op_key``: kind, model, params, hosts, status, ``host:<worker>`` = that host's
state as JSON, ``remaining`` = hosts not yet ended) with an event stream (``keys.model_op_events_key``). Each host's
share is a task (JSON) in that worker's list (``keys.model_tasks_key``): the worker runs the oldest and removes it
when it ends, so a task survives an API restart and a worker that dies mid-pull runs it again when it comes back.
The host that ends last (``remaining`` reaches 0) writes the operation's status and its terminal event.

Events (``{"type": …}``): ``queued`` (hosts), ``progress`` (worker, status, digest, total, completed, percent,
speed in bytes/s, eta in s), ``host`` (a host ended: worker, status, error), ``moved`` (a dead host's share went
to another), then one of ``done`` / ``error`` / ``cancelled`` (status, hosts).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from redis.exceptions import WatchError

from . import keys
from .jsonfast import dumps

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
OPS_KEPT = 500  # newest operations listed in keys.MODEL_OPS
EVENTS_MAXLEN = 5000
WATCH_TRIES = 50


def new_op_id() -> str:
    return "op-" + uuid.uuid4().hex[:16]


def task_of(op_id: str, kind: str, model: str, params: dict[str, Any]) -> str:
    return dumps({"op": op_id, "kind": kind, "model": model, "params": params})


def decode(raw: dict[Any, Any]) -> dict[str, Any]:
    """An operation's hash as the API shows it: hosts with their state, params parsed."""
    h = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    hosts = {k[5:]: json.loads(v) for k, v in h.items() if k.startswith("host:")}
    return {
        "id": h.get("id"),
        "kind": h.get("kind"),
        "model": h.get("model"),
        "params": json.loads(h.get("params") or "{}"),
        "placement": json.loads(h.get("placement") or "{}"),
        "status": h.get("status"),
        "created_at": float(h.get("created_at") or 0),
        "ended_at": float(h["ended_at"]) if h.get("ended_at") else None,
        "owner": h.get("owner") or None,
        "hosts": hosts,
    }


async def create_op(r: Any, kind: str, model: str, targets: list[str], params: dict[str, Any],
                    placement: dict[str, Any], owner: str = "") -> str:  # fmt: skip
    """Write the operation and one task per target host (woken by a control message); its id."""
    op_id = new_op_id()
    now = time.time()
    record: dict[str, Any] = {"id": op_id, "kind": kind, "model": model, "params": dumps(params),
                              "placement": dumps(placement), "status": "queued", "created_at": now,
                              "remaining": len(targets), "owner": owner}  # fmt: skip
    pipe = r.pipeline(transaction=True)
    for worker in targets:
        task = task_of(op_id, kind, model, params)
        record[f"host:{worker}"] = dumps({"status": "queued"})
        record[f"task:{worker}"] = task
        pipe.rpush(keys.model_tasks_key(worker), task)
        if kind == "pull":
            pipe.hset(keys.MODEL_PULLING, f"{worker}|{model}", op_id)
    pipe.hset(keys.model_op_key(op_id), mapping=record)
    pipe.zadd(keys.MODEL_OPS, {op_id: now})
    pipe.zremrangebyrank(keys.MODEL_OPS, 0, -OPS_KEPT - 1)
    pipe.xadd(keys.model_op_events_key(op_id), {"e": dumps({"type": "queued", "hosts": targets})})
    for worker in targets:
        pipe.publish(keys.control_channel(worker), dumps({"modelop": op_id}))
    await pipe.execute()
    return op_id


async def pulling(r: Any, model: str, workers: list[str]) -> dict[str, str]:
    """Worker → id of the pull of ``model`` running or queued there (two pulls of one model on one host
    coalesce)."""
    if not workers:
        return {}
    ids = await r.hmget(keys.MODEL_PULLING, [f"{w}|{model}" for w in workers])
    return {w: i.decode() for w, i in zip(workers, ids, strict=True) if i}


async def get_op(r: Any, op_id: str) -> dict[str, Any] | None:
    raw = await r.hgetall(keys.model_op_key(op_id))
    return decode(raw) if raw else None


async def recent_ops(r: Any, limit: int = 50, active_only: bool = False) -> list[dict[str, Any]]:
    ids = await r.zrevrange(keys.MODEL_OPS, 0, max(0, limit - 1))
    pipe = r.pipeline(transaction=False)
    for op_id in ids:
        pipe.hgetall(keys.model_op_key(op_id.decode()))
    ops = [decode(raw) for raw in await pipe.execute() if raw]
    return [op for op in ops if op["status"] not in TERMINAL] if active_only else ops


async def add_event(
    r: Any, op_id: str, event: dict[str, Any], worker: str = "", state: dict[str, Any] | None = None
) -> None:
    """One event on the operation's stream (and, with ``state``, the host's state in the hash)."""
    pipe = r.pipeline(transaction=True)
    pipe.xadd(keys.model_op_events_key(op_id), {"e": dumps(event)}, maxlen=EVENTS_MAXLEN, approximate=True)
    if state is not None:
        pipe.hset(keys.model_op_key(op_id), f"host:{worker}", dumps(state))
    await pipe.execute()


async def watched(attempt: Any, *args: Any) -> bool:
    """Run a WATCH/MULTI ``attempt`` again while another writer (a host's progress) touched the hash meanwhile."""
    for _ in range(WATCH_TRIES):
        try:
            return bool(await attempt(*args))
        except WatchError:
            continue
    raise WatchError(f"model operation {args[1]}: too many concurrent writes")


async def end_host(
    r: Any, op_id: str, worker: str, status: str, ttl: int, error: str = "", model: str = ""
) -> bool:
    """A host's share ended (see ``_end_host``)."""
    return await watched(_end_host, r, op_id, worker, status, ttl, error, model)


async def _end_host(r: Any, op_id: str, worker: str, status: str, ttl: int, error: str, model: str) -> bool:
    """A host's share ended (``status`` succeeded / failed / cancelled): its state, its task gone, and, when it was
    the last, the operation's status and terminal event. False when this host's share had already ended or moved
    (a worker presumed dead that came back writes nothing)."""
    key = keys.model_op_key(op_id)
    async with r.pipeline(transaction=True) as pipe:
        await pipe.watch(key)
        raw = await pipe.hget(key, f"host:{worker}")
        task = await pipe.hget(key, f"task:{worker}")
        state = json.loads(raw) if raw else None
        if state is None or state.get("status") in (*TERMINAL, "moved"):
            await pipe.unwatch()
            return False
        ended = {**state, "status": status, **({"error": error} if error else {})}
        pipe.multi()
        pipe.hset(key, f"host:{worker}", dumps(ended))
        pipe.hincrby(key, "remaining", -1)
        if task:
            pipe.lrem(keys.model_tasks_key(worker), 1, task)
        if model:
            pipe.hdel(keys.MODEL_PULLING, f"{worker}|{model}")
        event = {"type": "host", "worker": worker, "status": status, **({"error": error} if error else {})}
        pipe.xadd(
            keys.model_op_events_key(op_id), {"e": dumps(event)}, maxlen=EVENTS_MAXLEN, approximate=True
        )
        replies = await pipe.execute()
    if int(replies[1]) <= 0:
        await finish_op(r, op_id, ttl)
    return True


async def finish_op(r: Any, op_id: str, ttl: int) -> None:
    op = await get_op(r, op_id)
    if op is None:
        return
    statuses = {s.get("status") for s in op["hosts"].values()} - {"moved"}
    status = "cancelled" if "cancelled" in statuses else "failed" if "failed" in statuses else "succeeded"
    errors = {w: s["error"] for w, s in op["hosts"].items() if s.get("error")}
    kind = {"succeeded": "done", "failed": "error", "cancelled": "cancelled"}[status]
    event = {"type": kind, "status": status, "hosts": {w: s.get("status") for w, s in op["hosts"].items()}}
    if errors:
        event["error"] = "; ".join(f"{w}: {e}" for w, e in sorted(errors.items()))
    pipe = r.pipeline(transaction=True)
    pipe.hset(keys.model_op_key(op_id), mapping={"status": status, "ended_at": time.time()})
    pipe.xadd(keys.model_op_events_key(op_id), {"e": dumps(event)})
    pipe.expire(keys.model_op_key(op_id), ttl)
    pipe.expire(keys.model_op_events_key(op_id), ttl)
    await pipe.execute()


async def cancel_op(r: Any, op_id: str, ttl: int) -> dict[str, Any] | None:
    """Cancel: queued shares end at once, running ones are told to stop (``{"modelop_cancel": id}``)."""
    op = await get_op(r, op_id)
    if op is None:
        return None
    await r.hset(keys.model_op_key(op_id), "cancel", 1)
    for worker, state in op["hosts"].items():
        if state.get("status") == "queued":
            await end_host(
                r, op_id, worker, "cancelled", ttl, model=op["model"] if op["kind"] == "pull" else ""
            )
        elif state.get("status") == "running":
            await r.publish(keys.control_channel(worker), dumps({"modelop_cancel": op_id}))
    return await get_op(r, op_id)


async def move_share(r: Any, op_id: str, dead: str, to: str) -> bool:
    """Give a dead host's share of an operation to ``to``; False when it has ended meanwhile."""
    return await watched(_move_share, r, op_id, dead, to)


async def _move_share(r: Any, op_id: str, dead: str, to: str) -> bool:
    key = keys.model_op_key(op_id)
    async with r.pipeline(transaction=True) as pipe:
        await pipe.watch(key)
        raw = await pipe.hget(key, f"host:{dead}")
        task = await pipe.hget(key, f"task:{dead}")
        kind, model = await pipe.hget(key, "kind"), await pipe.hget(key, "model")
        state = json.loads(raw) if raw else {}
        if state.get("status") not in ("queued", "running") or not task:
            await pipe.unwatch()
            return False
        pipe.multi()
        pipe.hset(key, f"host:{dead}", dumps({**state, "status": "moved", "to": to}))
        pipe.hset(key, mapping={f"host:{to}": dumps({"status": "queued"}), f"task:{to}": task})
        pipe.lrem(keys.model_tasks_key(dead), 1, task)
        pipe.rpush(keys.model_tasks_key(to), task)
        if kind == b"pull" and model:
            pipe.hdel(keys.MODEL_PULLING, f"{dead}|{model.decode()}")
            pipe.hset(keys.MODEL_PULLING, f"{to}|{model.decode()}", op_id)
        pipe.xadd(keys.model_op_events_key(op_id), {"e": dumps({"type": "moved", "worker": dead, "to": to})})
        pipe.publish(keys.control_channel(to), dumps({"modelop": op_id}))
        await pipe.execute()
    return True


async def replace_dead_shares(r: Any, ttl: float, after: float) -> list[tuple[str, str, str]]:
    """Shares of ``replicas`` operations held by a host silent for over ``after`` seconds go to another host chosen
    as the placement would (named hosts and ``all`` wait for their worker). ``(op, dead, new)`` for each move."""
    from .placement import Placement, host_views, place
    from .registry import list_workers

    ops = await recent_ops(r, limit=100, active_only=True)
    if not ops:
        return []
    workers = await list_workers(r, ttl)
    silent = {w["id"] for w in workers if time.time() - float(w.get("last_seen") or 0) > after}
    views = host_views(workers)
    moves = []
    for op in ops:
        if "replicas" not in op["placement"]:
            continue
        for dead, state in op["hosts"].items():
            if dead not in silent or state.get("status") not in ("queued", "running"):
                continue
            try:
                model = op["params"].get("from") or op["model"] if op["kind"] == "create" else op["model"]
                to = place(views, op["kind"], model, Placement(replicas=1), exclude=set(op["hosts"]) | silent)
            except Exception:  # no other host can take it now: try again on the next pass
                continue
            if to and await move_share(r, op["id"], dead, to[0]):
                moves.append((op["id"], dead, to[0]))
    return moves
