"""The fleet registry: worker heartbeat hashes with a TTL, the index zset, and who holds which model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import keys

VERSION = "0.1.0"


@dataclass
class WorkerInfo:
    """What a worker says of itself in every heartbeat."""

    id: str
    host: str
    pid: int
    ollama_url: str
    slots_total: int
    started_at: float
    backend: str = "ollama"
    max_loaded_models: int = 0
    weight: float = 1.0
    models: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    state: str = "active"
    healthy: bool = True
    cpu_percent: float = 0.0
    ram_used: int = 0
    ram_total: int = 0
    gpu: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)
    ps: list[dict[str, Any]] = field(default_factory=list)
    load_seconds: dict[str, float] = field(default_factory=dict)  # model -> load time (common/delays)

    def to_hash(self, now: float) -> dict[str, str | int | float]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "version": VERSION,
            "ollama_url": self.ollama_url,
            "models": json.dumps(self.models),
            "loaded": json.dumps(self.loaded),
            "running": json.dumps(self.running),
            "backend": self.backend,
            "slots_total": self.slots_total,
            "max_loaded_models": self.max_loaded_models,
            "weight": self.weight,
            "slots_busy": len(self.running),
            "state": self.state,
            "healthy": int(self.healthy),
            "cpu_percent": round(self.cpu_percent, 1),
            "ram_used": self.ram_used,
            "ram_total": self.ram_total,
            "gpu": json.dumps(self.gpu),
            "tags": json.dumps(self.tags),
            "ps": json.dumps(self.ps),
            "load_seconds": json.dumps(self.load_seconds),
            "started_at": round(self.started_at, 3),
            "last_seen": round(now, 3),
        }


def heartbeat_commands(
    pipe: Any, info: WorkerInfo, ttl: float, dropped_models: set[str], claims: Iterable[str] = ()
) -> None:
    """Queue one heartbeat on a (sync or async) MULTI pipeline: the hash (with TTL), the index, the per-model
    holder sets, and the warm ``claims`` renewed (a busy worker's: an idle one renews them with its pops)."""
    now = time.time()
    key = keys.worker_key(info.id)
    pipe.hset(key, mapping=info.to_hash(now))
    pipe.pexpire(key, int(ttl * 1000))
    pipe.zadd(keys.WORKERS, {info.id: now})
    if info.state == "active":
        for model in info.models:
            pipe.zadd(keys.model_workers_key(model), {info.id: now + ttl})
        for model in claims:
            pipe.zadd(keys.warm_key(model), {info.id: now + ttl})
    else:
        dropped_models = dropped_models | set(info.models)
    for model in dropped_models:
        pipe.zrem(keys.model_workers_key(model), info.id)
        pipe.zrem(keys.warm_key(model), info.id)


def deregister_commands(pipe: Any, worker_id: str, models: list[str]) -> None:
    pipe.delete(keys.worker_key(worker_id))
    pipe.zrem(keys.WORKERS, worker_id)
    for model in models:
        pipe.zrem(keys.model_workers_key(model), worker_id)
        pipe.zrem(keys.warm_key(model), worker_id)


async def deregister_async(client: Any, worker_id: str, models: list[str]) -> None:
    pipe = client.pipeline(transaction=True)
    deregister_commands(pipe, worker_id, models)
    await pipe.execute()


def decode_worker(worker_id: str, raw: dict[Any, Any], score: float, ttl: float) -> dict[str, Any]:
    """A worker as the API shows it; ``alive`` is false once its hash has expired."""
    h = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    if not h:
        return {"id": worker_id, "alive": False, "last_seen": score, "age": round(time.time() - score, 1)}
    last_seen = float(h.get("last_seen", score))
    return {
        "id": worker_id,
        "alive": time.time() - last_seen <= ttl,
        "host": h.get("host"),
        "pid": int(h.get("pid", 0)),
        "version": h.get("version"),
        "ollama_url": h.get("ollama_url"),
        "state": h.get("state"),
        "healthy": h.get("healthy") == "1",
        "models": json.loads(h.get("models", "[]")),
        "loaded": json.loads(h.get("loaded", "[]")),
        "running": json.loads(h.get("running", "[]")),
        "backend": h.get("backend", "ollama"),
        "slots_total": int(h.get("slots_total", 0)),
        "max_loaded_models": int(h.get("max_loaded_models", 0)),
        "weight": float(h.get("weight", 1.0)),
        "slots_busy": int(h.get("slots_busy", 0)),
        "cpu_percent": float(h.get("cpu_percent", 0)),
        "ram_used": int(h.get("ram_used", 0)),
        "ram_total": int(h.get("ram_total", 0)),
        "gpu": json.loads(h.get("gpu", "[]")),
        "tags": json.loads(h.get("tags", "[]")),
        "ps": json.loads(h.get("ps", "[]")),
        "load_seconds": json.loads(h.get("load_seconds", "{}")),
        "started_at": float(h.get("started_at", 0)),
        "last_seen": last_seen,
        "age": round(time.time() - last_seen, 1),
    }


async def list_workers(r: Any, ttl: float) -> list[dict[str, Any]]:
    """Every worker in the index, as ``decode_worker`` gives it (two round trips whatever the fleet's size)."""
    entries = await r.zrange(keys.WORKERS, 0, -1, withscores=True)
    pipe = r.pipeline(transaction=False)
    for worker_id, _score in entries:
        pipe.hgetall(keys.worker_key(worker_id.decode()))
    hashes = await pipe.execute() if entries else []
    return [
        decode_worker(w.decode(), raw, score, ttl) for (w, score), raw in zip(entries, hashes, strict=True)
    ]
