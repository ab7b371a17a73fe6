"""Cancel, timeouts, queue deadlines, drain: a job's life beyond the happy path."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from corral.cli.embedded_redis import RedisServer
from corral.simulator import expected_text

from ..conftest import Fleet
from ..support import free_port, wait_for

pytestmark = pytest.mark.integration


def status(http: httpx.Client, job_id: str) -> dict[str, object]:
    return http.get(f"/jobs/{job_id}").json()  # type: ignore[no-any-return]


def ended(http: httpx.Client, job_id: str, timeout: float = 15.0) -> dict[str, object]:
    return wait_for(lambda: (v := status(http, job_id))["status"] in ("succeeded", "failed", "cancelled") and v,
                    timeout=timeout, what=f"job {job_id} to end")  # fmt: skip


def test_cancel_a_running_job_stops_ollama_within_a_second(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest", ttft=5.0, tps=5)
    fleet.worker(sim, "w1")
    http = fleet.http(fleet.api())
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": "a long one"}).json()["id"]
    wait_for(lambda: httpx.get(sim + "/_sim/stats").json()["active"] == 1, what="generation running")
    started = time.monotonic()
    assert http.delete(f"/jobs/{job_id}").json()["status"] == "cancelling"
    view = ended(http, job_id, timeout=1.0)  # before the first token, the Ollama request is closed
    assert view["status"] == "cancelled" and time.monotonic() - started < 1.0
    wait_for(
        lambda: httpx.get(sim + "/_sim/stats").json()["cancelled"] == 1, timeout=1.0, what="ollama stopped"
    )
    events = http.get(f"/jobs/{job_id}/events", headers={"Accept": "application/x-ndjson"}).text
    assert events.strip().splitlines()[-1].count('"type":"cancelled"') == 1


def test_job_timeout_fails_with_a_reason(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest", ttft=0.0, tps=4)
    fleet.worker(sim, "w1")
    http = fleet.http(fleet.api())
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": "w " * 20, "timeout": 0.5}).json()["id"]
    view = ended(http, job_id)
    assert view["status"] == "failed" and "timed out after 0.5s" in str(view["error"])
    ok = http.post("/jobs", json={"model": "llama3", "prompt": "quick", "timeout": 30}).json()["id"]
    assert ended(http, ok)["status"] == "succeeded"


def test_queue_deadline_expires_a_waiting_job(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest")
    fleet.worker(sim, "w1", janitor_interval=0.1)
    http = fleet.http(fleet.api(janitor_interval=0.1))
    job_id = http.post(
        "/jobs", json={"model": "nobody", "prompt": "x", "wait": True, "queue_timeout": 0.3}
    ).json()
    view = ended(http, job_id["id"])
    assert view["status"] == "failed" and "expired: not started within 0.3s" in str(view["error"])
    assert fleet.redis.llen("rq:queue:ollama:nobody:latest") == 0


def test_drain_finishes_running_jobs_and_deregisters(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest", tps=30)
    worker = fleet.worker(sim, "w1")
    http = fleet.http(fleet.api())
    prompt = " ".join(["w"] * 20)
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": prompt}).json()["id"]
    wait_for(lambda: status(http, job_id)["status"] == "running", what="running")
    assert http.post("/workers/w1/drain").status_code == 202
    assert worker.process is not None and worker.process.wait(15) == 0
    assert ended(http, job_id)["status"] == "succeeded"
    assert not fleet.redis.exists("corral:worker:w1")
    # nobody serves it now (the API remembers a served model for up to a second)
    wait_for(
        lambda: http.post("/jobs", json={"model": "llama3", "prompt": "x"}).status_code == 404, what="404"
    )
    assert http.post("/workers/nope/drain").status_code == 404


def test_sigterm_drains_too(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest", tps=30)
    worker = fleet.worker(sim, "w1")
    http = fleet.http(fleet.api())
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": "x " * 20}).json()["id"]
    wait_for(lambda: status(http, job_id)["status"] == "running", what="running")
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(15) == 0
    view = ended(http, job_id)
    assert view["status"] == "succeeded" and view["text"] == expected_text("llama3", "x " * 20)


def test_sigterm_as_soon_as_it_is_up_stops_the_worker(fleet: Fleet) -> None:
    """Stopped the moment it registers, while its helpers make their first Redis calls, a worker exits at once.
    On Python 3.11 such a cancel could be swallowed (common/tasks.py), and about one worker in three waited for
    that helper forever: six starts in a row would all exit with that bug about once in 15 runs."""
    sim = fleet.simulator()
    for attempt in range(6):
        worker = fleet.worker(sim, f"w{attempt}", wait_ready=False)
        wait_for(lambda a=attempt: fleet.redis.exists(f"corral:worker:w{a}"), what="registered", step=0.002)
        assert worker.process is not None
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(10) == 0, worker.log()[-2000:]


def test_dead_worker_job_is_requeued_then_fails_after_max_retries(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest", ttft=30.0)
    fast = {"heartbeat_interval": 0.2, "heartbeat_ttl": 0.8, "janitor_interval": 0.1}
    http = fleet.http(fleet.api(max_retries=1, **fast))
    worker = fleet.worker(sim, "w1", max_retries=1, **fast)
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": "doomed"}).json()["id"]
    for attempt in (1, 2):
        wait_for(lambda a=attempt: status(http, job_id)["attempt"] == a and status(http, job_id)["status"] == "running",
                 what=f"attempt {attempt} running")  # fmt: skip
        worker.kill()
        worker = fleet.worker(sim, f"w{attempt + 1}", max_retries=1, **fast)
    view = ended(http, job_id)
    assert view["status"] == "failed" and "gave up after 2 attempts" in str(view["error"])


def test_api_and_worker_over_a_unix_socket_run_a_streamed_job(tmp_path: Path) -> None:
    """``CORRAL_REDIS_URL=unix://…``: every client of both processes (the lean ones, redis-py's pools, the janitor,
    the pub/sub connections) takes a unix socket; redis-py's unix connections take no TCP keepalive option."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis", unix_socket=True).start()
    assert server.unix_url is not None
    fleet = Fleet(server.url, tmp_path)
    try:
        sim = fleet.simulator("llama3:latest")
        fleet.worker(sim, "w-unix", redis_url=server.unix_url)
        http = fleet.http(fleet.api(redis_url=server.unix_url))
        body = {"model": "llama3", "prompt": "over a socket", "stream": True}
        with http.stream("POST", "/jobs", json=body, headers={"Accept": "application/x-ndjson"}) as response:
            events = [json.loads(line) for line in response.iter_lines() if line]
        assert [e["type"] for e in events][:2] == ["queued", "started"] and events[-1]["type"] == "done"
        text = "".join(e.get("text", "") for e in events if e["type"] == "chunk")
        assert text == expected_text("llama3", "over a socket")
        # the API's and the worker's clients, redis-py's and the lean ones (unnamed), are on the socket
        on_socket = [c["name"] for c in fleet.redis.client_list() if "U" in c["flags"]]
        assert "corral-api" in on_socket and any(name.endswith("w-unix") for name in on_socket)
        assert len(on_socket) >= 6
    finally:
        fleet.stop()
        server.kill()
