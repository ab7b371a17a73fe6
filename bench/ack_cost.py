"""What ``CORRAL_ACK_REPLICAS=1`` costs: added time to first token and jobs/s, against the same stack without it.

One Redis with one replica on loopback, one worker (an instant simulator: what is measured is Corral's own time)
and two APIs on that Redis, one acknowledging after ``WAIT 1`` and one not; requests alternate between the two
(TTFT: one at a time, in pairs; jobs/s: rounds of ``jobs`` submits from 32 concurrent clients, in both orders),
medians over the pairs and rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import httpx
import redis

from corral.cli.embedded_redis import RedisServer

from .core import ttft_corral_stream
from .harness import Rig, free_port, summary, wait
from .rawhttp import RawClient


def with_replica(rig: Rig) -> RedisServer:
    assert rig.server is not None
    rig.redis.config_set("repl-diskless-sync-delay", 0)
    extra = ["--replicaof", "127.0.0.1", str(rig.server.port)]
    replica = RedisServer(port=free_port(), data_dir=rig.tmp / "replica", extra=extra).start()
    with redis.Redis(port=replica.port) as client:
        wait(lambda: client.info("replication")["master_link_status"] == "up")
    return replica


async def jobs_per_s(http: httpx.AsyncClient, api: str, jobs: int, concurrency: int = 32) -> float:
    """Submit ``jobs`` jobs (202 each) and wait for the last to end: jobs/s over that time."""
    ids: list[str] = []
    clients = [await RawClient(api).connect() for _ in range(concurrency)]  # (as bench.core: one per user)
    start = time.perf_counter()

    async def client(n: int) -> None:
        for i in range(n, jobs, concurrency):
            status, body = await clients[n].request("POST", "/jobs", {"model": "llama3", "prompt": f"j{i}"})
            assert status == 202, body
            ids.append(json.loads(body)["id"])

    await asyncio.gather(*(client(n) for n in range(concurrency)))
    for raw in clients:
        await raw.close()
    for job_id in ids[-concurrency:]:  # the last ones submitted end last (one queue, in order)
        while (await http.get(f"{api}/jobs/{job_id}")).json()["status"] not in {"succeeded", "failed"}:
            await asyncio.sleep(0.01)
    return jobs / (time.perf_counter() - start)


def bench_ack_cost(pairs: int, rounds: int, jobs: int) -> dict[str, Any]:
    rig = Rig()
    replica = with_replica(rig)
    try:
        sim = rig.simulator(ttft=0, tps=0, load_time=0, parallel=64, time_scale=0)
        rig.worker(sim, "bench-w", worker_slots=16)
        plain, _ = rig.api()
        acked, _ = rig.api(ack_replicas=1, ack_timeout_ms=1000)

        async def run() -> dict[str, Any]:
            ttft: dict[str, list[float]] = {"off": [], "on": []}
            rate: dict[str, list[float]] = {"off": [], "on": []}
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as http:
                for i in range(10):
                    await ttft_corral_stream(http, plain, f"warm {i}")
                    await ttft_corral_stream(http, acked, f"warm {i}")
                for i in range(pairs):
                    order = [("off", plain), ("on", acked)][:: 1 if i % 2 else -1]
                    for name, api in order:
                        ttft[name].append(await ttft_corral_stream(http, api, f"p {i}"))
                for i in range(rounds):
                    order = [("off", plain), ("on", acked)][:: 1 if i % 2 else -1]
                    for name, api in order:
                        rate[name].append(await jobs_per_s(http, api, jobs))
            added = [on - off for on, off in zip(ttft["on"], ttft["off"], strict=True)]
            return {"ttft": {k: summary(v) for k, v in ttft.items()}, "added": summary(added), "rate": rate}

        return asyncio.run(run())
    finally:
        rig.close()
        replica.kill()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ack_cost")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    result = bench_ack_cost(args.pairs, args.rounds, args.jobs)
    off, on = result["ttft"]["off"], result["ttft"]["on"]
    rate_off, rate_on = (statistics.median(result["rate"][k]) for k in ("off", "on"))
    print("| measure | CORRAL_ACK_REPLICAS=0 | CORRAL_ACK_REPLICAS=1 | difference |")
    print("|---|---|---|---|")
    print(f"| TTFT p50 (POST stream, instant simulator) | {off['p50'] * 1e3:.2f} ms | {on['p50'] * 1e3:.2f} ms "
          f"| paired +{result['added']['p50'] * 1e3:.2f} ms (95% CI {result['added']['lo'] * 1e3:.2f}"
          f"-{result['added']['hi'] * 1e3:.2f}) |")  # fmt: skip
    print(f"| TTFT p95 | {off['p95'] * 1e3:.2f} ms | {on['p95'] * 1e3:.2f} ms | |")
    print(f"| jobs/s, {args.jobs} jobs from 32 clients (median of {args.rounds}) | {rate_off:.0f} | {rate_on:.0f} "
          f"| {rate_on / rate_off - 1:+.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
