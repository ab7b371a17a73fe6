"""The OpenAI-compatible backend (vLLM, llama.cpp's server, LM Studio…): Corral's jobs as OpenAI requests, and
the streamed Server-Sent Events back as Corral's Ollama-shaped chunks.

- models: ``GET /v1/models``; every served model counts as loaded (these engines keep what they serve in memory).
- generate: ``POST /v1/completions`` (``prompt``, ``suffix``); with a ``system`` or ``images`` it becomes a chat.
- chat: ``POST /v1/chat/completions``; tool calls streamed in fragments are put together and sent as one chunk.
- embed: ``POST /v1/embeddings``.
- streams ask for ``stream_options.include_usage``; the final chunk carries ``eval_count`` and
  ``prompt_eval_count`` from the usage, ``done_reason`` from ``finish_reason``, and ``total_duration`` /
  ``eval_duration`` measured here. A server that ignores ``include_usage`` (llama-cpp-python's) streams one token
  per chunk: ``eval_count`` is then the chunks counted, and ``prompt_eval_count`` is asked for after the stream
  (promptcount.py). Ollama-only stats (load and prompt-eval durations, ``context``) are absent.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from corral.common import jsonfast

from ..http import Response
from .base import Chunks
from .errors import BackendError, BackendModelMissing, BackendUnavailable
from .pool import Connection, Early, HttpPool
from .promptcount import PromptCounter

OPTIONS = ("temperature", "top_p", "top_k", "min_p", "seed", "stop", "frequency_penalty", "presence_penalty")


def ns_since(start: float) -> int:
    return int((time.monotonic() - start) * 1e9)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- Corral (Ollama-shaped) request → OpenAI request -------------------------------------------------------
def sampling(request: dict[str, Any]) -> dict[str, Any]:
    options = request.get("options") or {}
    out = {name: options[name] for name in OPTIONS if options.get(name) is not None}
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict >= 0:
        out["max_tokens"] = num_predict
    fmt = request.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    if isinstance(request.get("think"), str):
        out["reasoning_effort"] = request["think"]
    return out


def image_part(image: str) -> dict[str, Any]:
    url = image if image.startswith(("data:", "http://", "https://")) else f"data:image/png;base64,{image}"
    return {"type": "image_url", "image_url": {"url": url}}


def openai_message(message: dict[str, Any]) -> dict[str, Any]:
    """An Ollama message → an OpenAI one (images as parts, tool-call arguments as a JSON string)."""
    content: Any = message.get("content") or ""
    if message.get("images"):
        content = [{"type": "text", "text": content}, *(image_part(i) for i in message["images"])]
    out: dict[str, Any] = {"role": message.get("role", "user"), "content": content}
    calls = []
    for index, call in enumerate(message.get("tool_calls") or []):
        fn = call.get("function") or {}
        arguments = fn.get("arguments")
        calls.append({"id": call.get("id") or f"call_{index}", "type": "function",
                      "function": {"name": fn.get("name", ""), "arguments": json.dumps(arguments or {})}})  # fmt: skip
    if calls:
        out["tool_calls"] = calls
    if out["role"] == "tool":
        out["tool_call_id"] = message.get("tool_call_id") or message.get("tool_name") or "call_0"
        if message.get("tool_name"):
            out["name"] = message["tool_name"]
    return out


def chat_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages of a chat job, or of a generate job that needs a chat (a system prompt or images)."""
    if "messages" in request:
        return [openai_message(m) for m in request.get("messages") or []]
    messages = [{"role": "system", "content": request["system"]}] if request.get("system") else []
    user = {"role": "user", "content": request.get("prompt") or "", "images": request.get("images")}
    return [*messages, openai_message(user)]


