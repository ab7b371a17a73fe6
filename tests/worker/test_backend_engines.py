"""The same end-to-end path over both worker backends: Ollama's API and an OpenAI-compatible server (the bundled
simulator in each flavour). Jobs and events must look the same to readers whichever backend ran them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest

from corral.simulator import expected_text

from ..conftest import Fleet, Stack, own_fleet
from ..support import wait_for

pytestmark = pytest.mark.integration
MODELS = "llama3:latest,qwen2.5:0.5b,nomic-embed-text:latest"
FAST = {"heartbeat_interval": 0.3, "heartbeat_ttl": 2.0, "janitor_interval": 0.2}


def start_worker(fleet: Fleet, flavor: str, sim_url: str, worker_id: str, **settings: Any) -> Any:
    """Ollama: the old setting. OpenAI: the new ones (the kind inferred from a URL ending in /v1)."""
    if flavor == "ollama":
        return fleet.worker(sim_url, worker_id, **settings)
    return fleet.worker("http://127.0.0.1:1", worker_id, backend_url=sim_url + "/v1", **settings)


@pytest.fixture(scope="module", params=["ollama", "openai"])
def bstack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    flavor = request.param
    with own_fleet(tmp_path_factory.mktemp(f"stack-{flavor}")) as (server, fleet):
        sim = fleet.simulator(MODELS, tps=200, flavor=flavor)
        start_worker(fleet, flavor, sim, f"w-{flavor}")
        yield Stack(fleet, server, sim, fleet.api())


def finished(stack: Stack, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        view = stack.http.get(f"/jobs/{job_id}").json()
        return view if view["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, what=f"job {job_id} to end")


def submit(stack: Stack, **body: Any) -> str:
    response = stack.http.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_generate_polled_has_text_and_known_stats(bstack: Stack) -> None:
    view = finished(bstack, submit(bstack, model="llama3", prompt="one two three"))
    assert view["status"] == "succeeded", view
    assert view["text"] == expected_text("llama3", "one two three")
    final = view["final"]
    assert final["eval_count"] == 5 and final["done_reason"] == "stop"
    assert final["total_duration"] > 0 and final["prompt_eval_count"] >= 1
    short = finished(bstack, submit(bstack, model="llama3", prompt="a b c d", options={"num_predict": 2}))
    assert (
        short["text"] == expected_text("llama3", "a b c d", 2) and short["final"]["done_reason"] == "length"
    )


def test_chat_streamed_events_look_the_same(bstack: Stack) -> None:
    body = {"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "x y"}], "stream": True}
    with bstack.http.stream("POST", "/jobs", json=body, headers={"Accept": "application/x-ndjson"}) as resp:
        events = [json.loads(line) for line in resp.iter_lines() if line]
    types = [e["type"] for e in events]
    assert types[:2] == ["queued", "started"] and types[-1] == "done"
    chunks = [e for e in events if e["type"] == "chunk"]
    assert "".join(e["text"] for e in chunks) == expected_text("qwen2.5:0.5b", "x y")
    assert all(e["ollama"]["message"]["role"] == "assistant" and e["ollama"]["done"] is False for e in chunks)
    assert events[-1]["final"]["eval_count"] == len(chunks)
    view = finished(bstack, events[0]["job"])
    assert view["message"] == {"role": "assistant", "content": expected_text("qwen2.5:0.5b", "x y")}


def test_embed_job(bstack: Stack) -> None:
    view = finished(bstack, submit(bstack, model="nomic-embed-text", input=["x", "y"]))
    assert view["status"] == "succeeded", view
    assert len(view["embeddings"]) == 2 and len(view["embeddings"][0]) == 16
    assert abs(sum(v * v for v in view["embeddings"][0]) - 1) < 1e-6


def test_dropin_ollama_generate_and_show(bstack: Stack) -> None:
    with ollama.Client(host=bstack.api) as oc:
        parts = list(oc.generate(model="llama3", prompt="one two three", stream=True))
        assert "".join(p.response for p in parts) == expected_text("llama3", "one two three")
        assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == 5
        whole = oc.generate(model="llama3", prompt="why")
        assert whole.response == expected_text("llama3", "why") and whole.total_duration
        assert oc.show("llama3") is not None


def test_dropin_openai_chat_streamed_with_usage_and_tool_calls(bstack: Stack) -> None:
    with openai.OpenAI(base_url=bstack.api + "/v1", api_key="unused") as ai:
        stream = ai.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "hi there"}],
                                            stream=True, stream_options={"include_usage": True})  # fmt: skip
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == expected_text("llama3", "hi there")
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        called = ai.chat.completions.create(model="llama3", tools=[tool],  # type: ignore[list-item]
                                            messages=[{"role": "user", "content": "use get_weather"}])  # fmt: skip
        calls = called.choices[0].message.tool_calls
        assert (
            calls
            and calls[0].function.name == "get_weather"
            and json.loads(calls[0].function.arguments) == {}
        )
        assert called.choices[0].finish_reason == "tool_calls"


def test_cancel_closes_the_backend_stream(bstack: Stack) -> None:
    before = httpx.get(f"{bstack.sim_url}/_sim/stats").json()["cancelled"]
    job_id = submit(bstack, model="llama3", prompt=" ".join(f"w{i}" for i in range(2000)))  # ~10 s
    wait_for(lambda: bstack.http.get(f"/jobs/{job_id}").json()["events"] > 5, what="job streaming")
    assert bstack.http.delete(f"/jobs/{job_id}").json()["status"] == "cancelling"
    assert finished(bstack, job_id)["status"] == "cancelled"
    wait_for(lambda: httpx.get(f"{bstack.sim_url}/_sim/stats").json()["cancelled"] == before + 1,
             what="the backend to see the stream closed")  # fmt: skip


@pytest.mark.parametrize("flavor", ["ollama", "openai"])
def test_worker_sigkilled_mid_job_finishes_on_another_host(fleet: Fleet, flavor: str) -> None:
    sim_a = fleet.simulator("llama3:latest", tps=20, name="sim-a", flavor=flavor)
    worker_a = start_worker(fleet, flavor, sim_a, "a", **FAST)
    api = fleet.api(**FAST)
    prompt = " ".join(f"w{i}" for i in range(200))  # ~10 s on host a: it is still running when a dies
    job_id = httpx.post(f"{api}/jobs", json={"model": "llama3", "prompt": prompt}).json()["id"]
    wait_for(lambda: httpx.get(f"{api}/jobs/{job_id}").json()["events"] > 5, what="job streaming on a")
    sim_b = fleet.simulator("llama3:latest", tps=500, flavor=flavor)
    start_worker(fleet, flavor, sim_b, "b", **FAST)
    worker_a.kill()
    view = wait_for(lambda: (v := httpx.get(f"{api}/jobs/{job_id}").json())["status"] == "succeeded" and v,
                    timeout=30, what="job to finish on b")  # fmt: skip
    assert view["worker"] == "b" and view["attempt"] == 2
    assert view["text"] == expected_text("llama3", prompt)
