"""The native API over real processes: one redis-server, simulator, worker and API for the module."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from corral.simulator import expected_text

from ..conftest import Stack
from ..support import wait_for

pytestmark = pytest.mark.integration


def submit(stack: Stack, **body: Any) -> dict[str, Any]:
    response = stack.http.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def finished(stack: Stack, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        view = stack.http.get(f"/jobs/{job_id}").json()
        return view if view["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, what=f"job {job_id} to end")


def read_ndjson(stack: Stack, job_id: str, **params: Any) -> list[dict[str, Any]]:
    headers = {"Accept": "application/x-ndjson"}
    with stack.http.stream("GET", f"/jobs/{job_id}/events", params=params, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def read_sse(stack: Stack, job_id: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    events = []
    with stack.http.stream("GET", f"/jobs/{job_id}/events", headers=headers or {}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    event = json.loads(current["data"])
                    assert int(current["id"]) == event["seq"] and current["event"] == event["type"]
                    events.append(event)
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = value
    return events


def test_curl_form_body_is_accepted_and_job_runs(stack: Stack) -> None:
    # what `curl -d '{"model":"llama3","prompt":"hi"}'` sends: a form content type
    response = httpx.post(stack.api + "/jobs", content=b'{"model":"llama3","prompt":"hi"}',
                          headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert response.status_code == 202
    job = response.json()
    assert (
        job["status"] == "queued"
        and job["model"] == "llama3:latest"
        and job["queue"] == "ollama:llama3:latest"
    )
    view = finished(stack, job["id"])
    assert view["status"] == "succeeded" and view["text"] == expected_text("llama3", "hi")
    assert view["worker"] == "w-stack" and view["attempt"] == 1
    assert view["final"]["done_reason"] == "stop" and view["final"]["eval_count"] == 3
    for stamp in ("created_at", "enqueued_at", "started_at", "ended_at"):
        assert view[stamp].endswith("Z")


def test_sse_stream_has_every_chunk_in_order_then_done(stack: Stack) -> None:
    prompt = "one two three four five six"
    job = submit(stack, model="llama3", prompt=prompt)
    events = read_sse(stack, job["id"])
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "queued" and events[1]["type"] == "started" and events[-1]["type"] == "done"
    text = "".join(e["text"] for e in events if e["type"] == "chunk")
    assert text == expected_text("llama3", prompt)
    assert events[-1]["final"]["eval_count"] == len(text.split())


def test_late_reader_and_resume_get_everything_once(stack: Stack) -> None:
    job = submit(stack, model="qwen2.5:0.5b", prompt="late reader")
    finished(stack, job["id"])
    full = read_ndjson(stack, job["id"])
    assert [e["seq"] for e in full] == list(range(len(full))) and full[-1]["type"] == "done"
    assert read_ndjson(stack, job["id"], **{"from": 3}) == full[3:]
    assert read_sse(stack, job["id"], headers={"Last-Event-ID": "4"}) == full[5:]


def test_chat_with_tools_images_and_format(stack: Stack) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    job = submit(stack, model="llama3", messages=[{"role": "user", "content": "call get_weather", "images": ["aGk="]}],
                 tools=tools, format="json", options={"temperature": 0}, keep_alive="1m")  # fmt: skip
    view = finished(stack, job["id"])
    assert view["status"] == "succeeded" and view["kind"] == "chat"
    assert view["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    plain = finished(
        stack, submit(stack, model="llama3", messages=[{"role": "user", "content": "hey"}])["id"]
    )
    assert plain["message"] == {"role": "assistant", "content": expected_text("llama3", "hey")}


def test_embed_job(stack: Stack) -> None:
    job = submit(stack, model="nomic-embed-text", input=["a", "b"])
    view = finished(stack, job["id"])
    assert view["status"] == "succeeded" and view["kind"] == "embed"
    assert len(view["embeddings"]) == 2 and abs(sum(x * x for x in view["embeddings"][0]) - 1) < 1e-6


def test_num_predict_reaches_ollama(stack: Stack) -> None:
    view = finished(
        stack, submit(stack, model="llama3", prompt="a b c d e", options={"num_predict": 2})["id"]
    )
    assert view["text"] == expected_text("llama3", "a b c d e", num_predict=2)
    assert view["final"]["done_reason"] == "length"


def test_cancel_a_queued_job(stack: Stack) -> None:
    job = submit(stack, model="ghost-model", prompt="x", wait=True)
    response = stack.http.delete(f"/jobs/{job['id']}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert stack.http.get(f"/jobs/{job['id']}").json()["status"] == "cancelled"
    assert stack.redis.llen("rq:queue:ollama:ghost-model:latest") == 0
    assert read_ndjson(stack, job["id"])[-1]["type"] == "cancelled"
    assert stack.http.delete(f"/jobs/{job['id']}").status_code == 409


def test_fleet_views(stack: Stack) -> None:
    workers = stack.http.get("/workers").json()["workers"]
    assert [w["id"] for w in workers] == ["w-stack"] and workers[0]["alive"] and workers[0]["healthy"]
    assert "llama3:latest" in workers[0]["models"] and workers[0]["slots_total"] == 4
    models = {m["name"]: m for m in stack.http.get("/models").json()["models"]}
    assert set(models) == {"llama3:latest", "qwen2.5:0.5b", "nomic-embed-text:latest"}
    assert models["llama3:latest"]["workers"] == 1
    queues = {q["model"] for q in stack.http.get("/queues").json()["queues"]}
    assert "llama3:latest" in queues
    assert stack.http.get("/healthz").json() == {"status": "ok"}
    assert stack.http.get("/readyz").status_code == 200
    assert "/jobs" in stack.http.get("/openapi.json").json()["paths"]


def test_submit_and_stream_in_one_request(stack: Stack) -> None:
    body = {"model": "llama3", "prompt": "stream me now", "stream": True}
    with stack.http.stream(
        "POST", "/jobs", json=body, headers={"Accept": "application/x-ndjson"}
    ) as response:
        assert response.status_code == 200
        job_id = response.headers["x-corral-job"]
        events = [json.loads(line) for line in response.iter_lines() if line]
    assert {e["job"] for e in events} == {job_id}
    assert [e["seq"] for e in events] == list(range(len(events))) and events[-1]["type"] == "done"
    assert "".join(e["text"] for e in events if e["type"] == "chunk") == expected_text(
        "llama3", "stream me now"
    )
    sse_body = {"model": "llama3", "prompt": "as sse", "stream": True}
    assert read_sse_post(stack, sse_body)[-1]["type"] == "done"


def read_sse_post(stack: Stack, body: dict[str, Any]) -> list[dict[str, Any]]:
    with stack.http.stream("POST", "/jobs", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def test_prometheus_metrics(stack: Stack) -> None:
    finished(stack, submit(stack, model="llama3", prompt="count me")["id"])
    text = stack.http.get("/metrics").text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"
    }
    assert samples["corral_jobs_submitted_total"] >= 1
    assert samples['corral_jobs_finished_total{status="succeeded"}'] >= 1
    assert samples['corral_worker_up{worker="w-stack"}'] == 1
    assert samples['corral_worker_slots{kind="total",worker="w-stack"}'] == 4
    assert 'corral_queue_depth{model="llama3:latest"}' in samples


def test_a_job_without_prompt_loads_the_model(stack: Stack) -> None:
    """As Ollama's empty generate: no prompt, messages or input → the model is loaded, the text is empty."""
    view = finished(stack, submit(stack, model="qwen2.5:0.5b", keep_alive="10m")["id"])
    assert view["status"] == "succeeded" and view["kind"] == "generate" and not view.get("text")
    loaded = httpx.get(stack.sim_url + "/api/ps").json()["models"]  # the engine's own list
    assert "qwen2.5:0.5b" in [m["name"] for m in loaded]


def test_an_unknown_model_names_the_fleets_models_and_wait(stack: Stack) -> None:
    for path, body in (("/jobs", {"model": "nope", "prompt": "hi"}),
                       ("/jobs/batch", {"jobs": [{"model": "llama3", "prompt": "a"}, {"model": "nope"}]})):  # fmt: skip
        response = stack.http.post(path, json=body)
        assert response.status_code == 404
        answer = response.json()
        assert answer["models"] == ["llama3:latest", "nomic-embed-text:latest", "qwen2.5:0.5b"]
        assert answer["code"] == "model_not_found"
        assert (
            "model 'nope:latest' not found; the fleet has llama3:latest, nomic-embed-text:latest, "
            in answer["error"]
        )
        assert answer["error"].endswith('To queue it until a worker has it, submit with "wait": true')
