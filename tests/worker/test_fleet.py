"""Several hosts: simulators with different models, one worker each, real processes end to end."""

from __future__ import annotations

import asyncio
import json
import pickle
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from corral.simulator import expected_text

from ..conftest import Fleet
from ..support import wait_for

pytestmark = pytest.mark.integration


async def run_job(
    http: httpx.AsyncClient, body: dict[str, Any], follow: bool
) -> tuple[str, list[dict[str, Any]]]:
    response = await http.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    events: list[dict[str, Any]] = []
    headers = {"Accept": "application/x-ndjson"}
    for _ in range(5 if follow else 0):  # a reader that loses its connection resumes from its next seq
        params = {"from": events[-1]["seq"] + 1} if events else {}
        try:
            async with http.stream("GET", f"/jobs/{job_id}/events", headers=headers, params=params) as stream:
                async for line in stream.aiter_lines():
                    if line:
                        events.append(json.loads(line))
            break
        except httpx.TransportError:
            continue
    return job_id, events


def mixed_jobs(n: int) -> list[dict[str, Any]]:
    jobs = []
    for i in range(n):
        kind = i % 5
        if kind in (0, 1):
            jobs.append({"model": "llama3", "prompt": f"job {i} on llama"})
        elif kind == 2:
            jobs.append({"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": f"chat {i}"}]})
        elif kind == 3:
            jobs.append({"model": "mistral", "prompt": f"shared {i}"})
        else:
            jobs.append({"model": "nomic-embed-text", "input": f"embed {i}"})
    return jobs


def expected(body: dict[str, Any]) -> str | None:
    if "prompt" in body:
        return expected_text(body["model"], body["prompt"])
    if "messages" in body:
        return expected_text(body["model"], body["messages"][-1]["content"])
    return None


def test_200_mixed_jobs_on_two_hosts_each_once_on_a_host_with_its_model(fleet: Fleet) -> None:
    host_a = fleet.simulator("llama3:latest,mistral:latest,nomic-embed-text:latest", tps=400, parallel=4)
    host_b = fleet.simulator("qwen2.5:0.5b,mistral:latest", tps=400, parallel=4)
    fleet.worker(host_a, "host-a", worker_slots=8)
    fleet.worker(host_b, "host-b", worker_slots=8)
    api = fleet.api()
    bodies = mixed_jobs(200)

    async def main() -> list[Any]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=api, timeout=120, limits=limits) as http:
            jobs = (run_job(http, b, follow=i % 2 == 0) for i, b in enumerate(bodies))
            return await asyncio.gather(
                *jobs, return_exceptions=True
            )  # every task ends before the client closes

    results = asyncio.run(main())
    assert not [r for r in results if isinstance(r, BaseException)], results
    allowed = {"llama3:latest": {"host-a"}, "nomic-embed-text:latest": {"host-a"},
               "qwen2.5:0.5b": {"host-b"}, "mistral:latest": {"host-a", "host-b"}}  # fmt: skip
    used = set()
    with httpx.Client(base_url=api) as http:
        for (job_id, live), body in zip(results, bodies, strict=True):
            view = http.get(f"/jobs/{job_id}").json()
            assert view["status"] == "succeeded", view
            assert view["attempt"] == 1 and view["worker"] in allowed[view["model"]]
            used.add(view["worker"])
            if expected(body) is not None:
                assert view["text"] == expected(body)
            late = [json.loads(x) for x in http.get(f"/jobs/{job_id}/events",
                    headers={"Accept": "application/x-ndjson"}).text.splitlines()]  # fmt: skip
            assert [e["seq"] for e in late] == list(range(len(late)))
            types = [e["type"] for e in late]
            assert types.count("started") == 1 and types.count("done") == 1 and "retry" not in types
            if live:
                assert live == late  # a live reader saw exactly what the replay holds
            chunks = "".join(e["text"] for e in late if e["type"] == "chunk")
            if expected(body) is not None:
                assert chunks == expected(body)
    assert used == {"host-a", "host-b"}
    stats = [httpx.get(h + "/_sim/stats").json() for h in (host_a, host_b)]
    generations = sum(1 for b in bodies if "input" not in b)
    assert sum(s["completed"] for s in stats) == generations  # no generation ran twice


