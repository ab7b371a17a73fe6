"""The simulator's Ollama front end: Ollama's HTTP wire format over the performance model in ``model``.

It speaks what a Corral worker and Ollama's own clients use: NDJSON streaming ``/api/generate`` and ``/api/chat``,
``/api/embed``, ``/api/embeddings``, ``/api/tags``, ``/api/ps``, ``/api/show``, ``/api/version``, ``/api/pull``,
``/api/delete``, ``/api/copy``, ``/api/create`` (``manage``), ``GET|HEAD /`` and Ollama's error bodies, plus
``GET /sim/stats`` (counters: requests, model loads and unloads, what is loaded) for tests and benchmarks.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .generation import Generation, details, digest, ns
from .manage import Downloads, disk_stats, read_json
from .model import (
    VERSION,
    ApiError,
    Loaded,
    ModelSpec,
    SimConfig,
    Simulator,
    embedding_of,
    normalise,
    parse_keep_alive,
)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def guard(handler: Any, error_response: Any) -> Any:
    """``handler`` with an ``ApiError`` answered as ``error_response(status, message)`` (each API's shape)."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except ApiError as exc:
            return error_response(exc.status, exc.message)  # type: ignore[no-any-return]

    return run


async def read_body(request: Request) -> dict[str, Any]:
    """A generate/chat/embed body: a JSON object naming its model."""
    body = await read_json(request)
    if not (body.get("model") or body.get("name")):
        raise ApiError(400, "model is required")
    return body


def stats_route(sim: Simulator) -> Any:
    """``GET /sim/stats``: the performance model's counters (loads, unloads, requests…), what is loaded, and the
    latest loads and evictions (``history``: ``[seconds ago, "load" | "evict", model]``, oldest first) — what
    showed a host cycling through more models than it holds."""

    async def stats(request: Request) -> Response:
        now = time.monotonic()
        history = [[round(now - t, 3), kind, name] for t, kind, name in sim.history]
        return JSONResponse(
            {
                **sim.stats,
                "loaded": sorted(sim.loaded),
                "disk": sorted(sim.disk),
                "history": history,
                **disk_stats(sim),
            }
        )

    return stats


class OllamaFront:
    """Ollama's routes over one ``Simulator``: each handler answers as Ollama does."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.sim = Simulator(config)

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def tags(self, request: Request) -> Response:
        models = [
            {
                "name": spec.name if ":" in spec.name else spec.name + ":latest",
                "model": spec.name if ":" in spec.name else spec.name + ":latest",
                "modified_at": "2026-01-01T00:00:00Z",
                "size": spec.size,
                "digest": digest(spec),
                "details": details(spec),
            }
            for spec in self.sim.disk.values()
        ]
        return JSONResponse({"models": models})

    async def ps(self, request: Request) -> Response:
        self.sim._expire()
        out = []
        for name, item in self.sim.loaded.items():
            remaining = item.expires_at - time.monotonic()
            expires = datetime.now(UTC) + timedelta(seconds=min(remaining, 10 * 365 * 86400))
            out.append(
                {
                    "name": name,
                    "model": name,
                    "size": item.spec.size,
                    "digest": digest(item.spec),
                    "details": details(item.spec),
                    "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "size_vram": item.spec.size,
                    "context_length": 4096,
                }
            )
        return JSONResponse({"models": out})

    async def show(self, request: Request) -> Response:
        body = await read_body(request)
        spec = self.sim.spec(body.get("model") or body["name"], kind="show")
        return JSONResponse(
            {
                "license": "simulated",
                "modelfile": f"FROM {spec.name}",
                "parameters": "num_ctx 4096",
                "template": "{{ .Prompt }}",
                "system": "",
                "details": details(spec),
                "model_info": {"general.architecture": spec.family, f"{spec.family}.context_length": 4096},
                "capabilities": ["embedding"] if spec.embedding else ["completion", "tools"],
                "modified_at": "2026-01-01T00:00:00Z",
            }
        )

    async def generate(self, request: Request, chat: bool = False) -> Response:
        body = await read_body(request)
        spec = self.sim.spec(body["model"], kind="chat" if chat else "generate")
        keep_alive = parse_keep_alive(body.get("keep_alive"), self.config.keep_alive)
        gen = Generation(self.sim, spec, body, chat)
        empty = not (body.get("messages") if chat else body.get("prompt"))
        if empty:
            return await self.load_only(spec, gen, keep_alive)
        item = await self.sim.acquire(spec, keep_alive)
        gen.load_duration = time.monotonic() - gen.started
        self.sim.stats["requests"] += 1
        if body.get("stream") is False:
            return await self.collect(gen, item, keep_alive)
        return StreamingResponse(self.run_stream(gen, item, keep_alive), media_type="application/x-ndjson")

    async def load_only(self, spec: ModelSpec, gen: Generation, keep_alive: float) -> Response:
        name = normalise(spec.name)
        if keep_alive == 0:
            if self.sim.loaded.pop(name, None) is not None:
                self.sim.stats["unloads"] += 1
            gen.done_reason = "unload"
        else:
            item = await self.sim.acquire(spec, keep_alive)
            self.sim.release(item, keep_alive)
            gen.done_reason = "load"
        gen.words = []
        final = gen.final()
        for k in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                  "eval_duration", "context"):  # fmt: skip
            final.pop(k, None)
        return JSONResponse(final)

    async def collect(self, gen: Generation, item: Loaded, keep_alive: float) -> Response:
        self.sim.stats["active"] += 1
        parts: list[str] = []
        tool_calls = None
        try:
            async for chunk in gen.stream():
                if chunk["done"]:
                    if gen.chat:
                        chunk["message"]["content"] = "".join(parts)
                        if tool_calls:
                            chunk["message"]["tool_calls"] = tool_calls
                    else:
                        chunk["response"] = "".join(parts)
                    self.sim.stats["completed"] += 1
                    return JSONResponse(chunk)
                if gen.chat:
                    parts.append(chunk["message"]["content"])
                    tool_calls = chunk["message"].get("tool_calls") or tool_calls
                else:
                    parts.append(chunk["response"])
        finally:
            self.sim.stats["active"] -= 1
            self.sim.release(item, keep_alive)
        raise AssertionError("unreachable")

    async def run_stream(self, gen: Generation, item: Loaded, keep_alive: float) -> AsyncIterator[bytes]:
        with self.sim.serving(item, keep_alive):
            async for chunk in gen.stream():
                yield (json.dumps(chunk) + "\n").encode()

    async def chat(self, request: Request) -> Response:
        return await self.generate(request, chat=True)

    async def embed(self, request: Request) -> Response:
        body = await read_body(request)
        spec = self.sim.spec(body["model"], kind="embed")
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        keep_alive = parse_keep_alive(body.get("keep_alive"), self.config.keep_alive)
        started = time.monotonic()
        item = await self.sim.acquire(spec, keep_alive)
        try:
            await self.sim.sleep(self.sim.first_token_delay(spec))
        finally:
            self.sim.release(item, keep_alive)
        dims = int(body.get("dimensions") or spec.dims)
        vectors = [embedding_of(text, spec.dims)[:dims] for text in inputs]
        vectors = [[x / (math.sqrt(sum(y * y for y in v)) or 1) for x in v] for v in vectors]
        return JSONResponse(
            {
                "model": body["model"],
                "embeddings": vectors,
                "total_duration": ns(time.monotonic() - started),
                "load_duration": 0,
                "prompt_eval_count": sum(len(t.split()) for t in inputs),
            }
        )

    async def embeddings(self, request: Request) -> Response:
        body = await read_body(request)
        spec = self.sim.spec(body["model"], kind="embed")
        return JSONResponse({"embedding": embedding_of(body.get("prompt") or "", spec.dims)})


def build_app(config: SimConfig) -> Starlette:
    front = OllamaFront(config)
    downloads = Downloads(front.sim)
    stats = stats_route(front.sim)

    def guarded(handler: Any) -> Any:
        return guard(handler, error)

    routes = [
        Route("/", front.root, methods=["GET", "HEAD"]),
        Route("/api/version", guarded(front.version), methods=["GET"]),
        Route("/api/tags", guarded(front.tags), methods=["GET"]),
        Route("/api/ps", guarded(front.ps), methods=["GET"]),
        Route("/api/show", guarded(front.show), methods=["POST"]),
        Route("/api/generate", guarded(front.generate), methods=["POST"]),
        Route("/api/chat", guarded(front.chat), methods=["POST"]),
        Route("/api/embed", guarded(front.embed), methods=["POST"]),
        Route("/api/embeddings", guarded(front.embeddings), methods=["POST"]),
        Route("/api/pull", guarded(downloads.pull), methods=["POST"]),
        Route("/api/delete", guarded(downloads.delete), methods=["DELETE"]),
        Route("/api/copy", guarded(downloads.copy), methods=["POST"]),
        Route("/api/create", guarded(downloads.create), methods=["POST"]),
        Route("/sim/stats", stats, methods=["GET"]),
        Route("/_sim/stats", stats, methods=["GET"]),  # the old name
    ]
    app = Starlette(routes=routes)
    app.state.sim = front.sim
    return app