def openai_request(kind: str, request: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
    """(path, body, chat?) of the streamed OpenAI request for a generate or chat job."""
    body: dict[str, Any] = {"model": request["model"], "stream": True, **sampling(request)}
    body["stream_options"] = {"include_usage": True}
    if kind == "chat" or request.get("system") or request.get("images"):
        body["messages"] = chat_messages(request)
        if request.get("tools"):
            body["tools"] = request["tools"]
        return "/chat/completions", body, True
    body["prompt"] = request.get("prompt") or ""
    # Ollama generates until the model stops; /v1/completions stops at 16 tokens unless told (OpenAI's default,
    # kept by vLLM and llama.cpp's servers): null asks for no limit
    body.setdefault("max_tokens", None)
    if request.get("suffix"):
        body["suffix"] = request["suffix"]
    return "/completions", body, False


# -- OpenAI stream → Corral chunks -------------------------------------------------------------------------
class Translation:
    """Turns one OpenAI stream into Ollama-shaped chunks: text as it comes, tool calls when complete, and a
    final chunk with the usage and the durations measured here."""

    def __init__(self, model: str, chat: bool, as_chat: bool) -> None:
        self.model, self.chat, self.as_chat = model, chat, as_chat
        self.started = time.monotonic()
        self.first_token: float | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.streamed = 0  # token chunks seen: the completion tokens of a server that sends no usage
        self.calls: dict[int, dict[str, Any]] = {}
        self.calls_sent = False

    def chunk(self, text: str, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "created_at": now_rfc3339()}
        if self.chat:
            out["message"] = {"role": "assistant", "content": text, **extra}
        else:
            out["response"] = text
            out.update(extra)
        out["done"] = False
        return out

    def feed(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if data.get("usage"):
            self.usage = data["usage"]
        out = []
        for choice in (data.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            text = str((delta.get("content") if self.as_chat else choice.get("text")) or "")
            thinking = str(delta.get("reasoning_content") or delta.get("reasoning") or "")
            for fragment in delta.get("tool_calls") or []:
                self.add_call(fragment)
            token = "content" in delta if self.as_chat else "text" in choice
            if text or (token and not choice.get("finish_reason")):
                self.streamed += 1
            if text or thinking:
                if self.first_token is None:
                    self.first_token = time.monotonic()
                out.append(self.chunk(text, **({"thinking": thinking} if thinking else {})))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                out += self.tool_call_chunk()
        return out

    def add_call(self, fragment: dict[str, Any]) -> None:
        call = self.calls.setdefault(int(fragment.get("index") or 0), {"id": "", "name": "", "arguments": ""})
        fn = fragment.get("function") or {}
        call["id"] = fragment.get("id") or call["id"]
        call["name"] += fn.get("name") or ""
        call["arguments"] += fn.get("arguments") or ""

    def tool_call_chunk(self) -> list[dict[str, Any]]:
        if not self.calls or self.calls_sent or not self.chat:
            return []
        self.calls_sent = True
        calls = []
        for index, call in sorted(self.calls.items()):
            try:
                arguments = json.loads(call["arguments"] or "{}")
            except ValueError:
                arguments = call["arguments"]
            calls.append({"id": call["id"] or f"call_{index}",
                          "function": {"index": index, "name": call["name"], "arguments": arguments}})  # fmt: skip
        return [self.chunk("", tool_calls=calls)]

    def final(self) -> dict[str, Any]:
        out = self.chunk("")
        out["done"] = True
        out["done_reason"] = "length" if self.finish_reason == "length" else "stop"
        out["total_duration"] = ns_since(self.started)
        if self.usage.get("prompt_tokens") is not None:
            out["prompt_eval_count"] = int(self.usage["prompt_tokens"])
        if self.usage.get("completion_tokens") is not None:
            out["eval_count"] = int(self.usage["completion_tokens"])
        elif self.streamed:
            out["eval_count"] = self.streamed
        if self.first_token is not None:
            out["eval_duration"] = ns_since(self.first_token)
        return out


async def sse_data(response: Response) -> AsyncIterator[dict[str, Any] | None]:
    """The ``data:`` payloads of a Server-Sent Events stream; ``None`` for ``[DONE]``. An error object raises."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            yield None
            return
        data = jsonfast.loads(payload)
        if isinstance(data, dict) and data.get("error"):
            error = data["error"]
            raise BackendError(str(error.get("message") if isinstance(error, dict) else error), -1)
        yield data


async def translated(response: Response, translation: Translation) -> Chunks:
    """The chunks of one stream; the final one after ``[DONE]`` (or after a ``finish_reason`` if the server
    closes the stream without ``[DONE]``)."""
    async for data in sse_data(response):
        if data is None:
            break
        for chunk in translation.feed(data):
            yield chunk
    if translation.finish_reason is None:
        # a cut generation, not a finished one: llama-cpp-python's server ends a running stream with [DONE] alone
        # when another request comes in (unless started with --interrupt_requests false)
        raise BackendUnavailable("stream ended without a finish_reason")
    for chunk in translation.tool_call_chunk():
        yield chunk
    yield translation.final()


class OpenAIBackend:
    """An OpenAI-compatible server (the ``Backend`` protocol). Its URL may end in ``/v1`` or not (``/v1`` is then
    added to paths)."""

    kind = "openai"

    def __init__(self, connection: Connection, slots: int) -> None:
        self.http = HttpPool(connection, slots)
        self.url = connection.url
        self.prefix = "" if self.url.endswith("/v1") else "/v1"
        self._listed: tuple[float, list[dict[str, Any]]] | None = None
        self.counter = PromptCounter(connection, self.http, self.prefix)

    async def version(self) -> str | None:
        return None  # the OpenAI API has no version endpoint

    async def close(self) -> None:
        await self.http.close()
        await self.counter.close()

    async def list_models(self) -> list[dict[str, Any]]:
        answer = await self.http.request("GET", self.prefix + "/models")
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise BackendUnavailable(f"backend at {self.url}: /models did not answer a model list")
        models = [{"name": str(m["id"]), "model": str(m["id"]), "owned_by": m.get("owned_by")}
                  for m in data if isinstance(m, dict) and m.get("id")]  # fmt: skip
        self._listed = (time.monotonic(), models)
        return models

    async def loaded_models(self) -> list[dict[str, Any]]:
        """The served models (the worker asks right after ``list_models``: that answer is reused)."""
        if self._listed is not None and time.monotonic() - self._listed[0] < 1.0:
            return self._listed[1]
        return await self.list_models()

    def send_now(self, kind: str, request: dict[str, Any]) -> Early | None:
        path, body, _as_chat = openai_request(kind, request)
        return self.http.send_now(self.prefix + path, body)

    @asynccontextmanager
    async def stream(
        self, kind: str, request: dict[str, Any], early: Early | None = None
    ) -> AsyncIterator[Chunks]:
        path, body, as_chat = openai_request(kind, request)
        translation = Translation(request["model"], kind == "chat", as_chat)
        async with self.http.stream(self.prefix + path, body, early) as response:
            chunks = self.counted(translated(response, translation), translation, body)
            yield chunks
            async for _ in chunks:  # read to the end: the connection is kept alive
                pass

    async def counted(self, chunks: Chunks, translation: Translation, body: dict[str, Any]) -> Chunks:
        """The chunks, the final one with ``prompt_eval_count`` asked for if the server sent no usage."""
        async for chunk in chunks:
            if chunk["done"] and "prompt_eval_count" not in chunk and not translation.usage:
                count = await self.counter.count(
                    body, translation.as_chat
                )  # the stream is over: off the TTFT path
                if count is not None:
                    chunk["prompt_eval_count"] = count
            yield chunk

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        body: dict[str, Any] = {"model": request["model"], "input": request.get("input") or ""}
        if request.get("dimensions"):
            body["dimensions"] = request["dimensions"]
        answer = await self.http.request("POST", self.prefix + "/embeddings", body)
        data = sorted(answer.get("data") or [], key=lambda d: int(d.get("index") or 0))
        out: dict[str, Any] = {"model": request["model"], "embeddings": [d.get("embedding") for d in data],
                               "total_duration": ns_since(started)}  # fmt: skip
        usage = answer.get("usage") or {}
        if usage.get("prompt_tokens") is not None:
            out["prompt_eval_count"] = int(usage["prompt_tokens"])
        return out

    async def show(self, model: str) -> dict[str, Any]:
        """What an OpenAI server tells of a model: only that it serves it."""
        for entry in await self.list_models():
            if entry["name"] == model:
                return {"details": {"format": "", "family": ""}, "model_info": {},
                        "capabilities": ["completion"], "owned_by": entry.get("owned_by")}  # fmt: skip
        raise BackendModelMissing(f"model '{model}' not found", 404)
