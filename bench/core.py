"""Core job path numbers: added time-to-first-token, end-to-end jobs/s, idle memory."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from .harness import Rig, pct, rss_mb, summary


async def ttft_direct(http: httpx.AsyncClient, sim: str, prompt: str) -> float:
    start = time.perf_counter()
    body = {"model": "llama3", "prompt": prompt, "stream": True}
    ttft = 0.0
    async with http.stream("POST", sim + "/api/generate", json=body) as response:
        async for line in response.aiter_lines():
            if line and not ttft:
                ttft = time.perf_counter() - start
    return ttft


async def ttft_corral(http: httpx.AsyncClient, api: str, prompt: str) -> float:
    start = time.perf_counter()
    job = (await http.post(api + "/jobs", json={"model": "llama3", "prompt": prompt})).json()
    ttft = 0.0
    headers = {"Accept": "application/x-ndjson"}
    async with http.stream("GET", f"{api}/jobs/{job['id']}/events", headers=headers) as response:
        async for line in response.aiter_lines():
            if line and not ttft and json.loads(line)["type"] == "chunk":
                ttft = time.perf_counter() - start
    return ttft


def bench_ttft(n: int) -> dict[str, Any]:
    """Time to first token, one request at a time, interleaving direct and through-Corral requests."""
    rig = Rig()
    try:
        sim = rig.simulator(ttft=0.02, tps=200, load_time=0, parallel=4)
        rig.worker(sim, "bench-w", worker_slots=4)
        api, _ = rig.api()

        async def run() -> tuple[list[float], list[float]]:
            direct, corral = [], []
            async with httpx.AsyncClient(timeout=30) as http:
                for i in range(10):  # warm up both paths
                    await ttft_direct(http, sim, f"warm {i}")
                    await ttft_corral(http, api, f"warm {i}")
                for i in range(n):
                    direct.append(await ttft_direct(http, sim, f"p {i}"))
                    corral.append(await ttft_corral(http, api, f"p {i}"))
            return direct, corral

        direct, corral = asyncio.run(run())
        added = [c - d for c, d in zip(corral, direct, strict=True)]
        return {"direct": summary(direct), "corral": summary(corral), "added": summary(added)}
    finally:
        rig.close()


def bench_throughput(n: int, concurrency: int) -> dict[str, Any]:
    """Jobs/s end to end with an instant simulator, against the same simulator called directly."""
    rig = Rig()
    try:
        sim = rig.simulator(ttft=0, tps=0, load_time=0, parallel=64, time_scale=0)
        worker = rig.worker(sim, "bench-w", worker_slots=16)
        api, api_proc = rig.api()
        assert rig.server is not None
        idle = {"worker": rss_mb(worker), "api": rss_mb(api_proc)}

        async def direct() -> float:
            # one client per virtual user: httpx's shared pool collapses past a few dozen connections
            clients = [httpx.AsyncClient(timeout=60) for _ in range(concurrency)]

            async def user(k: int) -> None:
                for i in range(k, n, concurrency):
                    body = {"model": "llama3", "prompt": f"d{i}", "stream": True}
                    assert (await clients[k].post(sim + "/api/generate", json=body)).status_code == 200

            start = time.perf_counter()
            await asyncio.gather(*(user(k) for k in range(concurrency)))
            rate = n / (time.perf_counter() - start)
            for client in clients:
                await client.aclose()
            return rate

        async def through_corral() -> tuple[float, list[float]]:
            client = aioredis.Redis.from_url(rig.server.url)  # type: ignore[union-attr]
            pubsub = client.pubsub()
            await pubsub.psubscribe("corral:chunks:*")
            submitted: dict[str, float] = {}
            latencies: list[float] = []
            done = asyncio.Event()

            async def count_done() -> None:
                while len(latencies) < n:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg and b'"type":"done"' in msg["data"]:
                        job = json.loads(msg["data"])["job"]
                        latencies.append(time.perf_counter() - submitted.get(job, time.perf_counter()))
                done.set()

            counter = asyncio.create_task(count_done())
            clients = [httpx.AsyncClient(timeout=60) for _ in range(concurrency)]

            async def user(k: int) -> None:
                for i in range(k, n, concurrency):
                    t = time.perf_counter()
                    r = await clients[k].post(api + "/jobs", json={"model": "llama3", "prompt": f"c{i}"})
                    submitted[r.json()["id"]] = t

            start = time.perf_counter()
            await asyncio.gather(*(user(k) for k in range(concurrency)))
            await asyncio.wait_for(done.wait(), 120)
            elapsed = time.perf_counter() - start
            for client in clients:
                await client.aclose()
            await counter
            await pubsub.aclose()
            await client.aclose()
            return n / elapsed, latencies

        direct_rate = asyncio.run(direct())
        corral_rate, latencies = asyncio.run(through_corral())
        after = {"worker": rss_mb(worker), "api": rss_mb(api_proc)}
        return {
            "direct_rate": direct_rate,
            "corral_rate": corral_rate,
            "latency_p50": pct(latencies, 0.5),
            "latency_p95": pct(latencies, 0.95),
            "idle_rss": idle,
            "after_rss": after,
        }
    finally:
        rig.close()
