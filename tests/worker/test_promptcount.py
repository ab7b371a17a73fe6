"""The prompt tokens of a stream that carried no usage (llama-cpp-python's server): asked for after the stream, from
a small loopback server that answers like llama-cpp-python's (or like a server without ``/extras``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from corral.worker.backends import Connection
from corral.worker.backends.openai import OpenAIBackend

pytestmark = pytest.mark.unit


def sse(frames: list[dict[str, Any]]) -> bytes:
    return b"".join(f"data: {json.dumps(f)}\n\n".encode() for f in frames) + b"data: [DONE]\n\n"


def stream(chat: bool, *texts: str) -> bytes:
    """A stream with no usage: one chunk per text, then the finish reason, then ``[DONE]``."""
    if chat:
        frames = [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in texts]
        return sse([*frames, {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}])
    frames = [{"choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in texts]
    return sse([*frames, {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}])


class Engine:
    """Answers the completions and chat streams; ``/extras/tokenize/count`` only when ``tokenizes``."""

    def __init__(self, tokenizes: bool) -> None:
        self.tokenizes = tokenizes
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        self.seen.append((path, body))
        if path == "/v1/completions":
            return 200, stream(False, "a", "b")
        if path == "/v1/chat/completions":
            if body.get("stream"):
                return 200, stream(True, "a", "b")
            usage = {"prompt_tokens": 9, "completion_tokens": 1}
            return 200, json.dumps({"choices": [], "usage": usage}).encode()
        if path == "/extras/tokenize/count" and self.tokenizes:
            return 200, json.dumps({"count": len(body["input"].split())}).encode()
        return 404, b'{"detail": "Not Found"}'

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            path = line.split()[1].decode()
            length = 0
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = json.loads(await reader.readexactly(length)) if length else {}
            status, payload = self.answer(path, body)
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
            await writer.drain()
        writer.close()


async def run(engine: Engine, jobs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    server = await asyncio.start_server(engine.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = OpenAIBackend(Connection(f"http://127.0.0.1:{port}/v1"), slots=1)
    finals = []
    try:
        for kind, request in jobs:
            async with backend.stream(kind, request) as chunks:
                finals.append([c async for c in chunks][-1])
    finally:
        await backend.close()
        server.close()
    return finals


GENERATE = ("generate", {"model": "m", "prompt": "one two three"})
CHAT = ("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def test_prompt_tokens_are_asked_for_after_a_stream_without_usage() -> None:
    engine = Engine(tokenizes=True)
    finals = asyncio.run(run(engine, [GENERATE, CHAT]))
    assert [f["eval_count"] for f in finals] == [2, 2]
    assert finals[0]["prompt_eval_count"] == 3  # the server's tokenize count of the prompt
    assert finals[1]["prompt_eval_count"] == 9  # the chat again, not streamed, one token
    probe = [body for path, body in engine.seen if path == "/v1/chat/completions" and not body.get("stream")]
    assert probe == [{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}]


def test_a_server_without_a_tokenize_endpoint_is_asked_once() -> None:
    engine = Engine(tokenizes=False)
    finals = asyncio.run(run(engine, [GENERATE, CHAT, GENERATE]))
    assert all("prompt_eval_count" not in f and f["eval_count"] == 2 for f in finals)
    paths = [path for path, _ in engine.seen]
    assert paths.count("/extras/tokenize/count") == 1
    assert paths.count("/v1/chat/completions") == 1  # the stream only: no probe