def test_worker_follows_pull_and_rm_without_losing_a_running_job(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest", tps=20)
    fleet.worker(sim, "w1")
    api = fleet.api()
    http = fleet.http(api)
    assert http.post("/jobs", json={"model": "phi3", "prompt": "x"}).status_code == 404
    httpx.post(sim + "/api/pull", json={"model": "phi3", "stream": False})
    wait_for(lambda: http.post("/jobs", json={"model": "phi3", "prompt": "now"}).status_code == 202,
             what="phi3 to be served")  # fmt: skip
    # a long job is running when its model is removed from the host: it still finishes
    long_job = http.post("/jobs", json={"model": "llama3", "prompt": " ".join(["w"] * 40)}).json()["id"]
    wait_for(lambda: http.get(f"/jobs/{long_job}").json()["status"] == "running", what="long job running")
    httpx.request("DELETE", sim + "/api/delete", json={"model": "llama3"})
    wait_for(lambda: http.post("/jobs", json={"model": "llama3", "prompt": "x"}).status_code == 404,
             what="llama3 to be dropped")  # fmt: skip
    view = wait_for(lambda: (v := http.get(f"/jobs/{long_job}").json())["status"] != "running" and v,
                    what="long job to end")  # fmt: skip
    assert view["status"] == "succeeded" and view["text"] == expected_text("llama3", " ".join(["w"] * 40))
    # queued jobs for a model nobody has wait (with wait=true) and are not taken
    waiting = http.post("/jobs", json={"model": "llama3", "prompt": "later", "wait": True}).json()["id"]
    httpx.post(sim + "/api/pull", json={"model": "llama3", "stream": False})
    done = wait_for(lambda: (v := http.get(f"/jobs/{waiting}").json())["status"] == "succeeded" and v,
                    what="waiting job to run once the model is back")  # fmt: skip
    assert done["text"] == expected_text("llama3", "later")


def test_slots_run_jobs_concurrently_without_forking(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest", ttft=0.5, tps=1000, parallel=8)
    worker = fleet.worker(sim, "w1", worker_slots=4)
    api = fleet.api()
    http = fleet.http(api)
    ids = [http.post("/jobs", json={"model": "llama3", "prompt": f"p{i}"}).json()["id"] for i in range(8)]
    views = [wait_for(lambda i=i: (v := http.get(f"/jobs/{i}").json())["status"] == "succeeded" and v,
                      what="job done") for i in ids]  # fmt: skip
    spans = sorted((v["started_at"], v["ended_at"]) for v in views)
    # 4 slots: the first four ran side by side, the fifth waited for a free slot
    assert all(start < spans[0][1] for start, _ in spans[:4])
    assert spans[4][0] >= min(end for _, end in spans[:4])
    import psutil

    assert psutil.Process(worker.pid).children() == []  # no process forked per job


def test_planted_jobs_naming_other_functions_are_refused(fleet: Fleet, tmp_path: Path) -> None:
    sim = fleet.simulator("llama3:latest")
    fleet.worker(sim, "w1")
    marker = tmp_path / "pwned"
    r = fleet.redis
    pickled = Queue("ollama:llama3:latest", connection=r).enqueue("os.system", f"touch {marker}")
    as_json = Queue("ollama:llama3:latest", connection=r, serializer=JSONSerializer).enqueue(
        "os.system", f"touch {marker}"
    )
    for job in (pickled, as_json):
        wait_for(lambda job=job: r.hget(f"rq:job:{job.id}", "status") == b"failed", what="planted job failed")
        assert b"refused" in (r.hget(f"rq:job:{job.id}", "error") or b"")
    assert not marker.exists()
    # and raw bytes that RQ would unpickle are never unpickled
    evil = zlib.compress(pickle.dumps(("os.system", None, (f"touch {marker}",), {})))
    job = Job.create("corral.generate", connection=r, id="e" * 32, serializer=JSONSerializer)
    mapping = job.to_dict()
    mapping.update(
        data=evil, status="queued", model="llama3:latest", attempt=1, seq=0, origin="ollama:llama3:latest"
    )
    r.hset("rq:job:" + "e" * 32, mapping=mapping)
    r.rpush("rq:queue:ollama:llama3:latest", "e" * 32)
    r.publish("corral:wake:llama3:latest", "x")
    wait_for(lambda: r.hget("rq:job:" + "e" * 32, "status") == b"failed", what="pickled job refused")
    assert not marker.exists()
