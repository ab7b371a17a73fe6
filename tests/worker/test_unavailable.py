"""Redis or Ollama unreachable: 503 with a reason from the API, backoff and one log line from the worker."""

from __future__ import annotations

import json

import pytest

from corral.cli.embedded_redis import RedisServer
from corral.simulator import expected_text

from ..conftest import Fleet
from ..support import free_port, wait_for

pytestmark = pytest.mark.integration


def test_api_answers_503_while_redis_is_down_and_recovers(fleet: Fleet, redis_server: RedisServer) -> None:
    sim = fleet.simulator("llama3:latest")
    fleet.worker(sim, "w1")
    http = fleet.http(fleet.api())
    redis_server.stop()
    response = http.post("/jobs", json={"model": "llama3", "prompt": "x"})
    assert response.status_code == 503 and "redis unavailable" in response.json()["error"]
    assert http.get("/jobs/" + "0" * 32).status_code == 503
    assert http.get("/readyz").status_code == 503
    assert http.get("/healthz").status_code == 200
    redis_server.start()
    fleet.wait_worker("w1")
    wait_for(lambda: http.post("/jobs", json={"model": "llama3", "prompt": "back"}).status_code == 202,
             what="api to accept jobs again")  # fmt: skip
    job = http.post("/jobs", json={"model": "llama3", "prompt": "after restart"}).json()
    view = wait_for(lambda: (v := http.get(f"/jobs/{job['id']}").json())["status"] == "succeeded" and v,
                    what="job after redis restart")  # fmt: skip
    assert view["text"] == expected_text("llama3", "after restart")
    assert all(child.alive() for child in fleet.children)


def test_worker_waits_for_ollama_logging_once_then_serves(fleet: Fleet) -> None:
    port = free_port()
    worker = fleet.worker(f"http://127.0.0.1:{port}", "w1", wait_ready=False, model_refresh_interval=0.1)
    http = fleet.http(fleet.api())
    wait_for(
        lambda: fleet.redis.hget("corral:worker:w1", "healthy") == b"0", what="worker registered unhealthy"
    )
    wait_for(lambda: worker.log().count("unavailable") >= 1, what="the log line")
    # several refreshes fail meanwhile; the log says it once
    beats = int(float(fleet.redis.hget("corral:worker:w1", "last_seen") or 0))
    wait_for(
        lambda: float(fleet.redis.hget("corral:worker:w1", "last_seen") or 0) > beats + 1, what="2 beats"
    )
    assert worker.log().count("unavailable") == 1 and worker.alive()
    fleet.simulator("llama3:latest", port=port)
    fleet.wait_worker("w1")
    job = http.post("/jobs", json={"model": "llama3", "prompt": "ollama is back"}).json()
    view = wait_for(lambda: (v := http.get(f"/jobs/{job['id']}").json())["status"] == "succeeded" and v,
                    what="job once ollama is up")  # fmt: skip
    assert view["text"] == expected_text("llama3", "ollama is back") and "is up" in worker.log()


def test_ollama_dying_keeps_models_registered_and_jobs_queue(fleet: Fleet) -> None:
    port = free_port()
    fleet.simulator("llama3:latest", port=port, name="sim")
    fleet.worker(f"http://127.0.0.1:{port}", "w1")
    http = fleet.http(fleet.api())
    sim = next(c for c in fleet.children if c.name == "sim")
    sim.kill()
    wait_for(lambda: fleet.redis.hget("corral:worker:w1", "healthy") == b"0", what="worker unhealthy")
    response = http.post("/jobs", json={"model": "llama3", "prompt": "queued while down"})
    assert response.status_code == 202  # the last known model list still counts
    job_id = response.json()["id"]
    assert http.get(f"/jobs/{job_id}").json()["status"] == "queued"
    fleet.simulator("llama3:latest", port=port, name="sim2")
    view = wait_for(lambda: (v := http.get(f"/jobs/{job_id}").json())["status"] == "succeeded" and v,
                    what="queued job to run when ollama is back")  # fmt: skip
    assert view["text"] == expected_text("llama3", "queued while down")


def test_worker_restarting_with_its_id_requeues_its_running_job(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest", tps=10)
    worker = fleet.worker(sim, "w1")
    http = fleet.http(fleet.api())
    prompt = " ".join(f"w{i}" for i in range(30))
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": prompt}).json()["id"]
    wait_for(lambda: http.get(f"/jobs/{job_id}").json()["events"] > 5, what="job streaming")
    worker.kill()
    fleet.worker(sim, "w1")
    view = wait_for(lambda: (v := http.get(f"/jobs/{job_id}").json())["status"] == "succeeded" and v,
                    timeout=30, what="job to finish after restart")  # fmt: skip
    assert view["attempt"] == 2 and view["text"] == expected_text("llama3", prompt)
    lines = http.get(f"/jobs/{job_id}/events", headers={"Accept": "application/x-ndjson"}).text.splitlines()
    parsed = [json.loads(line) for line in lines]
    assert [e["seq"] for e in parsed] == list(range(len(parsed)))
    types = [e["type"] for e in parsed]
    assert types.count("retry") == 1 and types.count("done") == 1 and types.count("started") == 2
    after_retry = parsed[types.index("retry") :]
    assert "".join(e["text"] for e in after_retry if e["type"] == "chunk") == expected_text("llama3", prompt)


def test_model_gone_from_a_host_requeues_for_another(fleet: Fleet) -> None:
    slow_refresh = {"model_refresh_interval": 60}  # host a still believes it has the model when the job comes
    sim_a = fleet.simulator("llama3:latest")
    fleet.worker(sim_a, "a", **slow_refresh)
    http = fleet.http(fleet.api())
    assert fleet.redis.zscore("corral:model:llama3:latest:workers", "a")
    import httpx

    httpx.request("DELETE", sim_a + "/api/delete", json={"model": "llama3"})  # `ollama rm` behind a's back
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": "find another host"}).json()["id"]
    events = f"corral:events:{job_id}"
    wait_for(
        lambda: any(b'"type":"retry"' in e[b"e"] for _, e in fleet.redis.xrange(events)), what="re-queued"
    )
    wait_for(
        lambda: fleet.redis.zscore("corral:model:llama3:latest:workers", "a") is None, what="a dropped it"
    )
    sim_b = fleet.simulator("llama3:latest")
    fleet.worker(sim_b, "b")
    view = wait_for(lambda: (v := http.get(f"/jobs/{job_id}").json())["status"] == "succeeded" and v,
                    what="job done on b")  # fmt: skip
    assert view["worker"] == "b" and view["text"] == expected_text("llama3", "find another host")
    assert view["attempt"] == 1  # not the job's fault: the retry limit is not charged


def test_worker_waiting_for_redis_stops_on_sigterm(fleet: Fleet) -> None:
    import signal

    from ..support import Child, base_env, free_port

    env = base_env(f"redis://127.0.0.1:{free_port()}/0", ollama_url="http://127.0.0.1:1", worker_id="lonely")
    worker = Child("worker-lonely", ["worker"], env, fleet.log_dir).start()
    fleet.children.append(worker)
    wait_for(lambda: "not reachable" in worker.log(), what="worker waiting for redis")
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(10) == 0
