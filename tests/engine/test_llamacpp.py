"""End to end on a real engine: llama.cpp's OpenAI-compatible server (llama-cpp-python) serving tiny random models,
through Corral's worker, queue and API. The tokens are random but real: each answer is checked against what the
engine itself answers to the same request, sent to it directly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest

from ..support import ROOT, base_env, wait_for
from .conftest import EngineStack, engine_stack

pytestmark = pytest.mark.integration
GREEDY = {"temperature": 0, "seed": 7}
PROMPT = "the quick brown fox"


@pytest.fixture(scope="module")
def es(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineStack]:
    with engine_stack(tmp_path_factory.mktemp("engine")) as stack:
        stack.add_engines(
            {"alias": "tiny", "worker": "a", "seed": 0},
            {
                "alias": "tiny-b",
                "worker": "b",
                "seed": 1,
                "context": 96,
            },  # a generation without limit: ~75 tokens
            {"alias": "tiny-embed", "worker": "e", "seed": 2, "embedding": True},
        )
        yield stack


def engine_says(es: EngineStack, path: str, body: dict[str, Any], worker: str = "a") -> dict[str, Any]:
    """The engine's own non-streamed answer (greedy, the same seed as Corral's requests)."""
    answer = es.direct(worker).post(f"/v1/{path}", json={"temperature": 0, "seed": 7, **body})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def engine_completion(
    es: EngineStack, prompt: str, n: int, model: str = "tiny", worker: str = "a"
) -> dict[str, Any]:
    return engine_says(es, "completions", {"model": model, "prompt": prompt, "max_tokens": n}, worker)


def ndjson(es: EngineStack, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with es.http.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line) for line in response.iter_lines() if line]


def sse(es: EngineStack, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with es.http.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


# -- generate and chat, streamed and not ---------------------------------------------------------------------
def test_generate_matches_the_engine_streamed_and_not(es: EngineStack) -> None:
    direct = engine_completion(es, PROMPT, 12)
    body = {"model": "tiny", "prompt": PROMPT, "options": {"num_predict": 12, **GREEDY}}
    whole = es.http.post("/api/generate", json={**body, "stream": False}).json()
    assert whole["response"] == direct["choices"][0]["text"] and whole["response"]
    chunks = ndjson(es, "/api/generate", body)
    assert "".join(c["response"] for c in chunks) == whole["response"]
    for final in (whole, chunks[-1]):
        assert final["done"] is True
        assert final["done_reason"] == "length" == direct["choices"][0]["finish_reason"]
        assert final["eval_count"] == 12 == direct["usage"]["completion_tokens"]
        # the engine streams no usage (it ignores stream_options.include_usage): the worker asks for the count
        assert final["prompt_eval_count"] == direct["usage"]["prompt_tokens"] > 1
        assert final["eval_duration"] > 0 and final["total_duration"] >= final["eval_duration"]


def test_chat_matches_the_engine_streamed_and_not(es: EngineStack) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    direct = engine_says(es, "chat/completions", {"model": "tiny", "messages": messages, "max_tokens": 10})
    body = {"model": "tiny", "messages": messages, "options": {"num_predict": 10, **GREEDY}}
    whole = es.http.post("/api/chat", json={**body, "stream": False}).json()
    assert whole["message"]["content"] == direct["choices"][0]["message"]["content"]
    chunks = ndjson(es, "/api/chat", body)
    assert "".join(c["message"]["content"] for c in chunks) == whole["message"]["content"]
    for final in (whole, chunks[-1]):
        assert final["done_reason"] == "length" == direct["choices"][0]["finish_reason"]
        assert final["eval_count"] == 10 == direct["usage"]["completion_tokens"]
        assert final["prompt_eval_count"] == direct["usage"]["prompt_tokens"] > 1


def first_at(text: str, start: int) -> int:
    """The first place at or after ``start`` where a two-character piece of ``text`` occurs for the first time."""
    return next(i for i in range(start, len(text) - 2) if text.find(text[i : i + 2]) == i)


def test_generate_without_num_predict_is_not_cut_at_the_engines_default(es: EngineStack) -> None:
    """Ollama generates until the model stops; an OpenAI server's /v1/completions stops at 16 tokens unless told
    otherwise: Corral tells it. (The tiny model never ends by itself: a stop sequence past 16 tokens ends it.)"""
    text = engine_completion(es, PROMPT, 60)["choices"][0]["text"]
    at = first_at(text, 36)
    body = {
        "model": "tiny",
        "prompt": PROMPT,
        "stream": False,
        "options": {"stop": [text[at : at + 2]], **GREEDY},
    }
    answer = es.http.post("/api/generate", json=body).json()
    assert answer["response"] == text[:at] and answer["done_reason"] == "stop" and answer["eval_count"] > 16


# -- stop sequences and num_predict --------------------------------------------------------------------------
def test_stop_sequence_ends_the_text_with_reason_stop(es: EngineStack) -> None:
    text = engine_completion(es, PROMPT, 24)["choices"][0]["text"]
    at = first_at(text, 4)
    stop = text[at : at + 2]
    body = {
        "model": "tiny",
        "prompt": PROMPT,
        "stream": False,
        "options": {"num_predict": 24, "stop": [stop], **GREEDY},
    }
    answer = es.http.post("/api/generate", json=body).json()
    assert answer["response"] == text[:at]
    assert answer["done_reason"] == "stop" and 0 < answer["eval_count"] < 24
    openai_body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 24, "stop": [stop], **GREEDY}
    completion = es.http.post("/v1/completions", json=openai_body).json()
    assert completion["choices"][0] == {
        **completion["choices"][0],
        "text": text[:at],
        "finish_reason": "stop",
    }


def test_num_predict_cuts_with_reason_length_on_every_route(es: EngineStack) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    chat = {"model": "tiny", "messages": messages, "max_tokens": 5, **GREEDY}
    assert es.http.post("/v1/chat/completions", json=chat).json()["choices"][0]["finish_reason"] == "length"
    frames = sse(es, "/v1/chat/completions", {**chat, "stream": True})
    assert [f["choices"][0]["finish_reason"] for f in frames if f["choices"]][-1] == "length"
    completion = {"model": "tiny", "prompt": PROMPT, "max_tokens": 5, **GREEDY}
    assert es.http.post("/v1/completions", json=completion).json()["choices"][0]["finish_reason"] == "length"
    frames = sse(es, "/v1/completions", {**completion, "stream": True})
    assert [f["choices"][0]["finish_reason"] for f in frames if f["choices"]][-1] == "length"


def test_seed_and_temperature_zero_give_the_same_text_twice(es: EngineStack) -> None:
    body = {"model": "tiny", "prompt": "once more", "stream": False, "options": {"num_predict": 16, **GREEDY}}
    first, second = (es.http.post("/api/generate", json=body).json()["response"] for _ in range(2))
    assert first == second and len(first) >= 8
    sampled = {**body, "options": {"num_predict": 16, "temperature": 1.0, "seed": 3}}
    first, second = (es.http.post("/api/generate", json=sampled).json()["response"] for _ in range(2))
    assert first == second  # a seeded sample at temperature 1 repeats too
    assert (
        first
        != es.http.post(
            "/api/generate", json={**sampled, "options": {**sampled["options"], "seed": 4}}
        ).json()["response"]
    )


# -- embeddings ----------------------------------------------------------------------------------------------
def test_embeddings_match_the_engine(es: EngineStack) -> None:
    direct = es.direct("e").post(
        "/v1/embeddings", json={"model": "tiny-embed", "input": ["one", "two words"]}
    )
    expected = [d["embedding"] for d in direct.json()["data"]]
    ours = es.http.post("/api/embed", json={"model": "tiny-embed", "input": ["one", "two words"]}).json()
    assert len(ours["embeddings"]) == 2 and len(ours["embeddings"][0]) == len(expected[0]) > 0
    assert all(row == pytest.approx(want) for row, want in zip(ours["embeddings"], expected, strict=True))
    assert ours["prompt_eval_count"] == direct.json()["usage"]["prompt_tokens"]
    via_openai = es.http.post("/v1/embeddings", json={"model": "tiny-embed", "input": "one"}).json()
    assert via_openai["data"][0]["embedding"] == pytest.approx(expected[0])


# -- cancel ----------------------------------------------------------------------------------------------------
def test_cancel_mid_generation_stops_the_engine(es: EngineStack) -> None:
    engine = es.engines["a"]
    body = {"model": "tiny", "prompt": "long", "options": {"num_predict": 1900, **GREEDY}}
    job_id = es.http.post("/jobs", json=body).json()["id"]
    wait_for(lambda: es.http.get(f"/jobs/{job_id}").json()["events"] > 5, what="job streaming")
    assert es.http.delete(f"/jobs/{job_id}").json()["status"] == "cancelling"
    view = es.finished(job_id)
    assert view["status"] == "cancelled" and view["events"] < 1900

    def engine_idle() -> bool:  # the engine's CPU over a quarter second: ~0 once it stopped generating
        before = engine.cpu_seconds()
        time.sleep(0.25)
        return engine.cpu_seconds() - before < 0.05

    wait_for(engine_idle, timeout=10, what="the engine to stop generating", step=0)
    assert "disconnected" in engine.log()  # the server's own word: the stream was closed under it


# -- routing ---------------------------------------------------------------------------------------------------
def test_two_models_on_two_engines_are_routed_per_model(es: EngineStack) -> None:
    for model, worker in (("tiny", "a"), ("tiny-b", "b")):
        direct = engine_completion(es, PROMPT, 8, model=model, worker=worker)["choices"][0]["text"]
        job = {"model": model, "prompt": PROMPT, "options": {"num_predict": 8, **GREEDY}}
        view = es.finished(es.http.post("/jobs", json=job).json()["id"])
        assert view["status"] == "succeeded" and view["worker"] == worker and view["text"] == direct
    tags = {m["name"] for m in es.http.get("/api/tags").json()["models"]}
    assert {"tiny:latest", "tiny-b:latest", "tiny-embed:latest"} <= tags or {"tiny", "tiny-b"} <= tags


# -- the official clients --------------------------------------------------------------------------------------
def test_official_ollama_client(es: EngineStack, request: pytest.FixtureRequest) -> None:
    client = ollama.Client(host=es.api)
    request.addfinalizer(client.close)
    direct = engine_completion(es, PROMPT, 10)
    answer = client.generate(model="tiny", prompt=PROMPT, options={"num_predict": 10, **GREEDY})
    assert answer.response == direct["choices"][0]["text"]
    assert answer.eval_count == 10 and answer.prompt_eval_count == direct["usage"]["prompt_tokens"]
    assert answer.done_reason == "length"
    parts = list(client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True,
                             options={"num_predict": 6, **GREEDY}))  # fmt: skip
    assert parts[-1].done and parts[-1].eval_count == 6 and "".join(p.message.content or "" for p in parts)
    assert len(client.embed(model="tiny-embed", input="hello").embeddings[0]) > 0


def test_official_openai_client_with_usage(es: EngineStack, request: pytest.FixtureRequest) -> None:
    client = openai.OpenAI(base_url=es.api + "/v1", api_key="unused", max_retries=0)
    request.addfinalizer(client.close)
    messages: Any = [{"role": "user", "content": PROMPT}]
    direct = engine_says(es, "chat/completions", {"model": "tiny", "messages": messages, "max_tokens": 7})
    answer = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=7, temperature=0, seed=7
    )
    assert answer.choices[0].message.content == direct["choices"][0]["message"]["content"]
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 7
    assert answer.usage.prompt_tokens == direct["usage"]["prompt_tokens"] > 1
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=7, temperature=0, seed=7,
                                            stream=True, stream_options={"include_usage": True})  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert chunks[-1].usage.prompt_tokens == direct["usage"]["prompt_tokens"]
    completion = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=7, temperature=0, seed=7)
    assert completion.usage is not None and completion.usage.completion_tokens == 7
    assert completion.usage.prompt_tokens == engine_completion(es, PROMPT, 7)["usage"]["prompt_tokens"]


# -- corral worker --check ---------------------------------------------------------------------------------------
def test_worker_check_against_the_engine(es: EngineStack) -> None:
    env = base_env("redis://127.0.0.1:1", backend_url=es.engines["a"].url)
    done = subprocess.run([sys.executable, "-m", "corral", "worker", "--check"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "models: tiny" in done.stdout and "generation: tiny, 1 token(s)" in done.stdout


# -- token accounting ------------------------------------------------------------------------------------------
def metric(es: EngineStack, name: str, model: str) -> float:
    for line in es.http.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and (f'model="{model}"' in line or f'model="{model}:latest"' in line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_tokens_in_history_and_metrics_are_the_engines(es: EngineStack) -> None:
    tokens_before = metric(es, "corral_tokens_generated_total", "tiny")
    speed_before = metric(es, "corral_tokens_per_second_sum", "tiny")
    direct = engine_completion(es, "count me", 30)
    job = {"model": "tiny", "prompt": "count me", "options": {"num_predict": 30, **GREEDY}}
    job_id = es.http.post("/jobs", json=job).json()["id"]
    view = es.finished(job_id)
    final = view["final"]
    assert final["eval_count"] == 30 == direct["usage"]["completion_tokens"]
    assert final["prompt_eval_count"] == direct["usage"]["prompt_tokens"]
    history = next(
        j for j in es.http.get("/jobs", params={"model": "tiny"}).json()["jobs"] if j["id"] == job_id
    )
    speed = 30 / (final["eval_duration"] / 1e9)
    assert history["eval_count"] == 30 and history["tokens_per_s"] == pytest.approx(speed, rel=0.01)
    wait_for(
        lambda: metric(es, "corral_tokens_generated_total", "tiny") == tokens_before + 30,
        what="tokens counted",
    )
    assert metric(es, "corral_tokens_per_second_sum", "tiny") - speed_before == pytest.approx(speed, rel=0.01)
