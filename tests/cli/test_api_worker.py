"""``corral api --worker`` (cli/combined.py): the API and a worker in one process, their direct link in memory
(common/memlink.py). Real processes, a real redis-server and the simulator; the process is stopped and killed as a
user's supervisor would."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.common.outcomes import parse_events
from corral.simulator import expected_text

from ..conftest import Fleet
from ..support import Child, base_env, free_port, port_open, wait_for

pytestmark = pytest.mark.integration
MODEL = "llama3:latest"


def streamed(base: str, prompt: str, route: str = "/jobs") -> list[dict[str, Any]]:
    body: dict[str, Any] = {"model": "llama3", "stream": True}
    if route == "/api/chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    response = httpx.post(base + route, json=body, headers={"Accept": "application/x-ndjson"}, timeout=30)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line]


def events_of(base: str, job_id: str) -> list[dict[str, Any]]:
    text = httpx.get(
        f"{base}/jobs/{job_id}/events", headers={"Accept": "application/x-ndjson"}, timeout=30
    ).text
    return [json.loads(line) for line in text.splitlines() if line]


def whole(events: list[dict[str, Any]], prompt: str) -> None:
    """Every event once, in order, one ``done``, the text whole."""
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events].count("done") == 1 and events[-1]["type"] == "done"
    assert "".join(e["text"] for e in events if e["type"] == "chunk") == expected_text("llama3", prompt)


def test_jobs_stream_through_the_in_process_link(fleet: Fleet) -> None:
    sim = fleet.simulator(MODEL, tps=200, ttft=0.05)
    base, child = fleet.api_with_worker(sim, "w-one")
    for i in range(4):  # the first job makes the link; the ones after are sent ahead over it
        whole(streamed(base, f"linked {i}"), f"linked {i}")
    chat = streamed(base, "a chat", "/api/chat")
    assert chat[-1]["done"] is True
    assert "".join(c["message"]["content"] for c in chat) == expected_text("llama3", "a chat")
    log = child.log()
    assert "direct link from ('in-process', 0)" in log
    assert "direct link from ('127.0.0.1'" not in log  # (no TCP link to itself)
    # it is a worker like any other: listed, serving the queue of its engine's models
    assert fleet_ids(base) == ["w-one"]


def test_a_burst_of_dropin_streams_each_runs_once_and_whole(fleet: Fleet) -> None:
    """Jobs sent ahead in a burst to the worker of the API's own process (handed over as they are, three slots for
    eight jobs): every answer whole, and the engine asked once per job (an early run given up would ask it twice)."""
    sim = fleet.simulator(MODEL, tps=200, ttft=0.05)
    base, _child = fleet.api_with_worker(sim, "w-one", worker_slots=3)
    whole(streamed(base, "the first job makes the link"), "the first job makes the link")
    before = httpx.get(sim + "/sim/stats").json()
    prompts = [f"burst {i}" for i in range(8)]
    with ThreadPoolExecutor(len(prompts)) as pool:
        chats = list(pool.map(lambda prompt: streamed(base, prompt, "/api/chat"), prompts))
    for prompt, chat in zip(prompts, chats, strict=True):
        assert chat[-1]["done"] is True
        assert "".join(c["message"]["content"] for c in chat) == expected_text("llama3", prompt)
    stats = lambda: httpx.get(sim + "/sim/stats").json()  # noqa: E731
    wait_for(lambda: stats()["completed"] == before["completed"] + 8, what="the engine's streams completed")
    assert stats()["requests"] == before["requests"] + 8


def test_sigterm_finishes_the_running_job_then_exits(fleet: Fleet) -> None:
    sim = fleet.simulator(MODEL, tps=20)  # 20 words: a second of generation
    base, child = fleet.api_with_worker(sim, "w-one")
    prompt = " ".join(f"w{i}" for i in range(20))
    job_id = httpx.post(base + "/jobs", json={"model": "llama3", "prompt": prompt}).json()["id"]
    wait_for(lambda: httpx.get(f"{base}/jobs/{job_id}").json()["events"] > 2, what="job running")
    assert child.process is not None
    child.process.send_signal(signal.SIGTERM)
    assert child.process.wait(30) == 0
    port = int(base.rsplit(":", 1)[1])
    assert not port_open(port)
    # the job ran to its end before the process left, once, and the worker deregistered
    status = fleet.redis.hget(f"rq:job:{job_id}", "status")
    assert status == b"finished", status
    assert not fleet.redis.exists("corral:worker:w-one")
    whole(parse_events(fleet.redis.xrange(keys.events_key(job_id))), prompt)  # (the record: no API is left)


def test_sigkill_mid_job_the_job_finishes_on_another_worker(fleet: Fleet) -> None:
    sim = fleet.simulator(MODEL, tps=20)
    base, child = fleet.api_with_worker(sim, "w-one", heartbeat_ttl=2.0)  # (found dead 2 s after the kill)
    prompt = " ".join(f"k{i}" for i in range(40))
    job_id = httpx.post(base + "/jobs", json={"model": "llama3", "prompt": prompt}).json()["id"]
    wait_for(lambda: httpx.get(f"{base}/jobs/{job_id}").json()["events"] > 2, what="job running")
    fleet.worker(sim, "w-two")
    child.kill()
    other = fleet.api()
    view = wait_for(lambda: (v := httpx.get(f"{other}/jobs/{job_id}").json())["status"] == "succeeded" and v,
                    timeout=30, what="the job done elsewhere")  # fmt: skip
    assert view["worker"] == "w-two" and view["attempt"] == 2, view
    assert view["text"] == expected_text("llama3", prompt)
    events = events_of(other, job_id)
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events].count("done") == 1
    assert [e["type"] for e in events].count("retry") == 1


@pytest.mark.parametrize("argv", [["api"], ["api", "--worker"]], ids=" ".join)
def test_started_before_redis_it_waits_then_serves(tmp_path: Path, argv: list[str]) -> None:
    """As a service started before Redis (docs/operations.md): up and answering 503, then serving once Redis is."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    port = free_port()
    env = base_env(server.url, worker_id="w-late", ollama_url=f"http://127.0.0.1:{free_port()}")
    child = Child("api", [*argv, "--port", str(port)], env, tmp_path).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: port_open(port) or not child.alive(), what="the API listening")
        assert child.alive(), child.log()
        assert httpx.get(base + "/readyz").status_code == 503
        server.start()
        wait_for(lambda: httpx.get(base + "/readyz").status_code == 200, what="ready once Redis is")
        assert (
            httpx.post(base + "/jobs", json={"model": "llama3", "prompt": "x", "wait": True}).status_code
            == 202
        )
        if "--worker" in argv:
            wait_for(lambda: fleet_ids(base) == ["w-late"], what="its worker registered")
        assert child.stop() in (0, -signal.SIGTERM)
        assert "Traceback" not in child.log()
    finally:
        child.kill()
        server.kill()


def fleet_ids(base: str) -> list[str]:
    return [w["id"] for w in httpx.get(base + "/workers").json()["workers"]]
