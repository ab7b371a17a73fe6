"""Drop-in endpoints with the official `ollama` and `openai` clients, plus raw wire details."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import ollama
import openai
import pytest

from corral.common import keys
from corral.simulator import expected_text

from ..conftest import Stack
from ..support import wait_for

pytestmark = pytest.mark.integration
RFC3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"


@pytest.fixture
def oc(stack: Stack) -> Any:
    client = ollama.Client(host=stack.api)
    yield client
    client.close()


@pytest.fixture
def ai(stack: Stack) -> Any:
    client = openai.OpenAI(base_url=stack.api + "/v1", api_key="unused")
    yield client
    client.close()


def test_ollama_generate_streamed_and_not(oc: Any) -> None:
    parts = list(oc.generate(model="llama3", prompt="one two three", stream=True))
    assert "".join(p.response for p in parts) == expected_text("llama3", "one two three")
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == 5
    whole = oc.generate(model="llama3", prompt="one two three")
    assert whole.response == expected_text("llama3", "one two three") and whole.done
    assert whole.total_duration and whole.total_duration > 0


def test_ollama_chat_with_tools(oc: Any) -> None:
    answer = oc.chat(model="llama3", messages=[{"role": "user", "content": "hello there"}])
    assert answer.message.role == "assistant" and answer.message.content == expected_text(
        "llama3", "hello there"
    )
    tool = {"type": "function", "function": {"name": "get_weather", "description": "d",
            "parameters": {"type": "object", "properties": {}}}}  # fmt: skip
    called = oc.chat(model="llama3", messages=[{"role": "user", "content": "use get_weather"}], tools=[tool])
    assert called.message.tool_calls and called.message.tool_calls[0].function.name == "get_weather"
    streamed = list(oc.chat(model="qwen2.5:0.5b", messages=[{"role": "user", "content": "a b"}], stream=True))
    assert "".join(c.message.content or "" for c in streamed) == expected_text("qwen2.5:0.5b", "a b")


def test_ollama_embed_list_ps_show_version(oc: Any) -> None:
    vectors = oc.embed(model="nomic-embed-text", input=["x", "y"]).embeddings
    assert len(vectors) == 2 and abs(sum(v * v for v in vectors[0]) - 1) < 1e-6
    assert len(oc.embeddings(model="nomic-embed-text", prompt="x").embedding) == len(vectors[0])
    names = sorted(m.model or "" for m in oc.list().models)
    assert names == ["llama3:latest", "nomic-embed-text:latest", "qwen2.5:0.5b"]
    oc.generate(model="llama3", prompt="load it")
    # /api/ps answers from the workers' heartbeats, which read the hosts' /api/ps every heartbeat interval
    wait_for(lambda: any(m.model == "llama3:latest" for m in oc.ps().models), what="llama3 in /api/ps")
    shown = oc.show("llama3")
    assert shown.capabilities and "completion" in shown.capabilities and shown.modelinfo
    with pytest.raises(ollama.ResponseError) as missing:
        oc.generate(model="nope", prompt="x")
    assert missing.value.status_code == 404 and "model 'nope' not found" in missing.value.error
    with pytest.raises(ollama.ResponseError) as missing_embed:
        oc.embed(model="nope", input="x")
    assert missing_embed.value.status_code == 404 and "try pulling it first" in missing_embed.value.error


def test_ollama_async_client(stack: Stack) -> None:
    async def main() -> tuple[str, str]:
        async with ollama.AsyncClient(host=stack.api) as client:
            return await both(client)

    async def both(client: ollama.AsyncClient) -> tuple[str, str]:
        whole = await client.generate(model="llama3", prompt="async one")
        streamed = "".join([p.response async for p in await client.generate(model="llama3", prompt="async two",
                                                                             stream=True)])  # fmt: skip
        return whole.response, streamed

    whole, streamed = asyncio.run(main())
    assert whole == expected_text("llama3", "async one") and streamed == expected_text("llama3", "async two")


def test_ollama_wire_details(stack: Stack) -> None:
    body = {"model": "llama3", "prompt": "wire check"}  # stream omitted: streams
    with httpx.stream("POST", stack.api + "/api/generate", json=body) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        raw = response.read().decode()
    lines = raw.split("\n")
    assert lines[-1] == "" and all(lines[:-1])  # one object per line, never a blank line
    objects = [json.loads(x) for x in lines[:-1]]
    assert all(isinstance(o["created_at"], str) and re.match(RFC3339, o["created_at"]) for o in objects)
    assert objects[-1]["done"] is True and objects[-1]["response"] == "" and "context" in objects[-1]
    assert all(not o["done"] for o in objects[:-1])
    assert stack.http.get("/").text == "Ollama is running"
    assert stack.http.head("/").status_code == 200
    assert stack.http.get("/api/version").json()["version"]
    for content, status, message in ((b"", 400, "missing request body"), (b"{", 400, "invalid JSON"),
                                     (b'{"prompt": "x"}', 400, "model is required")):  # fmt: skip
        bad = stack.http.post("/api/generate", content=content)
        assert bad.status_code == status and message in bad.json()["error"] and set(bad.json()) == {"error"}


def reply_text(objects: list[dict[str, Any]]) -> str:
    return "".join(o["response"] if "response" in o else o["message"]["content"] for o in objects)


COMPARED = (
    ("/api/generate", {"model": "llama3", "prompt": "compare me"}),
    ("/api/chat", {"model": "llama3", "messages": [{"role": "user", "content": "compare"}]}),
)


@pytest.mark.parametrize(("path", "body"), COMPARED)
def test_same_fields_through_corral_as_from_ollama(stack: Stack, path: str, body: dict[str, Any]) -> None:
    direct = [json.loads(x) for x in httpx.post(stack.sim_url + path, json=body).text.splitlines()]
    ours = [json.loads(x) for x in stack.http.post(path, json=body).text.splitlines()]
    assert [set(o) for o in ours] == [set(d) for d in direct]
    assert reply_text(ours) == reply_text(direct)
    no_stream = stack.http.post(path, json={**body, "stream": False}).json()
    direct_whole = httpx.post(stack.sim_url + path, json={**body, "stream": False}).json()
    assert set(no_stream) == set(direct_whole) and reply_text([no_stream]) == reply_text([direct_whole])


def test_openai_chat_streamed_and_not(ai: Any) -> None:
    answer = ai.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "hi you"}])
    assert answer.choices[0].message.content == expected_text("llama3", "hi you")
    assert answer.choices[0].finish_reason == "stop" and answer.usage.completion_tokens == 4
    stream = ai.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "stream it"}],
                                        stream=True, stream_options={"include_usage": True})  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text("llama3", "stream it")
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    limited = ai.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": "a b c d"}], max_tokens=2
    )
    assert limited.choices[0].finish_reason == "length"


def test_openai_tools_completions_embeddings_models(ai: Any) -> None:
    tool = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
    called = ai.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "please lookup"}],
                                        tools=[tool])  # fmt: skip
    call = called.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and isinstance(call.function.arguments, str)
    assert called.choices[0].finish_reason == "tool_calls"
    completion = ai.completions.create(model="llama3", prompt="complete this")
    assert completion.choices[0].text == expected_text("llama3", "complete this")
    streamed = "".join(
        c.choices[0].text for c in ai.completions.create(model="llama3", prompt="x y", stream=True)
    )
    assert streamed == expected_text("llama3", "x y")
    vectors = ai.embeddings.create(model="nomic-embed-text", input=["a", "b"])
    assert [d.index for d in vectors.data] == [0, 1] and len(vectors.data[0].embedding) == 16
    assert {m.id for m in ai.models.list()} == {"llama3:latest", "nomic-embed-text:latest", "qwen2.5:0.5b"}
    with pytest.raises(openai.NotFoundError):
        ai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        ai.chat.completions.create(model="llama3", messages=[])


REPLAYED = (
    ("/jobs", {"model": "llama3", "prompt": "replayed", "stream": True}),
    ("/api/generate", {"model": "llama3", "prompt": "replayed", "stream": False}),
    ("/api/chat", {"model": "llama3", "messages": [{"role": "user", "content": "replayed"}]}),
    ("/api/embed", {"model": "nomic-embed-text", "input": "replayed"}),
    (
        "/v1/chat/completions",
        {"model": "llama3", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ),
    ("/v1/completions", {"model": "llama3", "prompt": "replayed"}),
    ("/v1/embeddings", {"model": "nomic-embed-text", "input": "replayed"}),
)
JOB_ID = re.compile(r"[0-9a-f]{32}")


def job_ids(response: httpx.Response) -> set[str]:
    """The job ids an answer names: its X-Corral-Job header, or the ids in its body (events, OpenAI's ids)."""
    named = response.headers.get("x-corral-job")
    return {named} if named else set(JOB_ID.findall(response.text))


@pytest.mark.parametrize(("path", "body"), REPLAYED, ids=[p for p, _ in REPLAYED])
def test_a_replayed_idempotency_key_answers_the_first_job(
    stack: Stack, path: str, body: dict[str, Any]
) -> None:
    headers = {"Idempotency-Key": f"replay-{path}", "Accept": "application/x-ndjson"}
    before = int(stack.redis.hget(keys.STATS, "submitted") or 0)
    first = stack.http.post(path, json=body, headers=headers)
    again = stack.http.post(path, json=body, headers=headers)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert int(stack.redis.hget(keys.STATS, "submitted") or 0) == before + 1
    if path.endswith(("embed", "embeddings")):
        assert (
            again.json()["embeddings" if path.startswith("/api") else "data"]
            == first.json()["embeddings" if path.startswith("/api") else "data"]
        )
    else:
        assert len(job_ids(first)) == 1 and job_ids(again) == job_ids(first)
    if path == "/jobs":  # the stream of that job, from its start
        assert again.text == first.text
    other = {**body, "input": "other"} if "input" in body else {**body, "model": "qwen2.5:0.5b"}
    conflict = stack.http.post(path, json=other, headers=headers)
    assert conflict.status_code == 422 and "Idempotency-Key" in conflict.text
    assert int(stack.redis.hget(keys.STATS, "submitted") or 0) == before + 1
