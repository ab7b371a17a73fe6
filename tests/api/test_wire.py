from __future__ import annotations

import json

import pytest

from corral.api.wire import (
    chat_completion,
    ollama_final,
    ollama_job,
    openai_chat_job,
    openai_completion_job,
    openai_error,
    openai_tool_calls,
    parse_json_object,
)
from corral.common.errors import InvalidRequest

pytestmark = pytest.mark.unit


def test_ollama_job_keeps_known_fields_only() -> None:
    job = ollama_job(
        "generate", {"model": "m", "prompt": "p", "stream": True, "bogus": 1, "options": {"seed": 1}}
    )
    assert job == {"model": "m", "kind": "generate", "prompt": "p", "options": {"seed": 1}}
    chat = ollama_job(
        "chat", {"model": "m", "messages": [{"role": "user", "content": "x", "extra": 1}], "tools": []}
    )
    assert chat["messages"] == [{"role": "user", "content": "x"}]
    assert ollama_job("embed", {"name": "m", "prompt": "legacy"})["input"] == "legacy"
    with pytest.raises(InvalidRequest, match="model is required"):
        ollama_job("generate", {"prompt": "x"})


def test_bodies_must_be_json_objects() -> None:
    for raw in (b"", b"{", b"[1]"):
        with pytest.raises(InvalidRequest):
            parse_json_object(raw)


def test_ollama_final_shapes() -> None:
    final = {"done_reason": "stop", "eval_count": 3, "context": [1], "model": "x"}
    streamed = ollama_final("generate", "llama3", final, None)
    assert (
        streamed["response"] == ""
        and streamed["done"]
        and streamed["context"] == [1]
        and streamed["model"] == "llama3"
    )
    chat = ollama_final("chat", "llama3", final, {"message": {"role": "assistant", "content": "hi"}})
    assert chat["message"] == {"role": "assistant", "content": "hi"} and "context" not in chat


def test_openai_request_translation() -> None:
    job = openai_chat_job({
        "model": "llama3",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}]},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
        ],
        "max_tokens": 5, "temperature": 0.5, "stop": ["x"], "response_format": {"type": "json_object"},
    })  # fmt: skip
    assert job["messages"][0] == {"role": "user", "content": "look", "images": ["QUJD"]}
    assert job["messages"][1]["tool_calls"] == [{"function": {"name": "f", "arguments": {"a": 1}}}]
    assert job["options"] == {"temperature": 0.5, "stop": ["x"], "num_predict": 5} and job["format"] == "json"
    assert openai_completion_job({"model": "m", "prompt": ["first"]})["prompt"] == "first"
    with pytest.raises(InvalidRequest):
        openai_chat_job({"model": "m", "messages": []})


def test_openai_answers() -> None:
    calls = openai_tool_calls([{"function": {"name": "f", "arguments": {"a": 1}}}])
    assert calls[0]["function"]["arguments"] == '{"a": 1}' and calls[0]["type"] == "function"
    result = {"message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]},
              "final": {"prompt_eval_count": 2, "eval_count": 3}}  # fmt: skip
    done = chat_completion("abc", "m", result)
    assert done["choices"][0]["finish_reason"] == "tool_calls" and done["usage"]["total_tokens"] == 5
    assert json.loads(json.dumps(openai_error(404, "gone")))["error"]["type"] == "not_found_error"
