"""Ollama drop-in details that tests/api/test_dropin.py leaves out: async chat, show,
the exact version and error bodies, the ``/api/tags`` entry shape and streaming by default."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest

from corral.simulator import expected_text

from ..conftest import Stack

pytestmark = pytest.mark.integration
TAG_KEYS = {"name", "model", "modified_at", "size", "digest", "details"}


@pytest.fixture
def oc(stack: Stack) -> Iterator[ollama.Client]:
    client = ollama.Client(host=stack.api)
    yield client
    client.close()


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    lines = response.text.split("\n")
    assert lines[-1] == "" and all(lines[:-1]), "one object per line, never a blank line"
    return [json.loads(x) for x in lines[:-1]]


def test_version_show_and_unknown_models(stack: Stack, oc: ollama.Client) -> None:
    assert stack.http.get("/api/version").json() == {"version": "0.12.0"}  # ollama 0.6 has no Client.version
    shown = oc.show("qwen2.5:0.5b")
    assert shown.details and shown.details.family and shown.capabilities
    for call in (
        lambda: oc.show("nope"),
        lambda: oc.chat(model="nope", messages=[{"role": "user", "content": "x"}]),
        lambda: list(oc.generate(model="nope", prompt="x", stream=True)),
    ):
        with pytest.raises(ollama.ResponseError) as missing:
            call()
        assert missing.value.status_code == 404 and missing.value.error == "model 'nope' not found"


def test_async_client_chat_streamed_and_fleet_views(stack: Stack) -> None:
    async def main() -> tuple[str, str, list[str]]:
        async with ollama.AsyncClient(host=stack.api) as client:
            message = [{"role": "user", "content": "async chat"}]
            whole = await client.chat(model="llama3", messages=message)
            parts = await client.chat(model="qwen2.5:0.5b", messages=message, stream=True)
            streamed = "".join([p.message.content or "" async for p in parts])
            names = [m.model or "" for m in (await client.list()).models]
            return whole.message.content or "", streamed, names

    whole, streamed, names = asyncio.run(main())
    assert whole == expected_text("llama3", "async chat")
    assert streamed == expected_text("qwen2.5:0.5b", "async chat")
    assert sorted(names) == sorted(set(names)) and "llama3:latest" in names


def test_tags_entries_have_ollamas_shape(stack: Stack) -> None:
    models = stack.http.get("/api/tags").json()["models"]
    assert models and all(set(m) >= TAG_KEYS for m in models)
    assert all(isinstance(m["size"], int) and isinstance(m["details"], dict) for m in models)


def test_chat_streams_by_default_and_ends_with_an_empty_assistant_message(stack: Stack) -> None:
    body = {"model": "llama3", "messages": [{"role": "user", "content": "default stream"}], "stream": None}
    response = stack.http.post("/api/chat", json=body)
    assert response.headers["content-type"].startswith("application/x-ndjson")
    objects = ndjson(response)
    assert len(objects) > 2 and all(o["model"] == "llama3" for o in objects)
    assert all(o["message"]["role"] == "assistant" for o in objects)
    final = objects[-1]
    assert final["done"] is True and final["message"] == {"role": "assistant", "content": ""}
    assert "context" not in final and isinstance(final["eval_duration"], int)
    text = "".join(o["message"]["content"] for o in objects)
    assert text == expected_text("llama3", "default stream")


BAD_BODIES = (
    ("/api/chat", b'{"model": "llama3", "messages": "x"}', 400),
    ("/api/generate", b'{"model": "llama3", "prompt": "x", "options": [1]}', 400),
    ("/api/embed", b"", 400),
    ("/api/show", b"{", 400),
    ("/api/embed", b'{"model": "nope", "input": "x"}', 404),
    ("/api/embeddings", b'{"model": "nope", "prompt": "x"}', 404),
)


@pytest.mark.parametrize(("path", "content", "status"), BAD_BODIES)
def test_errors_are_ollamas_shape(stack: Stack, path: str, content: bytes, status: int) -> None:
    response = stack.http.post(path, content=content)
    assert response.status_code == status and response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    if status == 404:
        assert body["error"] == 'model "nope" not found, try pulling it first'
