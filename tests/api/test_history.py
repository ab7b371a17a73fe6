"""Job history (GET /jobs, `corral jobs`) and the per-host tuning published in the heartbeat, over real
processes; the history index's trimming against a real redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
import redis

from corral.common import keys
from corral.common.jobs import Limits
from corral.common.schemas import JobRequest
from corral.common.store import JobStore
from corral.simulator import expected_text

from ..conftest import Fleet
from ..support import ROOT, base_env, wait_for

pytestmark = pytest.mark.integration
ENDED = ("succeeded", "failed", "cancelled")


def corral(fleet: Fleet, api: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = base_env(fleet.redis_url, api=api)
    env["CORRAL_API"] = api
    return subprocess.run([sys.executable, "-m", "corral", *argv], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)  # fmt: skip


def submit_all(http: httpx.Client, bodies: list[dict[str, Any]]) -> list[str]:
    ids = []
    for body in bodies:
        response = http.post("/jobs", json=body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def pages(http: httpx.Client, **params: Any) -> list[list[str]]:
    out, cursor = [], None
    for _ in range(20):
        body = http.get("/jobs", params={**params, **({"cursor": cursor} if cursor else {})}).json()
        out.append([j["id"] for j in body["jobs"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("pagination did not end")


def test_history_filters_pages_and_cli(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest,qwen2.5:0.5b,nomic-embed-text:latest", tps=200)
    fleet.worker(sim, "h1", max_loaded_models=2, worker_weight=2.5)
    api = fleet.api()
    http = fleet.http(api)
    bodies: list[dict[str, Any]] = [{"model": "llama3", "prompt": f"p{i} a b"} for i in range(4)]
    bodies += [{"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "hi"}]},
               {"model": "nomic-embed-text", "prompt": "no generate here"},
               {"model": "ghost", "prompt": "waits", "wait": True}]  # fmt: skip
    ids = submit_all(http, bodies)
    for job_id in ids[:-1]:
        wait_for(lambda j=job_id: http.get(f"/jobs/{j}").json()["status"] in ENDED, what="jobs to end")

    listed = http.get("/jobs").json()
    assert [j["id"] for j in listed["jobs"]] == ids[::-1] and listed["next_cursor"] is None
    first = next(j for j in listed["jobs"] if j["id"] == ids[0])
    assert first["status"] == "succeeded" and first["worker"] == "h1" and first["attempt"] == 1
    assert first["eval_count"] == len(expected_text("llama3", "p0 a b").split())
    assert (
        first["queued_s"] >= 0
        and 0 < first["ttft_s"] < 5
        and first["tokens_per_s"] > 0
        and first["run_s"] > 0
    )
    assert first["error"] is None and first["model"] == "llama3:latest" and first["kind"] == "generate"

    def only(**params: Any) -> list[str]:
        response = http.get("/jobs", params=params)
        assert response.status_code == 200, response.text
        return [j["id"] for j in response.json()["jobs"]]

    failed = http.get("/jobs", params={"status": "failed"}).json()["jobs"]
    assert [j["id"] for j in failed] == [ids[5]] and "does not support" in failed[0]["error"]
    assert only(status="queued") == [ids[6]]
    assert only(model="qwen2.5:0.5b") == [ids[4]]
    assert only(worker="h1") == ids[:6][::-1]
    assert only(since=str(time.time() + 3600)) == []
    assert only(since="2020-01-01T00:00:00Z") == ids[::-1]

    split = pages(http, limit=3)
    assert [len(p) for p in split][:2] == [3, 3] and [i for p in split for i in p] == ids[::-1]
    first_page = http.get("/jobs", params={"limit": 2}).json()
    submit_all(http, [{"model": "llama3", "prompt": "newer"}])  # arrives between two pages: not in the next
    rest = http.get("/jobs", params={"limit": 100, "cursor": first_page["next_cursor"]}).json()["jobs"]
    assert [j["id"] for j in first_page["jobs"] + rest] == ids[::-1]

    def state() -> tuple[int, int]:
        return fleet.redis.zcard(keys.HISTORY), len(fleet.redis.keys("rq:job:*"))

    before = state()
    for params, status in [({"status": "done"}, 422), ({"limit": 0}, 422), ({"limit": 1001}, 422),
                           ({"since": "yesterday"}, 400), ({"since": "-5"}, 400), ({"cursor": "abc"}, 400),
                           ({"cursor": "1.5:not-an-id"}, 400), ({"model": "Bad Name!"}, 400),
                           ({"worker": "a b"}, 400)]:  # fmt: skip
        response = http.get("/jobs", params=params)
        assert response.status_code == status, (params, response.text)
        assert response.json()["error"], response.text
    assert state() == before

    out = corral(fleet, api, "jobs", "--status", "failed")
    assert out.returncode == 0 and ids[5] in out.stdout and "TTFT" in out.stdout, out.stderr
    as_json = json.loads(corral(fleet, api, "jobs", "--model", "qwen2.5:0.5b", "--json").stdout)
    assert [j["id"] for j in as_json["jobs"]] == [ids[4]]
    assert corral(fleet, api, "jobs", "--status", "bogus").returncode == 2

    worker = http.get("/workers").json()["workers"][0]
    assert (worker["max_loaded_models"], worker["weight"], worker["backend"]) == (2, 2.5, "ollama")
    table = corral(fleet, api, "workers").stdout
    assert "WEIGHT" in table and "2.5" in table and "ollama" in table


def test_history_index_trimmed_by_count_and_age(r: redis.Redis) -> None:
    limits = Limits(events_maxlen=1000, events_ttl_ms=60_000, result_ttl=60, job_timeout=30, max_retries=2,
                    history_ttl=600, history_max=3)  # fmt: skip
    store = JobStore(r, limits)
    r.zadd(keys.HISTORY, {"0" * 32: time.time() - 3600})  # older than history_ttl
    ids = [store.enqueue(JobRequest(model="llama3", prompt=f"{i}", wait=True)).id for i in range(5)]
    assert [m.decode() for m in r.zrevrange(keys.HISTORY, 0, -1)] == ids[:1:-1]
