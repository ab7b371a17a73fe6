"""Ollama's own API, wire-compatible: point any Ollama client at Corral. Every generation goes through the queues.

Errors are Ollama's: ``{"error": "..."}`` with its statuses; after a stream has begun, one error line ends it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from corral.common import jsonfast
from corral.common.errors import CorralError, ModelNotFound, QueueFull

from ..deps import RedisDep, SettingsDep, get_principal, services
from ..errors import retry_headers, status_of
from ..fastlane import FastRouter
from ..streaming import LeanStream
from ..wire import ollama_chunk, ollama_final, ollama_job, parse_json_object
from .dropin import events_of, failure_message, fleet_loaded, fleet_models, outcome, retry_message, submit

router = FastRouter(tags=["ollama"])
OLLAMA_VERSION = "0.12.0"
NDJSON = "application/x-ndjson"


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def line(obj: dict[str, Any]) -> bytes:
    return jsonfast.dumpb(obj) + b"\n"


def not_found(kind: str, name: str) -> str:
    if kind == "embed":
        return f'model "{name}" not found, try pulling it first'
    return f"model '{name}' not found"


async def stream_lines(
    kind: str, model: str, job_id: str, events: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[bytes]:
    sent = False
    async for event in events:
        kind_of = event["type"]
        if kind_of == "chunk":
            sent = True
            yield line(ollama_chunk(event, model))
        elif kind_of == "retry" and sent:
            yield line({"error": retry_message(event, job_id)})
            return
        elif kind_of == "done":
            yield line(ollama_final(kind, model, event.get("final") or {}, None))
            return
        elif kind_of in ("error", "cancelled"):
            yield line({"error": failure_message(event, job_id)})
            return


async def run(kind: str, request: Request) -> Response:
    """Submit an Ollama request of ``kind`` as a job; answer in Ollama's shape, streamed or whole."""
    store, settings, client, hub = services(request)
    name = ""
    try:
        body = parse_json_object(await request.body())
        name = str(body.get("model") or body.get("name") or "")
        job = ollama_job(kind, body)
        submitted = await submit(store, settings, hub, job, await get_principal(request), request.headers)
    except ModelNotFound:
        return error(404, not_found(kind, name))
    except QueueFull:
        return error(503, "server busy, please try again.  maximum pending requests exceeded")
    except CorralError as exc:
        return error(status_of(exc), exc.message, retry_headers(exc))
    headers = {"X-Corral-Job": submitted.id}
    if kind in ("generate", "chat") and body.get("stream", True) is not False:
        lines = stream_lines(kind, name, submitted.id, events_of(client, hub, submitted))
        return LeanStream(lines, media_type=NDJSON, headers=headers)
    last, result = await outcome(client, hub, submitted)
    if last.get("type") != "done":
        return error(500, failure_message(last, submitted.id))
    final = result.get("final") or {}
    if kind == "embed":
        answer = {"model": name, "embeddings": result.get("embeddings") or [], **{
            k: final[k] for k in ("total_duration", "load_duration", "prompt_eval_count") if k in final}}  # fmt: skip
        return JSONResponse(answer, headers=headers)
    return JSONResponse(ollama_final(kind, name, final, result), headers=headers)


@router.fast_post("/api/generate")
async def generate(request: Request) -> Response:
    """Ollama's generate: streamed NDJSON unless ``"stream": false``."""
    return await run("generate", request)


@router.fast_post("/api/chat")
async def chat(request: Request) -> Response:
    """Ollama's chat: streamed NDJSON unless ``"stream": false``."""
    return await run("chat", request)


@router.post("/api/embed")
async def embed(request: Request) -> Response:
    """Ollama's embed: ``{"model", "embeddings": [[…]], …}``."""
    return await run("embed", request)


@router.post("/api/embeddings")
async def embeddings(request: Request) -> Response:
    """Ollama's legacy embeddings: ``{"embedding": […]}`` for ``prompt``."""
    response = await run("embed", request)
    if response.status_code != 200 or not isinstance(response, JSONResponse):
        return response
    vectors = json.loads(bytes(response.body)).get("embeddings") or [[]]
    return JSONResponse({"embedding": vectors[0]})


@router.post("/api/show")
async def show(request: Request) -> Response:
    """Answered by the Ollama of a worker that has the model (a ``show`` job through its queue)."""
    store, settings, client, hub = services(request)
    name = ""
    try:
        body = parse_json_object(await request.body())
        name = str(body.get("model") or body.get("name") or "")
        submitted = await submit(
            store, settings, hub, {"model": name, "kind": "show"}, await get_principal(request)
        )
    except ModelNotFound:
        return error(404, not_found("show", name))
    except CorralError as exc:
        return error(status_of(exc), exc.message, retry_headers(exc))
    last, result = await outcome(client, hub, submitted)
    if last.get("type") != "done":
        return error(500, failure_message(last, submitted.id))
    return JSONResponse(result.get("show") or {})


@router.get("/api/tags")
async def tags(client: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    """The models of the whole live fleet, each once."""
    return {"models": list((await fleet_models(client, settings)).values())}


@router.get("/api/ps")
async def ps(client: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    """The models loaded on any live host."""
    return {"models": await fleet_loaded(client, settings)}


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_VERSION}


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root() -> PlainTextResponse:
    return PlainTextResponse("Ollama is running")
