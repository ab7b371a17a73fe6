"""OpenAI drop-in details that tests/api/test_dropin.py leaves out: the SSE framing, ``stream`` defaulting
to false, streamed tool calls, model lookup, the async client and the exact error bodies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from corral.simulator import expected_text

from ..conftest import Stack

pytestmark = pytest.mark.integration
CHAT = "/v1/chat/completions"
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture
def ai(stack: Stack) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=stack.api + "/v1", api_key="unused")
    yield client
    client.close()


def sse_events(raw: str) -> list[str]:
    """The ``data:`` payloads of an event stream; every event is exactly ``data: …\\n\\n``."""
    assert raw.endswith("\n\n")
    events = raw[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    return [e[len("data: ") :] for e in events]


def test_stream_defaults_to_false_and_answers_from_a_queued_job(stack: Stack) -> None:
    body = {"model": "llama3", "messages": [{"role": "user", "content": "no stream"}]}
    response = stack.http.post(CHAT, json=body)
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["model"] == "llama3"
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": expected_text("llama3", "no stream"),
    }
    job = stack.http.get("/jobs/" + answer["id"].removeprefix("chatcmpl-")).json()
    assert job["status"] == "succeeded" and job["kind"] == "chat" and job["model"] == "llama3:latest"


def test_sse_framing_and_streamed_tool_calls(stack: Stack) -> None:
    body = {"model": "llama3", "stream": True, "tools": [TOOL],
            "messages": [{"role": "user", "content": "please lookup"}]}  # fmt: skip
    response = stack.http.post(CHAT, json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    *data, done = sse_events(response.text)
    assert done == "[DONE]"
    chunks = [json.loads(d) for d in data]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(
        c["object"] == "chat.completion.chunk" and c["system_fingerprint"] == "fp_corral" for c in chunks
    )
    calls = [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls and calls[0]["function"]["name"] == "lookup"
    assert isinstance(calls[0]["function"]["arguments"], str)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_models_retrieve_and_unknown(ai: openai.OpenAI) -> None:
    assert ai.models.retrieve("llama3").id == "llama3:latest"
    with pytest.raises(openai.NotFoundError):
        ai.models.retrieve("nope")
    with pytest.raises(openai.NotFoundError):
        ai.embeddings.create(model="nope", input="x")
    with pytest.raises(openai.NotFoundError):
        ai.completions.create(model="nope", prompt="x", stream=True)


def test_async_client_streams_with_usage(stack: Stack) -> None:
    async def main() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=stack.api + "/v1", api_key="unused") as client:
            stream = await client.chat.completions.create(
                model="qwen2.5:0.5b", messages=[{"role": "user", "content": "async it"}], stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            return [chunk async for chunk in stream]

    chunks = asyncio.run(main())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text("qwen2.5:0.5b", "async it")
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


BAD_BODIES = (
    (CHAT, b"", 400, "invalid_request_error"),
    (CHAT, b"{", 400, "invalid_request_error"),
    (CHAT, b'{"messages": [{"role": "user", "content": "x"}]}', 400, "invalid_request_error"),
    (CHAT, b'{"model": "llama3", "messages": [{"content": "no role"}]}', 400, "invalid_request_error"),
    ("/v1/completions", b'{"model": "llama3", "prompt": 5}', 400, "invalid_request_error"),
    ("/v1/embeddings", b'{"model": "llama3", "input": [1]}', 400, "invalid_request_error"),
    (CHAT, b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "not_found_error"),
)


@pytest.mark.parametrize(("path", "content", "status", "kind"), BAD_BODIES)
def test_errors_are_openais_shape(stack: Stack, path: str, content: bytes, status: int, kind: str) -> None:
    response = stack.http.post(path, content=content)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == kind and error["param"] is None and error["code"] is None
