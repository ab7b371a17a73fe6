"""Failure numbers: dead-worker detection → job running again (default settings), Redis restart recovery."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from .harness import Rig, wait


def bench_failover(kills: int) -> dict[str, Any]:
    """SIGKILL the worker running a job, ``kills`` times, with the default heartbeat (2 s) / TTL (6 s)."""
    rig = Rig()
    try:
        sims = [rig.simulator(ttft=0, tps=5, load_time=0, parallel=4) for _ in range(2)]
        workers = {f"w{i}": (rig.worker(sims[i], f"w{i}"), sims[i]) for i in range(2)}
        api, _ = rig.api()
        http = httpx.Client(base_url=api, timeout=30)
        delays: list[float] = []
        for n in range(kills):
            job_id = http.post("/jobs", json={"model": "llama3", "prompt": "x " * 200}).json()["id"]
            wait(lambda j=job_id: http.get(f"/jobs/{j}").json()["status"] == "running")
            victim = http.get(f"/jobs/{job_id}").json()["worker"]
            process, sim = workers.pop(victim)
            process.kill()
            killed = time.monotonic()
            wait(lambda j=job_id: (v := http.get(f"/jobs/{j}").json())["status"] == "running" and v["attempt"] == 2,
                 timeout=60)  # fmt: skip
            delays.append(time.monotonic() - killed)
            http.delete(f"/jobs/{job_id}")
            workers[f"r{n}"] = (rig.worker(sim, f"r{n}"), sim)
        recovery = redis_restart(rig, http)
        http.close()
        return {"p50": statistics.median(delays), "max": max(delays), "n": len(delays), "redis": recovery}
    finally:
        rig.close()


def redis_restart(rig: Rig, http: httpx.Client) -> dict[str, float]:
    """kill -9 Redis and restart it: seconds until the API accepts a job again and until that job is done."""
    assert rig.server is not None
    rig.server.kill()
    started = time.monotonic()
    rig.server.start()
    job: dict[str, Any] = {}

    def accepted() -> bool:
        response = http.post("/jobs", json={"model": "llama3", "prompt": "back"})
        job.update(response.json())
        return response.status_code == 202

    wait(accepted, timeout=60)
    api_back = time.monotonic() - started
    wait(lambda: http.get(f"/jobs/{job['id']}").json()["status"] == "succeeded", timeout=60)
    return {"api": api_back, "job_done": time.monotonic() - started}
