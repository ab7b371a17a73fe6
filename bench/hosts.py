"""`make bench-fleet`: one ``corral fleet`` process serving 50 simulated engines (hosts by URL), against a
one-engine ``corral worker`` in the same run.

- heartbeat lag: every worker's ``last_seen`` is sampled every 50 ms; the lag of a beat is its gap to the previous
  one minus ``CORRAL_HEARTBEAT_INTERVAL`` (2 s). Measured idle (during the TTFT pairs) and under load (jobs on all
  50 engines at once).
- added TTFT: interleaved, one request at a time: the solo engine directly, then through Corral to its worker;
  one of the 50 engines directly, then through Corral to the fleet (model ``many``: any of the 50 takes it).

The 50 engines run in one simulator process (``corral simulate --count 50``), the solo engine in another.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import threading
import time

import httpx
import psutil

from .harness import Rig, pct, summary, wait

INTERVAL = 2.0


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


async def ttft_direct(http: httpx.AsyncClient, url: str, model: str, prompt: str) -> float:
    start = time.perf_counter()
    async with http.stream(
        "POST", url + "/api/generate", json={"model": model, "prompt": prompt}
    ) as response:
        async for line in response.aiter_lines():
            if line:
                return time.perf_counter() - start
    raise RuntimeError("no token")


async def ttft_corral(http: httpx.AsyncClient, api: str, model: str, prompt: str) -> float:
    start = time.perf_counter()
    body = {"model": model, "prompt": prompt, "stream": True}
    headers = {"Accept": "application/x-ndjson"}
    async with http.stream("POST", api + "/jobs", json=body, headers=headers) as response:
        async for line in response.aiter_lines():
            if line and json.loads(line)["type"] == "chunk":
                return time.perf_counter() - start
    raise RuntimeError("no token")


class BeatWatch:
    """Samples the heartbeats of some workers in a thread; ``lags`` per phase: each beat's gap minus the interval."""

    def __init__(self, rig: Rig, workers: list[str]) -> None:
        self.rig, self.workers = rig, workers
        self.phase = "setup"
        self.lags: dict[str, list[float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        last: dict[str, float] = {}
        while not self.stop.is_set():
            pipe = self.rig.redis.pipeline(transaction=False)
            for worker in self.workers:
                pipe.hget(f"corral:worker:{worker}", "last_seen")
            for worker, seen in zip(self.workers, pipe.execute(), strict=True):
                if seen is None:
                    continue
                value = float(seen)
                if worker in last and value != last[worker]:
                    self.lags.setdefault(self.phase, []).append(value - last[worker] - INTERVAL)
                last[worker] = value
            time.sleep(0.05)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports, below the ephemeral range (no client takes them)."""
    for _ in range(100):
        base = random.randrange(20000, 32000 - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


def start_rig(rig: Rig, hosts: int) -> tuple[str, str, list[str], psutil.Process]:
    """The solo engine and its worker, the 50 engines and their fleet process, an API. (solo engine, API, the
    fleet's engines, the fleet process)."""
    solo = rig.simulator("solo:latest", ttft=0.02, tps=200, load_time=0, parallel=4)
    rig.worker(solo, "solo", worker_slots=4)
    port = free_ports(hosts)
    engines = [f"http://127.0.0.1:{port + n}" for n in range(hosts)]
    rig.spawn(["simulate", "--port", str(port), "--count", str(hosts), "--models", "many:latest", "--ttft", "0.02",
               "--tps", "200", "--load-time", "0", "--parallel", "4"])  # fmt: skip
    wait(lambda: all(httpx.get(url + "/api/version").status_code == 200 for url in engines), timeout=60)
    fleet = rig.spawn(
        ["fleet", *(f"--host={url}" for url in engines)], worker_id="bench-fleet", worker_slots=2
    )
    names = [f"127.0.0.1-{port + n}" for n in range(hosts)]
    wait(lambda: all(rig.redis.hget(f"corral:worker:{n}", "healthy") == b"1" for n in names), timeout=120)
    api, _ = rig.api()
    return solo, api, engines, psutil.Process(fleet.pid)


async def pairs(n: int, solo: str, api: str, engines: list[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"solo": [], "fleet": []}
    async with httpx.AsyncClient(timeout=30) as http:
        for i in range(10):  # warm up both paths and a few of the engines' connections
            await ttft_corral(http, api, "solo", f"warm {i}")
            await ttft_corral(http, api, "many", f"warm {i}")
        for i in range(n):
            direct = await ttft_direct(http, solo, "solo", f"s {i}")
            out["solo"].append(await ttft_corral(http, api, "solo", f"s {i}") - direct)
            direct = await ttft_direct(http, random.choice(engines), "many", f"f {i}")
            out["fleet"].append(await ttft_corral(http, api, "many", f"f {i}") - direct)
    return out


async def load(api: str, jobs: int, concurrency: int) -> float:
    """``jobs`` streamed jobs of model ``many``, ``concurrency`` at once: jobs/s."""
    queue = list(range(jobs))
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as http:

        async def user() -> None:
            while queue:
                await ttft_corral(http, api, "many", f"load {queue.pop()}")

        start = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        return jobs / (time.perf_counter() - start)


def lag_row(name: str, lags: list[float]) -> tuple[str, str, str, str, str]:
    if not lags:
        return (name, "-", "-", "-", "0")
    return (name, ms(statistics.median(lags)), ms(pct(lags, 0.99)), ms(max(lags)), str(len(lags)))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts")
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    rig = Rig()
    try:
        solo, api, engines, fleet = start_rig(rig, args.hosts)
        names = [f"127.0.0.1-{url.rsplit(':', 1)[1]}" for url in engines]
        fleet_watch, solo_watch = BeatWatch(rig, names), BeatWatch(rig, ["solo"])
        for watch in (fleet_watch, solo_watch):
            watch.phase = "idle"
            watch.thread.start()
        fleet.cpu_percent(None)
        added = asyncio.run(pairs(args.pairs, solo, api, engines))
        idle_cpu = fleet.cpu_percent(None)
        for watch in (fleet_watch, solo_watch):
            watch.phase = "load"
        rate = asyncio.run(load(api, args.jobs, 100))
        load_cpu = fleet.cpu_percent(None)
        for watch in (fleet_watch, solo_watch):
            watch.stop.set()
            watch.thread.join()
        report(
            args, added, fleet_watch, solo_watch, rate, (idle_cpu, load_cpu, fleet.memory_info().rss / 2**20)
        )
    finally:
        rig.close()


def report(args: argparse.Namespace, added: dict[str, list[float]], fleet_watch: BeatWatch,
           solo_watch: BeatWatch, rate: float, usage: tuple[float, float, float]) -> None:  # fmt: skip
    solo, fleet = summary(added["solo"]), summary(added["fleet"])
    print(f"\none fleet process serving {args.hosts} engines vs a one-engine worker (same run; load average "
          f"{psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} cores)\n")  # fmt: skip
    print("| added TTFT (Corral - direct, paired) | p50 | p95 | 95% CI of p50 | n |\n|---|---|---|---|---|")
    for name, s in (("one-engine worker", solo), (f"fleet of {args.hosts}", fleet)):
        print(f"| {name} | {ms(s['p50'])} | {ms(s['p95'])} | {ms(s['lo'])}-{ms(s['hi'])} | {s['n']} |")
    print(f"\nfleet minus worker, added TTFT p50: {ms(fleet['p50'] - solo['p50'])}\n")
    print("| heartbeat lag (gap - 2 s) | p50 | p99 | max | beats |\n|---|---|---|---|---|")
    for phase in ("idle", "load"):
        for row in (lag_row(f"{phase}: fleet ({args.hosts} workers)", fleet_watch.lags.get(phase, [])),
                    lag_row(f"{phase}: one-engine worker", solo_watch.lags.get(phase, []))):  # fmt: skip
            print("| " + " | ".join(row) + " |")
    idle_cpu, load_cpu, rss = usage
    print(f"\nload: {args.jobs} streamed jobs, 100 at once, over the {args.hosts} engines: {rate:.0f} jobs/s; "
          f"fleet CPU {idle_cpu:.0f} % (pairs), {load_cpu:.0f} % (load), RSS {rss:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
