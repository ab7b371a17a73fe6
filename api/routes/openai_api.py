"""OpenAI-compatible API: chat completions, completions, embeddings, models — through the queues.

Errors are OpenAI's: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from corral.common.errors import CorralError, InvalidRequest, ModelNotFound
from corral.common.names import normalise_model

from ..deps import RedisDep, SettingsDep, get_principal, services
from ..errors import retry_headers, status_of
from ..fastlane import FastRouter
from ..sse import sse_event
from ..streaming import LeanStream
from ..wire import (
    chat_chunk,
    chat_completion,
    finish_reason,
    openai_chat_job,
    openai_completion_job,
    openai_error,
    openai_tool_calls,
    parse_json_object,
    text_completion,
    usage,
)
from .dropin import events_of, failure_message, fleet_models, outcome, retry_message, submit

router = FastRouter(prefix="/v1", tags=["openai"])


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(openai_error(status, message), status_code=status, headers=headers)


async def chat_stream(
    job_id: str, model: str, events: AsyncIterator[dict[str, Any]], with_usage: bool
) -> AsyncIterator[bytes]:
    yield sse_event(chat_chunk(job_id, model, {"role": "assistant", "content": ""}, None))
    sent, called = False, False
    async for event in events:
        if event["type"] == "chunk":
            sent = True
            delta: dict[str, Any] = {"content": event.get("text", "")}
            if event.get("thinking"):
                delta["reasoning"] = event["thinking"]
            if event.get("tool_calls"):
                called = True
                delta["tool_calls"] = openai_tool_calls(event["tool_calls"])
            yield sse_event(chat_chunk(job_id, model, delta, None))
        elif event["type"] == "retry" and sent:
            yield sse_event(openai_error(500, retry_message(event, job_id)))
            break
        elif event["type"] == "done":
            final = event.get("final") or {}
            yield sse_event(chat_chunk(job_id, model, {}, finish_reason(final, called)))
            if with_usage:
                yield sse_event({**chat_chunk(job_id, model, {}, None), "choices": [], "usage": usage(final)})
            break
        elif event["type"] in ("error", "cancelled"):
            yield sse_event(openai_error(500, failure_message(event, job_id)))
            break
    yield sse_event("[DONE]")


async def completion_stream(
    job_id: str, model: str, events: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[bytes]:
    sent = False
    async for event in events:
        if event["type"] == "chunk":
            sent = True
            yield sse_event(text_completion(job_id, model, event.get("text", ""), None, stream=True))
        elif event["type"] == "retry" and sent:
            yield sse_event(openai_error(500, retry_message(event, job_id)))
            break
        elif event["type"] == "done":
            yield sse_event(text_completion(job_id, model, "", event.get("final") or {}, stream=True))
            break
        elif event["type"] in ("error", "cancelled"):
            yield sse_event(openai_error(500, failure_message(event, job_id)))
            break
    yield sse_event("[DONE]")


Streamer = Callable[[str, str, AsyncIterator[dict[str, Any]], dict[str, Any]], AsyncIterator[bytes]]
Answer = Callable[[str, str, dict[str, Any]], dict[str, Any]]


async def serve(request: Request, translate: Callable[[dict[str, Any]], dict[str, Any]], streamer: Streamer,
                answer: Answer) -> Response:  # fmt: skip
    """Submit the translated body; stream with ``streamer`` or wait and answer with ``answer``."""
    store, settings, client, hub = services(request)
    try:
        body = parse_json_object(await request.body())
        submitted = await submit(
            store, settings, hub, translate(body), await get_principal(request), request.headers
        )
    except CorralError as exc:
        return error(status_of(exc), exc.message, retry_headers(exc))
    model = str(body["model"])
    if body.get("stream"):
        events = events_of(client, hub, submitted)
        return LeanStream(streamer(submitted.id, model, events, body), media_type="text/event-stream")
    last, result = await outcome(client, hub, submitted)
    if last.get("type") != "done":
        return error(500, failure_message(last, submitted.id))
    return JSONResponse(answer(submitted.id, model, result))


def chat_streamer(
    job_id: str, model: str, events: AsyncIterator[dict[str, Any]], body: dict[str, Any]
) -> AsyncIterator[bytes]:
    options = body.get("stream_options")
    with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    return chat_stream(job_id, model, events, with_usage)


def completion_streamer(
    job_id: str, model: str, events: AsyncIterator[dict[str, Any]], body: dict[str, Any]
) -> AsyncIterator[bytes]:
    return completion_stream(job_id, model, events)


def completion_answer(job_id: str, model: str, result: dict[str, Any]) -> dict[str, Any]:
    return text_completion(job_id, model, result.get("text", ""), result.get("final") or {}, stream=False)


@router.fast_post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions; ``stream`` defaults to false."""
    return await serve(request, openai_chat_job, chat_streamer, chat_completion)


@router.fast_post("/completions")
async def completions(request: Request) -> Response:
    """OpenAI (legacy) completions; ``stream`` defaults to false."""
    return await serve(request, openai_completion_job, completion_streamer, completion_answer)


def embed_job(body: dict[str, Any]) -> dict[str, Any]:
    model, given = body.get("model"), body.get("input")
    if not model or not isinstance(model, str):
        raise InvalidRequest("model is required")
    if isinstance(given, str):
        given = [given]
    if not isinstance(given, list) or not given or not all(isinstance(x, str) for x in given):
        raise InvalidRequest("input must be a string or a list of strings")
    job: dict[str, Any] = {"model": model, "kind": "embed", "input": given}
    if body.get("dimensions"):
        job["dimensions"] = body["dimensions"]
    return job


@router.post("/embeddings")
async def embeddings(request: Request) -> Response:
    """OpenAI embeddings."""
    store, settings, client, hub = services(request)
    try:
        body = parse_json_object(await request.body())
        submitted = await submit(
            store, settings, hub, embed_job(body), await get_principal(request), request.headers
        )
    except CorralError as exc:
        return error(status_of(exc), exc.message, retry_headers(exc))
    last, result = await outcome(client, hub, submitted)
    if last.get("type") != "done":
        return error(500, failure_message(last, submitted.id))
    vectors = result.get("embeddings") or []
    tokens = int((result.get("final") or {}).get("prompt_eval_count") or 0)
    return JSONResponse({
        "object": "list",
        "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })  # fmt: skip


def model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "corral"}


@router.get("/models")
async def models(client: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    """The models of the live fleet."""
    return {"object": "list", "data": [model_entry(n) for n in await fleet_models(client, settings)]}


@router.get("/models/{model:path}")
async def model(model: str, client: RedisDep, settings: SettingsDep) -> Response:
    try:
        name = normalise_model(model)
    except CorralError:
        name = model
    if name not in await fleet_models(client, settings):
        return error(404, str(ModelNotFound(model).message))
    return JSONResponse(model_entry(name))
