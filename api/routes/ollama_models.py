"""Ollama's model management routes, wire-compatible, over the fleet: ``POST /api/pull`` (NDJSON progress summed
over the hosts, or one object with ``"stream": false``), ``DELETE /api/delete``, ``POST /api/copy``,
``POST /api/create`` (forwarded as-is) and ``POST /api/push`` refused. Each is a model operation
(``api.modelops``); placement as in ``/models`` (a pull names no hosts: ``CORRAL_PULL_REPLICAS`` hosts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from corral.common import jsonfast
from corral.common.errors import CorralError

from .. import modelops as ops
from ..deps import get_principal, services
from ..errors import status_of
from ..streaming import LeanStream
from ..wire import parse_json_object

router = APIRouter(tags=["ollama"])
NDJSON = "application/x-ndjson"


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def line(obj: dict[str, Any]) -> bytes:
    return jsonfast.dumpb(obj) + b"\n"


async def start(request: Request, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body and the operation it started (``CorralError`` when it could not)."""
    _store, settings, client, _hub = services(request)
    body = parse_json_object(await request.body())
    principal = await get_principal(request)
    op = await ops.start_from_body(client, settings, kind, body, principal.id)
    return body, op


async def pull_lines(client: Any, op_id: str) -> AsyncIterator[bytes]:
    lines = ops.PullLines()
    async for event in ops.follow(client, op_id):
        if event["type"] in ops.END_EVENTS:
            for item in lines.ending(event):
                yield line(item)
            return
        progress = lines.line(event)
        if progress is not None:
            yield line(progress)


async def status_lines(client: Any, op_id: str) -> AsyncIterator[bytes]:
    """Create: each new status a host reports, then ``success`` or the error."""
    seen: set[str] = set()
    async for event in ops.follow(client, op_id):
        if event["type"] in ops.END_EVENTS:
            yield line(ops.PullLines.ending(event)[-1])
            return
        status = str(event.get("status") or "")
        if event["type"] == "progress" and status not in seen | {"starting", "success"}:
            seen.add(status)
            yield line({"status": status})


async def streamed(request: Request, kind: str) -> Response:
    client = services(request).redis
    try:
        body, op = await start(request, kind)
    except CorralError as exc:
        return error(status_of(exc), exc.message)
    headers = {"X-Corral-Operation": op["id"]}
    if body.get("stream", True) is not False:
        lines = pull_lines if kind == "pull" else status_lines
        return LeanStream(lines(client, op["id"]), media_type=NDJSON, headers=headers)
    last = await ops.wait(client, op["id"])
    if last.get("type") != "done":
        return error(500, ops.PullLines.ending(last)[-1]["error"])
    return JSONResponse({"status": "success"}, headers=headers)


async def whole(request: Request, kind: str) -> Response:
    """Delete and copy: 200 with an empty body at the end, Ollama's error otherwise."""
    client = services(request).redis
    try:
        _body, op = await start(request, kind)
    except CorralError as exc:
        return error(status_of(exc), exc.message)
    last = await ops.wait(client, op["id"])
    if last.get("type") != "done":
        return error(500, ops.PullLines.ending(last)[-1]["error"])
    return Response(status_code=200, headers={"X-Corral-Operation": op["id"]})


@router.post("/api/pull")
async def pull(request: Request) -> Response:
    """Ollama's pull on the fleet: ``hosts``, ``all`` or ``replicas`` may place it (Corral's extension)."""
    return await streamed(request, "pull")


@router.post("/api/create")
async def create(request: Request) -> Response:
    """Ollama's create, the body forwarded as-is to the hosts placed like a pull."""
    return await streamed(request, "create")


@router.delete("/api/delete")
async def delete(request: Request) -> Response:
    """Ollama's delete on every host that has the model; its running jobs finish first."""
    return await whole(request, "delete")


@router.post("/api/copy")
async def copy(request: Request) -> Response:
    """Ollama's copy on every host that has the source."""
    return await whole(request, "copy")


@router.post("/api/push")
async def push(request: Request) -> Response:
    """Refused: a push uploads one host's model to a registry, which a dispatcher cannot choose for you."""
    return error(400, "push is not supported through Corral: run `ollama push` on a host that has the model")
