"""Model management end to end on three simulated hosts: placement, progress, the official client, routing that
follows a pull or a delete, errors as Ollama gives them, cancel."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest

from corral import AsyncClient, Client
from corral.common.errors import CorralError

from ..conftest import Fleet, own_fleet
from ..support import Child, base_env, wait_for

pytestmark = pytest.mark.integration
HOSTS = ("wa", "wb", "wc")
REGISTRY = json.dumps(
    {
        "phi3": 0.5,
        "mistral": 0.5,
        "qwen3": 0.5,
        "gemma": 0.5,
        "tiny": 0.5,
        "big": 50,
        "slow": 4,
        "slow2": 4,
        "slow3": 4,
    }
)
RATE = 2000  # MiB/s: a 4 GB pull takes ~2 s


class Models:
    def __init__(self, fleet: Fleet, api: str, sims: dict[str, str], workers: dict[str, Child]) -> None:
        self.fleet = fleet
        self.workers = workers
        self.api = api
        self.http = fleet.http(api)
        self.sims = sims

    def disk(self, worker: str) -> list[str]:
        return list(httpx.get(self.sims[worker] + "/sim/stats").json()["disk"])

    def holders(self, model: str) -> set[str]:
        entries = self.http.get("/models").json()["models"]
        return {h["worker"] for m in entries if m["name"] == model for h in m["hosts"]}

    def events(self, op_id: str) -> list[dict[str, Any]]:
        with self.http.stream("GET", f"/models/ops/{op_id}/events") as response:
            return [json.loads(line) for line in response.iter_lines() if line.strip()]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    with own_fleet(tmp_path_factory.mktemp("models")) as (_server, fleet):
        sims, workers = {}, {}
        for worker in HOSTS:
            sims[worker] = fleet.simulator("llama3:latest", registry=REGISTRY, pull_rate=RATE, disk_gb=20,
                                           tps=50)  # fmt: skip
            workers[worker] = fleet.worker(sims[worker], worker, wait_ready=False, model_op_replace_after=1.5)
        for worker in HOSTS:
            fleet.wait_worker(worker)
        yield Models(fleet, fleet.api(), sims, workers)


def test_pull_with_replicas_places_on_that_many_hosts_and_reports_progress(models: Models) -> None:
    response = models.http.post("/models/pull", json={"model": "phi3", "replicas": 2})
    assert response.status_code == 202, response.text
    op = response.json()
    assert len(op["hosts"]) == 2 and op["placement"] == {"replicas": 2}
    events = models.events(op["id"])
    assert events[0]["type"] == "queued" and events[-1]["type"] == "done"
    progress = [e for e in events if e["type"] == "progress" and e.get("total")]
    assert {e["worker"] for e in progress} == set(op["hosts"])
    assert all(0 <= e["percent"] <= 100 and e["total"] == 512 * 2**20 for e in progress)
    assert max(e["percent"] for e in progress) == 100.0
    assert any(e.get("speed") for e in progress)
    # advertised at once: the heartbeat written when the pull ended has it
    assert models.holders("phi3:latest") == set(op["hosts"])
    for worker in op["hosts"]:
        assert "phi3:latest" in models.disk(worker)


def test_named_hosts_and_all(models: Models) -> None:
    op = models.http.post("/models/pull", json={"model": "mistral", "hosts": ["wc"], "wait": True}).json()
    assert op["status"] == "succeeded" and list(op["hosts"]) == ["wc"]
    assert models.holders("mistral:latest") == {"wc"}
    op = models.http.post("/models/pull", json={"model": "mistral", "all": True, "wait": True}).json()
    assert op["status"] == "succeeded" and set(op["hosts"]) == set(HOSTS)
    assert models.holders("mistral:latest") == set(HOSTS)
    bad = models.http.post("/models/pull", json={"model": "mistral", "hosts": ["nope"]})
    assert bad.status_code == 400 and "nope" in bad.json()["error"]


def test_official_client_pull_loop_copy_and_delete(models: Models) -> None:
    with ollama.Client(host=models.api) as client:
        official_client_round(models, client)


def official_client_round(models: Models, client: ollama.Client) -> None:
    seen = []
    for progress in client.pull("qwen3", stream=True):
        seen.append((progress.status, progress.digest, progress.total, progress.completed))
    assert seen[0][0] == "pulling manifest" and seen[-1][0] == "success"
    sizes = [(total, done) for status, digest, total, done in seen if digest]
    assert (
        sizes and sizes[-1][1] == sizes[-1][0] == 512 * 2**20
    )  # one replica by default (CORRAL_PULL_REPLICAS)
    assert len(models.holders("qwen3:latest")) == 1
    assert client.pull("qwen3", stream=False).status == "success"
    client.copy("qwen3", "qwen3-backup")
    wait_for(lambda: models.holders("qwen3-backup:latest"), what="copy advertised")
    client.delete("qwen3-backup")
    assert models.holders("qwen3-backup:latest") == set()
    with pytest.raises(ollama.ResponseError) as missing:
        client.delete("qwen3-backup")
    assert missing.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as unknown:
        for _ in client.pull("no-such-model", stream=True):
            pass
    assert "file does not exist" in unknown.value.error
    with pytest.raises(ollama.ResponseError) as push:
        client.push("qwen3")
    assert push.value.status_code == 400 and "not supported" in push.value.error


def test_a_queued_job_starts_when_its_model_is_pulled(models: Models) -> None:
    job = models.http.post("/jobs", json={"model": "gemma", "prompt": "hi", "wait": True}).json()
    assert models.http.get(f"/jobs/{job['id']}").json()["status"] == "queued"
    models.http.post("/models/pull", json={"model": "gemma", "hosts": ["wa"]})
    done = wait_for(lambda: models.http.get(f"/jobs/{job['id']}").json()["status"] == "succeeded", timeout=20,
                    what="the queued job ran")  # fmt: skip
    assert done


def test_delete_lets_the_running_job_finish_then_the_host_stops_taking_the_model(models: Models) -> None:
    models.http.post("/models/pull", json={"model": "phi3", "all": True, "wait": True})
    job = models.http.post(
        "/jobs", json={"model": "phi3", "prompt": "x", "options": {"num_predict": 40}}
    ).json()
    running_on = wait_for(
        lambda: models.http.get(f"/jobs/{job['id']}").json().get("worker"), what="job running"
    )
    op = models.http.post(
        "/models/delete", json={"model": "phi3", "hosts": [running_on], "wait": True}
    ).json()
    assert op["status"] == "succeeded"
    assert models.http.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"
    assert "phi3:latest" not in models.disk(running_on)
    assert running_on not in models.holders("phi3:latest")
    after = models.http.post("/jobs", json={"model": "phi3", "prompt": "again"}).json()
    ran = wait_for(lambda: models.http.get(f"/jobs/{after['id']}").json(), what="job after delete")
    wait_for(lambda: models.http.get(f"/jobs/{after['id']}").json()["status"] == "succeeded", what="job ran")
    assert models.http.get(f"/jobs/{after['id']}").json()["worker"] != running_on, ran


def test_disk_full_and_cancel(models: Models) -> None:
    op = models.http.post("/models/pull", json={"model": "big", "hosts": ["wb"], "wait": True}).json()
    assert op["status"] == "failed" and "no space left on device" in op["hosts"]["wb"]["error"]
    op = models.http.post("/models/pull", json={"model": "slow", "hosts": ["wb"]}).json()
    wait_for(lambda: models.http.get(f"/models/ops/{op['id']}").json()["hosts"]["wb"].get("percent"),
             what="download under way")  # fmt: skip
    cancelled = models.http.delete(f"/models/ops/{op['id']}")
    assert cancelled.status_code == 200
    events = models.events(op["id"])
    assert events[-1]["type"] == "cancelled"
    assert "slow:latest" not in models.disk("wb")


def test_two_pulls_of_one_model_on_one_host_coalesce(models: Models) -> None:
    first = models.http.post("/models/pull", json={"model": "slow", "hosts": ["wa"]}).json()
    second = models.http.post("/models/pull", json={"model": "slow", "hosts": ["wa"]}).json()
    assert second["id"] == first["id"] and second["coalesced"] is True
    assert models.events(first["id"])[-1]["type"] == "done"


def test_cli_client_load_and_create(models: Models) -> None:
    env = {**base_env(models.fleet.redis_url), "CORRAL_API": models.api}
    out = subprocess.run([sys.executable, "-m", "corral", "models", "pull", "mistral", "--hosts", "wb"], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (
        "wb  mistral:latest  [########################] 100.0%" in out.stdout and "succeeded in" in out.stdout
    )
    listing = subprocess.run([sys.executable, "-m", "corral", "models", "ls"], env=env, capture_output=True,
                             text=True, timeout=60).stdout  # fmt: skip
    assert any(line.startswith("mistral:latest") and "wb" in line for line in listing.splitlines()), listing
    with Client(models.api) as client:
        op = client.models.load("mistral", replicas=1, keep_alive="10m")
        assert op["status"] == "succeeded"
        (warm,) = op["hosts"]
        assert "mistral:latest" in httpx.get(models.sims[warm] + "/sim/stats").json()["loaded"]
        wait_for(lambda: any(h["loaded"] for m in client.models.list() if m["name"] == "mistral:latest"
                             for h in m["hosts"] if h["worker"] == warm), what="warm in the heartbeat")  # fmt: skip
    with models.http.stream("POST", "/api/create", json={"model": "mine", "from": "mistral"}) as response:
        lines = [json.loads(x) for x in response.iter_lines() if x.strip()]
    assert lines[-1] == {"status": "success"} and {"status": "using existing layers"} in lines
    assert models.holders("mine:latest")


def percent(models: Models, op_id: str, worker: str) -> float:
    return float(models.http.get(f"/models/ops/{op_id}").json()["hosts"][worker].get("percent") or 0)


def test_a_worker_killed_mid_pull_resumes_it_when_it_comes_back(models: Models) -> None:
    op = models.http.post("/models/pull", json={"model": "slow2", "hosts": ["wb"]}).json()
    wait_for(lambda: percent(models, op["id"], "wb") >= 25, what="pull under way")
    models.workers["wb"].kill()
    at_kill = percent(models, op["id"], "wb")
    killed_at = time.monotonic()
    models.workers["wb"].start()
    events = models.events(op["id"])
    took = time.monotonic() - killed_at
    assert events[-1]["type"] == "done", events[-1]
    starts = [i for i, e in enumerate(events) if e.get("status") == "starting"]
    assert len(starts) == 2  # the task ran again
    resumed = next(e["percent"] for e in events[starts[1] :] if e.get("percent") is not None)
    assert resumed >= at_kill > 0  # Ollama (the simulator) kept the partial download
    print(f"\nkilled at {at_kill}%, resumed at {resumed}%, done {took:.1f}s after the kill")
    assert "slow2:latest" in models.disk("wb")


def test_a_dead_hosts_share_of_a_replicas_pull_goes_to_another_host(models: Models) -> None:
    op = models.http.post("/models/pull", json={"model": "slow3", "replicas": 1}).json()
    (first,) = op["hosts"]
    wait_for(lambda: percent(models, op["id"], first) > 0, what="pull under way")
    models.workers[first].kill()
    killed_at, killed_wall = time.monotonic(), time.time()
    try:
        events = models.events(op["id"])
        took = time.monotonic() - killed_at
    finally:
        models.workers[first].start()
    moved = [e for e in events if e["type"] == "moved"]
    assert events[-1]["type"] == "done" and len(moved) == 1 and moved[0]["worker"] == first
    assert "slow3:latest" in models.disk(moved[0]["to"])
    print(f"\nre-placed from {first} to {moved[0]['to']}, done {took:.1f}s after the kill")
    models.fleet.wait_worker(first, since=killed_wall)  # (the killed one's hash may outlive the op)


def test_the_async_client_has_the_same_model_methods(models: Models) -> None:
    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], int]:
        async with AsyncClient(models.api) as client:
            op = await client.models.pull("tiny", hosts=["wc"], wait=True)
            events = [event async for event in client.models.events(op["id"])]
            listing = await client.models.list()
            with pytest.raises(CorralError) as refused:
                await client.models.copy("no-such-model", "other")
            return op, events, listing, refused.value.status

    op, events, listing, status = asyncio.run(scenario())
    assert op["status"] == "succeeded" and op["hosts"] == {"wc": op["hosts"]["wc"]}
    assert events[0]["type"] == "queued" and events[-1]["type"] == "done"
    assert any(m["name"] == "tiny:latest" and {h["worker"] for h in m["hosts"]} == {"wc"} for m in listing)
    assert 400 <= status < 500
