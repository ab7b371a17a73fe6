"""Drop-in edge cases on their own fleets: full queues, load/unload forms, a worker dying under a stream."""

from __future__ import annotations

import json

import httpx
import pytest

from corral.simulator import expected_text

from ..conftest import Fleet
from ..support import wait_for

pytestmark = pytest.mark.integration
FAST = {"heartbeat_interval": 0.3, "heartbeat_ttl": 2.0, "janitor_interval": 0.2}


def test_full_queue_is_429_natively_and_ollamas_503_on_api(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest", ttft=30.0)
    fleet.worker(sim, "w1", worker_slots=1)
    http = fleet.http(fleet.api(max_queue=2))
    ids = [http.post("/jobs", json={"model": "llama3", "prompt": f"p{i}"}).json()["id"] for i in range(3)]
    wait_for(lambda: fleet.redis.llen("rq:queue:ollama:llama3:latest") == 2, what="one running, two queued")
    before = fleet.redis.dbsize()
    refused = http.post("/jobs", json={"model": "llama3", "prompt": "one too many"})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == "queue_full"
    busy = http.post("/api/generate", json={"model": "llama3", "prompt": "x"})
    assert busy.status_code == 503
    assert busy.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}
    assert fleet.redis.dbsize() == before  # refused requests wrote nothing
    http.delete(f"/jobs/{ids[1]}")
    assert http.post("/jobs", json={"model": "llama3", "prompt": "room again"}).status_code == 202


def test_load_and_unload_forms_go_through_the_queue(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest")
    fleet.worker(sim, "w1")
    http = fleet.http(fleet.api())
    loaded = http.post("/api/generate", json={"model": "llama3"}).text.splitlines()
    assert len(loaded) == 1 and json.loads(loaded[0])["done_reason"] == "load"
    assert "llama3:latest" in httpx.get(sim + "/_sim/stats").json()["loaded"]
    unloaded = http.post("/api/generate", json={"model": "llama3", "keep_alive": 0, "stream": False}).json()
    assert unloaded["done"] is True and unloaded["done_reason"] == "unload" and unloaded["response"] == ""
    assert httpx.get(sim + "/_sim/stats").json()["loaded"] == []
    chat_load = http.post("/api/chat", json={"model": "llama3", "messages": []}).text.splitlines()
    assert json.loads(chat_load[-1])["done_reason"] == "load"


def test_worker_dying_before_the_first_token_is_invisible_after_it_an_error_line(fleet: Fleet) -> None:
    slow = fleet.simulator("llama3:latest", ttft=30.0, name="slow")
    victim = fleet.worker(slow, "victim", **FAST)
    http = fleet.http(fleet.api(**FAST))
    body = {"model": "llama3", "prompt": "carry on"}
    with http.stream("POST", "/api/generate", json=body) as response:
        job_id = response.headers["x-corral-job"]
        wait_for(lambda: http.get(f"/jobs/{job_id}").json()["status"] == "running", what="running on victim")
        victim.kill()
        fleet.worker(fleet.simulator("llama3:latest"), "rescuer", **FAST)
        lines = [json.loads(x) for x in response.iter_lines() if x]
    assert "".join(x.get("response", "") for x in lines) == expected_text("llama3", "carry on")
    assert lines[-1]["done"] is True and not any("error" in x for x in lines)

    streaming = fleet.simulator("llama3:latest", tps=10, name="streaming")
    second = fleet.worker(streaming, "second", **FAST)
    next(c for c in fleet.children if c.name == "worker-rescuer").kill()
    prompt = " ".join(f"w{i}" for i in range(40))
    with http.stream("POST", "/api/generate", json={"model": "llama3", "prompt": prompt}) as response:
        job_id = response.headers["x-corral-job"]
        got = []
        for raw in response.iter_lines():
            if not raw:
                continue
            got.append(json.loads(raw))
            if len(got) == 3:
                second.kill()
                fleet.worker(fleet.simulator("llama3:latest"), "third", **FAST)
    assert "error" in got[-1] and job_id in got[-1]["error"]
    view = wait_for(lambda: (v := http.get(f"/jobs/{job_id}").json())["status"] == "succeeded" and v,
                    what="the job itself finished elsewhere")  # fmt: skip
    assert view["text"] == expected_text("llama3", prompt) and view["attempt"] == 2


def test_oversized_bodies_get_each_apis_error_shape(fleet: Fleet) -> None:
    http = fleet.http(fleet.api(max_body_bytes=2048))
    big = b"x" * 4096
    assert set(http.post("/jobs", content=big).json()) == {"error", "code"}
    assert set(http.post("/api/generate", content=big).json()) == {"error"}
    openai_error = http.post("/v1/chat/completions", content=big).json()["error"]
    assert openai_error["type"] == "invalid_request_error" and "limit" in openai_error["message"]
