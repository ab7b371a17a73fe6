"""Backend settings and the OpenAI translation, pure (no I/O)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from corral.common.settings import Settings, parse_headers, redacted_url
from corral.worker.backends import BackendUnavailable, Connection
from corral.worker.backends.openai import Translation, openai_request, translated

pytestmark = pytest.mark.unit


def test_backend_kind_url_and_compat() -> None:
    old = Settings(ollama_url="http://gpu:11434/")
    assert (old.engine_kind, old.engine_url) == ("ollama", "http://gpu:11434")
    assert Settings(backend_url="http://vllm:8000/v1").engine_kind == "openai"
    assert Settings(backend="openai", backend_url="http://llama:8080").engine_kind == "openai"
    assert Settings(backend="ollama", backend_url="http://proxy/v1").engine_kind == "ollama"


def test_headers_token_and_secrets_stay_out_of_reprs() -> None:
    assert parse_headers('{"X-A": "1"}') == {"X-A": "1"} == parse_headers(" X-A = 1 ")
    assert parse_headers("a=1,b=x=y") == {"a": "1", "b": "x=y"}
    for bad in ("novalue", '{"a": 1}', "{oops", "=1"):
        with pytest.raises(ValueError):
            parse_headers(bad)
    settings = Settings(backend_token="tok-123", backend_headers="X-Key=hdr-456")
    assert settings.engine_headers() == {"X-Key": "hdr-456", "Authorization": "Bearer tok-123"}
    connection = Connection.from_settings(settings)
    for text in (repr(settings), str(settings), repr(connection), settings.model_dump_json()):
        assert "tok-123" not in text and "hdr-456" not in text
    assert redacted_url("https://user:pw@host:1/v1") == "https://user:***@host:1/v1"
    with pytest.raises(ValidationError):
        Settings(backend_verify="/nonexistent/ca.pem")
    assert Settings(backend_verify="FALSE").backend_verify == "false"


def test_requests_for_generate_and_chat() -> None:
    options = {"num_predict": 3, "temperature": 0, "mirostat": 1}
    path, body, chat = openai_request(
        "generate", {"model": "m", "prompt": "hi", "suffix": "end", "options": options}
    )
    assert (path, chat) == ("/completions", False)
    assert body == {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 3,
                    "temperature": 0, "prompt": "hi", "suffix": "end"}  # fmt: skip
    _, body, _ = openai_request("generate", {"model": "m", "prompt": "hi"})
    assert body["max_tokens"] is None  # Ollama's "until the model stops", not /v1/completions' 16 tokens
    assert "max_tokens" not in openai_request("chat", {"model": "m", "messages": []})[1]
    path, body, chat = openai_request("generate", {"model": "m", "prompt": "hi", "system": "be brief",
                                                   "format": "json"})  # fmt: skip
    assert path == "/chat/completions" and chat and body["response_format"] == {"type": "json_object"}
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    messages = [{"role": "user", "content": "look", "images": ["QUJD"]},
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},
                {"role": "tool", "content": "42", "tool_name": "f"}]  # fmt: skip
    _, body, _ = openai_request("chat", {"model": "m", "messages": messages, "tools": [{"type": "function"}]})
    user, assistant, tool = body["messages"]
    assert user["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"x": 1}
    assert tool["tool_call_id"] == "f" and body["tools"] == [{"type": "function"}]


def frame(delta: dict[str, Any] | None = None, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": reason}]
    return {"choices": choices, **extra}


def test_stream_translation_text_tool_fragments_and_final() -> None:
    t = Translation("m", chat=True, as_chat=True)
    out = t.feed(frame({"role": "assistant", "content": "He"}))
    assert out[0]["message"] == {"role": "assistant", "content": "He"} and out[0]["done"] is False
    assert t.feed(frame({})) == []
    out = t.feed(frame({"content": "llo", "reasoning_content": "hmm"}))
    assert out[0]["message"] == {"role": "assistant", "content": "llo", "thinking": "hmm"}
    assert (
        t.feed(
            frame({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "get", "arguments": ""}}]})
        )
        == []
    )
    assert t.feed(frame({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": '}}]})) == []
    out = t.feed(frame({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}, "tool_calls"))
    assert out[0]["message"]["tool_calls"] == [{"id": "c1", "function": {"index": 0, "name": "get",
                                                                           "arguments": {"q": "x"}}}]  # fmt: skip
    t.feed(frame(None, usage={"prompt_tokens": 7, "completion_tokens": 2}))
    final = t.final()
    assert final["done"] and final["done_reason"] == "stop" and final["message"]["content"] == ""
    assert (final["eval_count"], final["prompt_eval_count"]) == (2, 7)
    assert final["total_duration"] > 0 and final["eval_duration"] >= 0 and "load_duration" not in final

    text = Translation("m", chat=False, as_chat=False)
    out = text.feed({"choices": [{"index": 0, "text": "abc", "finish_reason": "length"}]})
    assert out[0]["response"] == "abc" and out[0]["done"] is False
    final = text.final()
    assert final["done_reason"] == "length" and final["response"] == ""
    assert final["eval_count"] == 1 and "prompt_eval_count" not in final  # counted: no usage came


def test_stream_without_usage_counts_one_token_per_chunk() -> None:
    """llama-cpp-python's server ignores ``include_usage``: a role-only chunk, one chunk per token (empty content
    while a UTF-8 character is incomplete), then an empty delta with the finish reason."""
    chat = Translation("m", chat=True, as_chat=True)
    for data in (frame({"role": "assistant"}), frame({"content": "a"}), frame({"content": ""}),
                 frame({"content": "é"}), frame({}, "length")):  # fmt: skip
        chat.feed(data)
    assert chat.final()["eval_count"] == 3
    text = Translation("m", chat=False, as_chat=False)
    for piece, reason in (("x", None), ("", None), ("y", None), ("", "stop")):
        text.feed({"choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": reason}]})
    final = text.final()
    assert final["eval_count"] == 3 and final["done_reason"] == "stop"
    with_usage = Translation("m", chat=False, as_chat=False)
    with_usage.feed({"choices": [{"index": 0, "text": "x", "finish_reason": None}]})
    with_usage.feed({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 9}})
    assert with_usage.final()["eval_count"] == 9  # the server's own count wins


class Lines:
    """A response whose body is these SSE lines."""

    def __init__(self, *lines: str) -> None:
        self.lines = lines

    async def aiter_lines(self) -> AsyncIterator[str]:
        for line in self.lines:
            yield line


def test_done_without_a_finish_reason_is_a_cut_stream_not_a_finished_one() -> None:
    """llama-cpp-python's server ends a running stream with ``[DONE]`` alone when another request arrives: the job
    must run again, not succeed with half a text and ``done_reason: stop``."""

    async def read(*lines: str) -> list[dict[str, Any]]:
        translation = Translation("m", chat=False, as_chat=False)
        return [chunk async for chunk in translated(Lines(*lines), translation)]  # type: ignore[arg-type]

    token = 'data: {"choices": [{"index": 0, "text": "a", "finish_reason": null}]}'
    with pytest.raises(BackendUnavailable, match="without a finish_reason"):
        asyncio.run(read(token, "", "data: [DONE]"))
    end = 'data: {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}'
    chunks = asyncio.run(read(token, end, "data: [DONE]"))
    assert chunks[-1]["done"] and chunks[-1]["done_reason"] == "length" and chunks[-1]["eval_count"] == 1
