"""``/models/…``: the model operations (pull, delete, copy, create, load) with their
placement and live progress (docs/models.md); ``GET /models`` (which host has what) is in ``fleet``. Writes need
an admin key (``api.apikeys.required_scope``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from corral.common import jsonfast, modelops
from corral.common.errors import InvalidRequest

from .. import modelops as ops
from ..deps import PrincipalDep, RedisDep, SettingsDep
from ..streaming import LeanStream
from ..wire import parse_json_object

router = APIRouter(prefix="/models", tags=["models"])
NDJSON = "application/x-ndjson"
STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


async def run(request: Request, kind: str, principal: Any, client: Any, settings: Any) -> Response:
    body = parse_json_object(await request.body())
    op = await ops.start_from_body(client, settings, kind, body, principal.id)
    if body.get("stream") is True:
        return LeanStream(
            event_lines(client, op["id"]), media_type=NDJSON, headers={"X-Corral-Operation": op["id"]}
        )
    if body.get("wait") is True:
        await ops.wait(client, op["id"])
        op = await ops.get(client, op["id"])
    return JSONResponse(op, status_code=202 if op["status"] not in modelops.TERMINAL else 200)


async def event_lines(client: Any, op_id: str, after: str = "0-0") -> AsyncIterator[bytes]:
    async for event in ops.follow(client, op_id, after):
        yield jsonfast.dumpb(event) + b"\n"


@router.post("/pull")
async def pull(
    request: Request, principal: PrincipalDep, client: RedisDep, settings: SettingsDep
) -> Response:
    """Pull ``model`` onto ``hosts``, ``all`` hosts or ``replicas`` of them (default ``CORRAL_PULL_REPLICAS``):
    202 with the operation; ``"stream": true`` streams its events (NDJSON), ``"wait": true`` answers at its end."""
    return await run(request, "pull", principal, client, settings)


@router.post("/delete")
async def delete(
    request: Request, principal: PrincipalDep, client: RedisDep, settings: SettingsDep
) -> Response:
    """Delete ``model`` from every host that has it (or the ``hosts`` named); running jobs of it finish first."""
    return await run(request, "delete", principal, client, settings)


@router.post("/copy")
async def copy(
    request: Request, principal: PrincipalDep, client: RedisDep, settings: SettingsDep
) -> Response:
    """Copy ``source`` to ``destination`` on every host that has the source (or the ``hosts`` named)."""
    return await run(request, "copy", principal, client, settings)


@router.post("/create")
async def create(
    request: Request, principal: PrincipalDep, client: RedisDep, settings: SettingsDep
) -> Response:
    """Ollama's create, its body forwarded as-is, on hosts placed like a pull (those with ``from`` first)."""
    return await run(request, "create", principal, client, settings)


@router.post("/load")
async def load(
    request: Request, principal: PrincipalDep, client: RedisDep, settings: SettingsDep
) -> Response:
    """Warm ``model`` on ``replicas`` hosts that have it (default 1; ``keep_alive`` as Ollama takes it)."""
    return await run(request, "load", principal, client, settings)


@router.get("/ops")
async def list_ops(client: RedisDep, active: bool = False, limit: int = 50) -> dict[str, Any]:
    """The newest model operations (``active``: only those not ended)."""
    return {"operations": await modelops.recent_ops(client, max(1, min(limit, 500)), active_only=active)}


@router.get("/ops/{op_id}")
async def get_op(op_id: str, client: RedisDep) -> dict[str, Any]:
    return await ops.get(client, op_id)


@router.get("/ops/{op_id}/events")
async def op_events(op_id: str, client: RedisDep, after: str = "0-0") -> Response:
    """The operation's events as NDJSON from stream id ``after``, live until it ends."""
    if not STREAM_ID.fullmatch(after):
        raise InvalidRequest("after: a stream id such as 1700000000000-0")
    await ops.get(client, op_id)
    return LeanStream(event_lines(client, op_id, after), media_type=NDJSON)


@router.delete("/ops/{op_id}")
async def cancel_op(op_id: str, client: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    """Cancel: queued hosts end at once, running ones stop their download (Ollama keeps what it has)."""
    op = await modelops.cancel_op(client, op_id, settings.result_ttl)
    if op is None:
        raise ops.OperationNotFound(op_id)
    return op
