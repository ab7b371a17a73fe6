"""The OpenAI-compatible flavour of the simulator (``corral simulate --flavor openai``): what vLLM, llama.cpp's
server or LM Studio answer, with the performance model and the deterministic replies of the Ollama flavour.

``GET /v1/models``, ``POST /v1/chat/completions``, ``/v1/completions`` (Server-Sent Events ending in
``data: [DONE]``, a usage chunk when ``stream_options.include_usage``; tool calls streamed in fragments),
``/v1/embeddings``, OpenAI error objects, ``/_sim/stats``. ``require_token`` (either flavour) answers 401 unless
``Authorization: Bearer <token>``. Like the rest of this package it imports nothing of Corral.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .app import guard, stats_route
from .generation import Generation
from .model import ApiError, Loaded, SimConfig, Simulator, embedding_of

ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    503: "ServiceUnavailable",
}


def openai_error(status: int, message: str) -> JSONResponse:
    kind = ERROR_TYPES.get(status, "InternalServerError")
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status)


def text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content or "")


async def read_openai_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise ApiError(400, "a JSON object with a model is required")
    return body


def ollama_body(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    """The Ollama-shaped request the shared ``Generation`` reads."""
    out: dict[str, Any] = {"model": body["model"], "tools": body.get("tools") or []}
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "messages must be a non-empty list")
        out["messages"] = [{"role": m.get("role"), "content": text_of(m.get("content"))} for m in messages]
    else:
        out["prompt"] = text_of(body.get("prompt"))
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if not chat and "max_tokens" not in body:
        max_tokens = 16  # /v1/completions' default (OpenAI's, vLLM's, llama.cpp's); null asks for no limit
    if isinstance(max_tokens, int):
        out["options"] = {"num_predict": max_tokens}
    return out


class Frames:
    """OpenAI stream objects for one generation."""

    def __init__(self, gen: Generation, chat: bool) -> None:
        self.gen, self.chat = gen, chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-sim{int(time.time() * 1e6)}"

    def frame(self, choice: dict[str, Any] | None, usage: dict[str, int] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                               "created": int(time.time()), "model": self.gen.body["model"],
                               "choices": [choice] if choice else []}  # fmt: skip
        if usage is not None:
            out["usage"] = usage
        return out

    def text(self, text: str, reason: str | None = None) -> dict[str, Any]:
        if self.chat:
            delta = {"role": "assistant", "content": text} if text or reason is None else {}
            return self.frame({"index": 0, "delta": delta, "finish_reason": reason})
        return self.frame({"index": 0, "text": text, "logprobs": None, "finish_reason": reason})

    def tool_call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        """One call in two fragments (name, then arguments), the way vLLM streams them."""
        fn, index = call["function"], call["function"]["index"]
        head = {"index": index, "id": call["id"], "type": "function",
                "function": {"name": fn["name"], "arguments": ""}}  # fmt: skip
        tail = {"index": index, "function": {"arguments": json.dumps(fn["arguments"])}}
        return [self.frame({"index": 0, "delta": {"tool_calls": [part]}, "finish_reason": None})
                for part in (head, tail)]  # fmt: skip

    def reason(self, final: dict[str, Any]) -> str:
        if self.gen.tool_call and self.chat:
            return "tool_calls"
        return "length" if final.get("done_reason") == "length" else "stop"

    @staticmethod
    def usage(final: dict[str, Any]) -> dict[str, int]:
        prompt, completion = int(final.get("prompt_eval_count", 0)), int(final.get("eval_count", 0))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def sse(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


class OpenAIFront:
    """An OpenAI-compatible server's routes over one ``Simulator``."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.sim = Simulator(config)

    async def models(self, request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "corral-sim"} for name in self.sim.disk
        ]
        return JSONResponse({"object": "list", "data": data})

    def spec_of(self, name: str, kind: str) -> Any:
        try:
            return self.sim.spec(name, kind)
        except ApiError as exc:
            if exc.status == 404:
                raise ApiError(404, f"The model `{name}` does not exist.") from None
            raise

    async def complete(self, request: Request, chat: bool) -> Response:
        body = await read_openai_body(request)
        spec = self.spec_of(body["model"], "chat" if chat else "generate")
        gen = Generation(self.sim, spec, ollama_body(body, chat), chat)
        item = await self.sim.acquire(spec, self.config.keep_alive)
        gen.load_duration = time.monotonic() - gen.started
        self.sim.stats["requests"] += 1
        frames = Frames(gen, chat)
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self.stream(frames, item, usage), media_type="text/event-stream")
        return await self.collect(frames, item)

    async def stream(self, frames: Frames, item: Loaded, include_usage: bool) -> AsyncIterator[bytes]:
        with self.sim.serving(item, self.config.keep_alive):
            async for chunk in frames.gen.stream():
                if chunk["done"]:
                    yield sse(frames.text("", frames.reason(chunk)))
                    if include_usage:
                        yield sse(frames.frame(None, frames.usage(chunk)))
                    yield b"data: [DONE]\n\n"
                    break
                calls = (chunk.get("message") or {}).get("tool_calls") or []
                for frame in [f for call in calls for f in frames.tool_call(call)]:
                    yield sse(frame)
                text = chunk["message"]["content"] if frames.chat else chunk["response"]
                if text:
                    yield sse(frames.text(text))

    async def collect(self, frames: Frames, item: Loaded) -> Response:
        parts: list[str] = []
        try:
            async for chunk in frames.gen.stream():
                if chunk["done"]:
                    self.sim.stats["completed"] += 1
                    text, reason = "".join(parts), frames.reason(chunk)
                    choice: dict[str, Any] = {"index": 0, "finish_reason": reason}
                    if frames.chat:
                        choice["message"] = {"role": "assistant", "content": text}
                    else:
                        choice["text"] = text
                    out = frames.frame(choice, frames.usage(chunk))
                    out["object"] = "chat.completion" if frames.chat else "text_completion"
                    return JSONResponse(out)
                parts.append(chunk["message"]["content"] if frames.chat else chunk["response"])
        finally:
            self.sim.release(item, self.config.keep_alive)
        raise AssertionError("unreachable")

    async def chat(self, request: Request) -> Response:
        return await self.complete(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self.complete(request, chat=False)

    async def embeddings(self, request: Request) -> Response:
        body = await read_openai_body(request)
        spec = self.spec_of(body["model"], "embed")
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        item = await self.sim.acquire(spec, self.config.keep_alive)
        try:
            await self.sim.sleep(spec.ttft)
        finally:
            self.sim.release(item, self.config.keep_alive)
        dims = int(body.get("dimensions") or spec.dims)
        data = [{"object": "embedding", "index": i, "embedding": embedding_of(text, spec.dims)[:dims]}
                for i, text in enumerate(inputs)]  # fmt: skip
        tokens = sum(len(t.split()) for t in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": body["model"], "usage": usage})


def build_openai_app(config: SimConfig) -> Starlette:
    front = OpenAIFront(config)
    stats = stats_route(front.sim)

    def guarded(handler: Any) -> Any:
        return guard(handler, openai_error)

    routes = [
        Route("/v1/models", guarded(front.models), methods=["GET"]),
        Route("/v1/chat/completions", guarded(front.chat), methods=["POST"]),
        Route("/v1/completions", guarded(front.completions), methods=["POST"]),
        Route("/v1/embeddings", guarded(front.embeddings), methods=["POST"]),
        Route("/_sim/stats", stats, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.sim = front.sim
    return app


def require_token(app: ASGIApp, token: str, flavor: str) -> ASGIApp:
    """Answer 401 (in the flavour's error shape) to any request without ``Authorization: Bearer <token>``;
    ``/_sim/stats`` stays open for the tests."""
    expected = f"Bearer {token}".encode()

    async def guard(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/_sim/stats":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if given != expected:
                message = "Invalid API key" if given else "Missing bearer token"
                if flavor == "openai":
                    response: Response = openai_error(401, message)
                else:
                    response = JSONResponse({"error": message}, 401)
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return guard
