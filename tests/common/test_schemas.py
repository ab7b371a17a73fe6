from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from corral.common.errors import InvalidRequest, PayloadTooLarge
from corral.common.names import MAX_MODEL_NAME, normalise_model
from corral.common.schemas import JobRequest, Message

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("llama3", "llama3:latest"),
        ("llama3:latest", "llama3:latest"),
        ("Llama3:8B", "llama3:8b"),
        ("qwen2.5:0.5b", "qwen2.5:0.5b"),
        ("library/llama3", "library/llama3:latest"),
        ("hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M", "hf.co/bartowski/llama-3.2-1b-gguf:q4_k_m"),
    ],
)
def test_names_normalise_like_ollama(name: str, canonical: str) -> None:
    assert normalise_model(name) == canonical


@pytest.mark.parametrize(
    "name", ["", " ", "llama3:", ":latest", "a b", "x/y/z/w", "llama3:a:b", "../etc", "m\n", "m*", "x" * 300]
)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest):
        normalise_model(name)


@given(st.text(max_size=300))
def test_any_accepted_name_is_canonical_and_bounded(name: str) -> None:
    try:
        canonical = normalise_model(name)
    except InvalidRequest:
        return
    assert canonical == normalise_model(canonical)
    assert len(canonical) <= MAX_MODEL_NAME + len(":latest")
    assert all(c.isalnum() or c in "._-/:" for c in canonical)


def test_kind_is_inferred() -> None:
    assert JobRequest(model="m", prompt="p").kind == "generate"
    assert JobRequest(model="m", messages=[{"role": "user", "content": "x"}]).kind == "chat"
    assert JobRequest(model="m", input=["a", "b"]).kind == "embed"
    embed = JobRequest(model="m", kind="embed", prompt="text")
    assert embed.input == "text" and embed.prompt is None


def test_chat_needs_messages_and_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        JobRequest(model="m", kind="chat", prompt="x")
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"model": "m", "prompt": "x", "bogus": 1})


def test_ollama_body_passes_fields_through_and_streams() -> None:
    req = JobRequest(
        model="llama3",
        messages=[{"role": "user", "content": "hi", "images": ["aGk="]}],
        tools=[{"type": "function", "function": {"name": "f"}}],
        format={"type": "object"},
        options={"temperature": 0},
        keep_alive="5m",
        timeout=3,
        wait=True,
    )
    body = req.ollama_body()
    assert body["model"] == "llama3:latest" and body["stream"] is True
    assert body["messages"][0]["images"] == ["aGk="]
    assert body["tools"][0]["function"]["name"] == "f"
    assert body["format"] == {"type": "object"} and body["keep_alive"] == "5m"
    assert "timeout" not in body and "wait" not in body and "kind" not in body


def test_prompt_limit_counts_every_text_field() -> None:
    req = JobRequest(model="m", prompt="é" * 10, system="abc", messages=None)
    assert req.text_bytes() == 23
    req.check_limits(23)
    with pytest.raises(PayloadTooLarge):
        req.check_limits(22)


def test_prompt_limit_measures_a_lone_surrogate_instead_of_crashing() -> None:
    """The API refuses lone surrogates when it parses the body; a request built otherwise is still measured."""
    req = JobRequest(model="m", prompt="\ud800", messages=[Message(role="user", content="a\udfff")])
    assert req.text_bytes() == 7
    with pytest.raises(PayloadTooLarge):
        req.check_limits(6)
