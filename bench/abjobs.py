"""Jobs/s and CPU per job of two source trees, interleaved: ``python -m bench.abjobs TREE_A TREE_B [N] [ROUNDS]``.

The companion of ``bench.ab`` for throughput: each round starts one tree's stack (Redis, an instant simulator,
one worker with 16 slots, an API: the scenario of ``bench.core.bench_throughput``), warms it up, sends N jobs
from 64 concurrent clients and stops it; the trees take turns (A B, then B A, …) so both see the same drift of a
shared VM. Reported per tree: medians over the rounds of jobs/s and of the CPU seconds the API, the worker and
Redis spent per job (the load generator's own CPU is not counted).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from . import harness
from .rawhttp import RawClient

CONCURRENCY = 64


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process and its descendants so far."""
    process = psutil.Process(pid)
    total = 0.0
    for proc in (process, *process.children(recursive=True)):
        times = proc.cpu_times()
        total += times.user + times.system
    return total


async def submit(api: str, n: int, prefix: str) -> None:
    """``n`` jobs from ``CONCURRENCY`` keep-alive clients, each waiting for its 202 before the next."""
    clients = [await RawClient(api).connect() for _ in range(CONCURRENCY)]

    async def user(k: int) -> None:
        for i in range(k, n, CONCURRENCY):
            status, body = await clients[k].request(
                "POST", "/jobs", {"model": "llama3", "prompt": f"{prefix}{i}"}
            )
            assert status == 202, body

    await asyncio.gather(*(user(k) for k in range(CONCURRENCY)))
    for raw in clients:
        await raw.close()


def drained(rig: harness.Rig) -> None:
    """Until the queue and the worker's in-flight list are empty (polled: cheaper than following n streams)."""
    while rig.redis.llen("rq:queue:ollama:llama3:latest") + rig.redis.llen("corral:inflight:bench-w"):
        time.sleep(0.005)


def one_run(tree: Path, n: int) -> dict[str, float]:
    """One stack of ``tree``: jobs/s and CPU ms per job of the API, the worker and Redis."""
    harness.ROOT = tree
    rig = harness.Rig()
    try:
        sim = rig.simulator(ttft=0, tps=0, load_time=0, parallel=64, time_scale=0)
        worker = rig.worker(sim, "bench-w", worker_slots=16)
        api, api_proc = rig.api()
        assert rig.server is not None and rig.server.process is not None
        pids = {"api": api_proc.pid, "worker": worker.pid, "redis": rig.server.process.pid}
        asyncio.run(submit(api, max(n // 10, CONCURRENCY), "warm"))
        drained(rig)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        start = time.perf_counter()
        asyncio.run(submit(api, n, "job"))
        drained(rig)
        elapsed = time.perf_counter() - start
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        result = {"jobs_s": n / elapsed}
        result.update({f"{name}_ms": (after[name] - before[name]) / n * 1e3 for name in pids})
        result["total_ms"] = result["api_ms"] + result["worker_ms"] + result["redis_ms"]
        return result
    finally:
        rig.close()


def table(names: list[str], runs: list[list[dict[str, float]]], n: int) -> str:
    columns = ["jobs_s", "api_ms", "worker_ms", "redis_ms", "total_ms"]
    medians = [{c: statistics.median(r[c] for r in tree_runs) for c in columns} for tree_runs in runs]
    # each round's ratio to the first tree's run beside it: steadier than a ratio of medians when the load drifts
    paired = [
        statistics.median(r["jobs_s"] / f["jobs_s"] for r, f in zip(tree_runs, runs[0], strict=True))
        for tree_runs in runs
    ]
    lines = [
        f"jobs/s and CPU per job, {n} jobs x {len(runs[0])} interleaved rounds per tree (medians)\n",
        "| tree | jobs/s | (each round) | API CPU/job | worker CPU/job | Redis CPU/job | total CPU/job | "
        "jobs/s vs first | paired rounds | CPU/job vs first |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, med, tree_runs, ratio in zip(names, medians, runs, paired, strict=True):
        each = " ".join(f"{r['jobs_s']:.0f}" for r in tree_runs)
        lines.append(
            f"| {name} | {med['jobs_s']:.0f} | {each} | {med['api_ms']:.2f} ms | {med['worker_ms']:.2f} ms | "
            f"{med['redis_ms']:.2f} ms | {med['total_ms']:.2f} ms | {med['jobs_s'] / medians[0]['jobs_s']:.2f}x | "
            f"{ratio:.2f}x | {med['total_ms'] / medians[0]['total_ms']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    trees = [Path(a).resolve() for a in argv[:2]]
    n = int(argv[2]) if len(argv) > 2 else 3000
    rounds = int(argv[3]) if len(argv) > 3 else 3
    runs: list[list[dict[str, Any]]] = [[], []]
    for i in range(rounds):
        order = [0, 1] if i % 2 == 0 else [1, 0]
        for k in order:
            runs[k].append(one_run(trees[k], n))
            print(f"round {i + 1} {argv[k]}: {runs[k][-1]['jobs_s']:.0f} jobs/s", file=sys.stderr, flush=True)
    print(table(argv[:2], runs, n))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
