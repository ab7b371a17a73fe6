"""The worker's CPU time per job of two source trees: ``python -m bench.cpujob TREE_A TREE_B [N] [RUNS]``.

Each run starts one tree's stack (Redis, an instant simulator, a worker with 16 slots, an API), submits N jobs from
64 connections, waits until the worker has finished them all and divides the worker process's CPU time (user +
system, from psutil) by N. The trees take turns run by run, the first tree first in even runs, and the medians over
the runs are compared: the VM's speed drifts within minutes, so one run per tree says little.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import psutil

from . import harness
from .rawhttp import RawClient

CONCURRENCY = 64
WARM_UP = 100  # jobs before the measurement: connections opened, scripts loaded, code paths warm


async def submit(api: str, n: int, tag: str) -> None:
    clients = [await RawClient(api).connect() for _ in range(CONCURRENCY)]

    async def user(k: int) -> None:
        for i in range(k, n, CONCURRENCY):
            status, body = await clients[k].request(
                "POST", "/jobs", {"model": "llama3", "prompt": f"{tag}{i}"}
            )
            assert status == 202, body

    await asyncio.gather(*(user(k) for k in range(CONCURRENCY)))
    for client in clients:
        await client.close()


def one_run(tree: Path, n: int) -> tuple[float, float]:
    """(worker CPU seconds per job, jobs/s) of one run of ``tree``."""
    harness.ROOT = tree
    rig = harness.Rig()
    try:
        sim = rig.simulator(ttft=0, tps=0, load_time=0, parallel=64, time_scale=0)
        worker = psutil.Process(rig.worker(sim, "cpu-w", worker_slots=16).pid)
        api, _ = rig.api()

        def busy() -> bool:
            return bool(
                rig.redis.llen("rq:queue:ollama:llama3:latest") + rig.redis.llen("corral:inflight:cpu-w")
            )

        def run(count: int, tag: str) -> float:
            asyncio.run(submit(api, count, tag))
            while busy():
                time.sleep(0.005)
            return time.perf_counter()

        run(WARM_UP, "warm")
        before = worker.cpu_times()
        start = time.perf_counter()
        end = run(n, "job")
        after = worker.cpu_times()
        cpu = (after.user - before.user) + (after.system - before.system)
        return cpu / n, n / (end - start)
    finally:
        rig.close()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    trees = [Path(a).resolve() for a in argv[:2]]
    n = int(argv[2]) if len(argv) > 2 else 2000
    runs = int(argv[3]) if len(argv) > 3 else 3
    results: list[list[tuple[float, float]]] = [[], []]
    for r in range(runs):
        order = [0, 1] if r % 2 == 0 else [1, 0]
        for k in order:
            results[k].append(one_run(trees[k], n))
            cpu, rate = results[k][-1]
            print(json.dumps({"run": r, "tree": argv[k], "cpu_us_per_job": round(cpu * 1e6, 1),
                              "jobs_per_s": round(rate, 1)}), flush=True)  # fmt: skip
    base = statistics.median(c for c, _ in results[0])
    print(f"\nworker CPU per job, {n} jobs per run, median of {runs} runs\n")
    print("| tree | CPU per job p50 | vs first | jobs/s p50 |")
    print("|---|---|---|---|")
    for tree, result in zip(argv[:2], results, strict=True):
        cpu = statistics.median(c for c, _ in result)
        rate = statistics.median(r for _, r in result)
        print(f"| {tree} | {cpu * 1e6:.0f} µs | {cpu / base:.2f}x | {rate:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
