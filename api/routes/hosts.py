"""``/hosts`` (admin scope): engines registered by URL, served by ``corral fleet`` processes (docs/backends.md).

The API never talks to an engine: a connection test is asked of the fleet process serving the host (over
``corral:hosts:changed``) and its answer read back from Redis. No answer here ever holds a host's token, its
headers' values or a password in its URL.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fastapi import APIRouter

from corral.common import keys
from corral.common.errors import BackendUnavailable, HostNotFound
from corral.common.hosts import HostSpec, public_hosts, register_hosts, remove_host
from corral.common.registry import decode_worker

from ..deps import RedisDep, SettingsDep

router = APIRouter(prefix="/hosts", tags=["hosts"])
TEST_TIMEOUT = 30  # seconds a connection test may take (a cold model's one-token generation included)


def health(raw: dict[Any, Any], ttl: float, served_by: bytes | None) -> dict[str, Any]:
    """A host's health from its worker's heartbeat: ``serving``, ``unhealthy`` (the engine does not answer),
    ``draining``, or ``waiting`` (no heartbeat yet: no fleet process serves it, or its worker is starting)."""
    worker = decode_worker("", raw, time.time(), ttl)
    if not raw or not worker["alive"]:
        status = "waiting"
    elif worker["state"] != "active":
        status = "draining"
    else:
        status = "serving" if worker["healthy"] else "unhealthy"
    out = {"status": status, "served_by": served_by.decode() if served_by else None}
    if raw:
        out |= {k: worker[k] for k in ("healthy", "models", "loaded", "slots_busy", "slots_total", "age")}
    return out


async def with_health(client: Any, hosts: list[dict[str, Any]], ttl: float) -> list[dict[str, Any]]:
    pipe = client.pipeline(transaction=False)
    for host in hosts:
        pipe.hgetall(keys.worker_key(host["name"]))
        pipe.get(keys.host_lease_key(host["name"]))
    replies = await pipe.execute() if hosts else []
    for index, host in enumerate(hosts):
        host["health"] = health(replies[2 * index], ttl, replies[2 * index + 1])
    return hosts


async def one_host(client: Any, name: str, ttl: float) -> dict[str, Any]:
    raw = await client.hget(keys.HOSTS, name)
    if raw is None:
        raise HostNotFound(f"host '{name[:128]}' not found", name=name[:128])
    return (await with_health(client, [json.loads(raw)], ttl))[0]


@router.get("")
async def list_hosts(client: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    """Every registered host (no secrets) with its health."""
    return {"hosts": await with_health(client, await public_hosts(client), settings.heartbeat_ttl)}


@router.post("", status_code=201)
async def add_host(spec: HostSpec, client: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    """Register a host (or replace the one of that name): a fleet process starts serving it within seconds."""
    await register_hosts(client, [spec])
    return await one_host(client, spec.name, settings.heartbeat_ttl)


@router.get("/{name}")
async def get_host(name: str, client: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    return await one_host(client, name, settings.heartbeat_ttl)


@router.delete("/{name}", status_code=202)
async def delete_host(name: str, client: RedisDep) -> dict[str, str]:
    """Unregister a host: its fleet process drains its worker (running jobs finish), then stops it."""
    if not await remove_host(client, name):
        raise HostNotFound(f"host '{name[:128]}' not found", name=name[:128])
    return {"name": name, "status": "draining"}


@router.post("/{name}/test")
async def test_host(name: str, client: RedisDep) -> dict[str, Any]:
    """The connection test, run by the fleet process serving the host: reachable, auth, models and a one-token
    generation, each with its time; ``code`` is ``corral worker --check``'s exit code (0: all passed)."""
    if not await client.hexists(keys.HOSTS, name):
        raise HostNotFound(f"host '{name[:128]}' not found", name=name[:128])
    reply = uuid.uuid4().hex
    asked = json.dumps({"test": name, "reply": reply})
    if not await client.publish(keys.HOSTS_CHANNEL, asked):
        raise BackendUnavailable("no fleet process is running: start one with `corral fleet`")
    answer = await client.blpop([keys.host_test_key(reply)], timeout=TEST_TIMEOUT)
    if answer is None:
        raise BackendUnavailable(f"no fleet process answered the test of '{name}' within {TEST_TIMEOUT} s")
    await client.delete(keys.host_test_key(reply))
    result: dict[str, Any] = json.loads(answer[1])
    return result
