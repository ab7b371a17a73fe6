"""Core job path numbers: added time-to-first-token, end-to-end jobs/s, idle memory."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import httpx

from .harness import Rig, pct, rss_mb, summary
from .rawhttp import RawClient


async def ttft_direct(http: httpx.AsyncClient, sim: str, prompt: str) -> float:
    start = time.perf_counter()
    body = {"model": "llama3", "prompt": prompt, "stream": True}
    ttft = 0.0
    async with http.stream("POST", sim + "/api/generate", json=body) as response:
        async for line in response.aiter_lines():
            if line and not ttft:
                ttft = time.perf_counter() - start
    return ttft


async def ttft_corral_stream(http: httpx.AsyncClient, api: str, prompt: str) -> float:
    """Submit and stream in one request (``"stream": true``), as a drop-in client does."""
    start = time.perf_counter()
    ttft = 0.0
    body = {"model": "llama3", "prompt": prompt, "stream": True}
    async with http.stream(
        "POST", api + "/jobs", json=body, headers={"Accept": "application/x-ndjson"}
    ) as resp:
        async for line in resp.aiter_lines():
            if line and not ttft and json.loads(line)["type"] == "chunk":
                ttft = time.perf_counter() - start
    return ttft


async def ttft_corral(http: httpx.AsyncClient, api: str, prompt: str) -> float:
    """Submit (202), then follow the events with a second request."""
    start = time.perf_counter()
    job = (await http.post(api + "/jobs", json={"model": "llama3", "prompt": prompt})).json()
    ttft = 0.0
    headers = {"Accept": "application/x-ndjson"}
    async with http.stream("GET", f"{api}/jobs/{job['id']}/events", headers=headers) as response:
        async for line in response.aiter_lines():
            if line and not ttft and json.loads(line)["type"] == "chunk":
                ttft = time.perf_counter() - start
    return ttft


TTFT_SIM: dict[str, Any] = {
    "ttft": 0.02,
    "tps": 200,
    "load_time": 0,
    "parallel": 4,
}  # `corral simulate` options


def ttft_stack(rig: Rig, one_process: bool = False) -> tuple[str, str]:
    """The time-to-first-token scenario's simulator (20 ms to the first token, 200 tokens/s), its worker and an
    API: their URLs (simulator, API). ``one_process``: the worker in the API's process (``corral api --worker``)."""
    sim = rig.simulator(**TTFT_SIM)
    if one_process:
        api, _ = rig.api(ollama_url=sim, worker_id="bench-w", worker_slots=4, worker_in_process=True)
        return sim, api
    rig.worker(sim, "bench-w", worker_slots=4)
    api, _ = rig.api()
    return sim, api


def bench_ttft(n: int) -> dict[str, Any]:
    """Time to first token, one request at a time, interleaving direct and through-Corral requests."""
    rig = Rig()
    try:
        sim, api = ttft_stack(rig)

        async def run() -> tuple[list[float], list[float], list[float], list[float]]:
            direct, stream, direct_2, two_step = [], [], [], []
            async with httpx.AsyncClient(timeout=30) as http:
                for i in range(10):  # warm up every path
                    await ttft_direct(http, sim, f"warm {i}")
                    await ttft_corral_stream(http, api, f"warm {i}")
                    await ttft_corral(http, api, f"warm {i}")
                # each request through Corral right after a direct one, its pair: Corral has idled through the
                # direct stream (~0.2 s), as it idles between one user's requests, for both paths alike
                for i in range(n):
                    direct.append(await ttft_direct(http, sim, f"p {i}"))
                    stream.append(await ttft_corral_stream(http, api, f"p {i}"))
                    direct_2.append(await ttft_direct(http, sim, f"q {i}"))
                    two_step.append(await ttft_corral(http, api, f"q {i}"))
            return direct, stream, direct_2, two_step

        direct, stream, direct_2, two_step = asyncio.run(run())
        return {
            "direct": summary(direct),
            "corral": summary(stream),
            "two_step": summary(two_step),
            "added": summary([c - d for c, d in zip(stream, direct, strict=True)]),
            "added_two_step": summary([c - d for c, d in zip(two_step, direct_2, strict=True)]),
        }
    finally:
        rig.close()


def parse_time(value: bytes) -> datetime:
    return datetime.strptime(value.decode(), "%Y-%m-%dT%H:%M:%S.%fZ")


def bench_throughput(n: int, concurrency: int, one_process: bool = False) -> dict[str, Any]:  # noqa: C901 - one scenario, its helpers inline
    """Jobs/s end to end with an instant simulator, against the same simulator called directly. ``one_process``:
    the worker in the API's process (``corral api --worker``)."""
    rig = Rig()
    try:
        sim = rig.simulator(ttft=0, tps=0, load_time=0, parallel=64, time_scale=0)
        if one_process:
            api, api_proc = rig.api(
                ollama_url=sim, worker_id="bench-w", worker_slots=16, worker_in_process=True
            )
            worker = api_proc
        else:
            worker = rig.worker(sim, "bench-w", worker_slots=16)
            api, api_proc = rig.api()
        assert rig.server is not None
        idle = {"worker": rss_mb(worker), "api": rss_mb(api_proc)}

        async def direct() -> float:
            # one client per virtual user: httpx's shared pool collapses past a few dozen connections
            clients = [await RawClient(sim).connect() for _ in range(concurrency)]

            async def user(k: int) -> None:
                for i in range(k, n, concurrency):
                    body = {"model": "llama3", "prompt": f"d{i}", "stream": True}
                    status, _ = await clients[k].request("POST", "/api/generate", body)
                    assert status == 200

            start = time.perf_counter()
            await asyncio.gather(*(user(k) for k in range(concurrency)))
            rate = n / (time.perf_counter() - start)
            for raw in clients:
                await raw.close()
            return rate

        async def through_corral() -> tuple[float, list[float]]:
            clients = [await RawClient(api).connect() for _ in range(concurrency)]
            ids: list[str] = []

            async def user(k: int) -> None:
                for i in range(k, n, concurrency):
                    status, body = await clients[k].request(
                        "POST", "/jobs", {"model": "llama3", "prompt": f"c{i}"}
                    )
                    assert status == 202, body
                    ids.append(json.loads(body)["id"])

            start = time.perf_counter()
            await asyncio.gather(*(user(k) for k in range(concurrency)))
            # done when the queue and the worker's in-flight list are empty (polling is cheaper than
            # following 3000 event streams from this process, which shares the 2 cores)
            while await asyncio.to_thread(busy):
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - start
            for raw in clients:
                await raw.close()
            return n / elapsed, await asyncio.to_thread(job_latencies, ids)

        def busy() -> int:
            return int(
                rig.redis.llen("rq:queue:ollama:llama3:latest") + rig.redis.llen("corral:inflight:bench-w")
            )

        def job_latencies(ids: list[str]) -> list[float]:
            """enqueued → ended, from the job records (RQ timestamps)."""
            pipe = rig.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(f"rq:job:{job_id}", "enqueued_at", "ended_at", "status")
            out = []
            for enqueued, ended, status in pipe.execute():
                assert status == b"finished", status
                out.append((parse_time(ended) - parse_time(enqueued)).total_seconds())
            return out

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
