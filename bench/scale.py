"""`make bench-scale`: Redis' cost per job against queue length and fleet size (docs/scaling.md).

1. Queue length: jobs of 50 models queued (no worker running) up to 1k, 10k, 100k; at each, the microseconds of
   the enqueue and pop scripts (SLOWLOG), and the bytes per queued job (INFO used_memory).
2. Fleet size: 10, 50, 100, 200 real workers (``bench.scale_fleet``, an instant fake engine): idle, the heartbeat
   write rate and Redis' CPU; one janitor pass; a burst of jobs: the dispatch rate, Redis CPU and commands per
   job, the script times; a worker killed with jobs in flight: the time until they run again.
3. Full scale: 100,000 jobs submitted in batches of 500 to the 200 workers; then the rate at which they drain
   what is still queued.

The results go to .corral/bench-scale/<label>.json; ``python -m bench.scale_plot`` draws docs/img/scale-*.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import redis.asyncio as aioredis

from corral.common import keys
from corral.common.janitor import Janitor
from corral.common.jobs import Limits
from corral.common.schemas import JobRequest
from corral.common.settings import Settings
from corral.common.store import AsyncJobStore, JobStore

from . import scale_probe as probe
from .harness import ROOT, Rig
from .scale_fleet import model_name

N_MODELS = 50
PER_PROCESS = 50  # workers per fleet process
OUT = ROOT / ".corral" / "bench-scale"
STALL = (
    60  # seconds a call may wait on Redis (an AOF fsync or rewrite on a loaded disk can stall it for seconds)
)


def request(k: int, stage: int, submitter: str = "", hot: bool = False) -> JobRequest:
    """Job k of a fill up to ``stage`` jobs: the models in turn, or (``hot``) 40 % for one hot model (m00; its
    queue is the deep one) and the rest over the other 49; four tenants each dumping a quarter of the stage in
    one go (fair share then takes jobs from deep in the RQ list); 2 % high priority."""
    model = model_name(k % N_MODELS)
    if hot:
        model = model_name(0) if k % 5 < 2 else model_name(1 + k % (N_MODELS - 1))
    return JobRequest(
        model=model, prompt="hello", wait=True,
        submitter=submitter or f"t{k * 4 // max(stage, 1) % 4}", priority="high" if k % 50 == 7 else "normal",
    )  # fmt: skip


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.rig = Rig()
        self.r = self.rig.redis
        self.url = self.rig.url
        self.settings = Settings(redis_url=self.url, max_queue=0)  # (the hot model queues 40,000)
        self.limits = Limits.from_settings(self.settings)
        self.fleet: list[subprocess.Popen[bytes]] = []
        self.fleet_size = 0
        probe.setup(self.r)

    # -- processes --------------------------------------------------------------------------------------------

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        argv = [sys.executable, "-m", "bench.scale_fleet", "--redis", self.url, "--models", str(N_MODELS)]
        argv += args
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)

    def live_workers(self) -> int:
        return int(self.r.zcount(keys.WORKERS, time.time() - 3, "+inf"))

    def wait_live(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.live_workers() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.live_workers()} of {n} workers came up")
            time.sleep(0.2)

    def grow(self, size: int) -> None:
        while self.fleet_size < size:
            count = min(PER_PROCESS, size - self.fleet_size)
            self.fleet.append(self.spawn("--first", str(self.fleet_size), "--count", str(count)))
            self.fleet_size += count
        self.wait_live(size)

    def stop_fleet(self) -> None:
        for proc in self.fleet:
            proc.send_signal(signal.SIGTERM)
        for proc in self.fleet:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.fleet, self.fleet_size = [], 0

    # -- jobs -------------------------------------------------------------------------------------------------

    async def fill(
        self, store: AsyncJobStore, start: int, stop: int, batch: int = 100, hot: bool = False
    ) -> None:
        for k in range(start, stop, batch):
            await store.enqueue_many([request(j, stop, hot=hot) for j in range(k, min(stop, k + batch))])

    def finished(self) -> int:
        return int(self.r.hget(keys.STATS, "finished:finished") or 0)

    def queued(self) -> int:
        return sum(int(self.r.llen(keys.queue_key(f"{model_name(i)}:latest"))) for i in range(N_MODELS))

    # -- 1. queue length --------------------------------------------------------------------------------------

    async def queue_curve(self, lengths: list[int]) -> list[dict[str, Any]]:
        client = aioredis.Redis.from_url(self.url, socket_timeout=STALL)
        store = AsyncJobStore(client, self.limits)
        out = []
        self.r.flushall()
        self.r.config_set("slowlog-log-slower-than", -1)
        probe.slowlog_by_name(self.r)
        base = probe.Snapshot.take(self.r)
        done = 0
        for length in lengths:
            # (the SLOWLOG's own memory kept out of the bytes per job)
            self.r.config_set("slowlog-log-slower-than", -1)
            probe.slowlog_by_name(self.r)
            t0 = time.monotonic()
            await self.fill(store, done, length, hot=True)
            fill_s, done = time.monotonic() - t0, length
            mem = probe.Snapshot.take(self.r)
            self.r.config_set("slowlog-log-slower-than", 0)
            before = probe.Snapshot.take(self.r)
            n = 100 if self.quick else 300
            for k in range(n):
                await store.enqueue(request(k, n, submitter="probe"))
            enq_log = probe.slowlog_by_name(self.r)
            popped = 0
            for k in range(n):  # (a worker of the hot model, then one of five others)
                models = [f"{model_name(1 + (k * 5 + j) % (N_MODELS - 1))}:latest" for j in range(5)]
                got = await store.pop_planned("probe-worker", models, "1" * len(models))
                hot = await store.pop_planned("probe-worker", [f"{model_name(0)}:latest"], "1")
                popped += (got.job is not None) + (hot.job is not None)
            delta = before.delta(probe.Snapshot.take(self.r))
            log = {**probe.slowlog_by_name(self.r), "enqueue": enq_log.get("enqueue", [])}
            pops = log.get("pop", [])
            row = {
                "queued": self.queued(), "fill_s": fill_s, "fill_jobs_s": length / max(fill_s, 1e-9),
                "bytes_per_job": (mem.memory - base.memory) / length,
                "enqueue_us": probe.summary(log["enqueue"]), "pop_us": probe.summary(pops[0::2]),
                "pop_hot_us": probe.summary(pops[1::2]),
                "hot_queued": self.r.llen(keys.queue_key(f"{model_name(0)}:latest")),
                "batch_us_per_job": probe.summary([v / 100 for v in log.get("enqueue_batch", [])]),
                "redis_cpu_us_per_op": delta["cpu"] / (3 * n) * 1e6,
                "inner_calls_per_op": delta["inner_calls"] / (3 * n),
                "popped": popped,
            }  # fmt: skip
            out.append(row)
            print(f"  queue {row['queued']:>7}: enqueue p50 {row['enqueue_us']['p50']:.0f} us, pop p50 "
                  f"{row['pop_us']['p50']:.0f} us, pop of the hot model ({row['hot_queued']} queued) p50 "
                  f"{row['pop_hot_us']['p50']:.0f} us (min {row['pop_hot_us']['min']:.0f}), "
                  f"{row['bytes_per_job']:.0f} B/job", flush=True)  # fmt: skip
        await client.aclose()
        return out

    # -- 2. fleet size ----------------------------------------------------------------------------------------

    def janitor_pass(self, passes: int) -> dict[str, float]:
        janitor = Janitor(JobStore(self.r, self.limits), self.settings.heartbeat_ttl)
        times = []
        for _ in range(passes * 3):
            self.r.delete(keys.JANITOR_LOCK)
            t0 = time.perf_counter()
            if janitor.sweep().acted:
                times.append((time.perf_counter() - t0) * 1000)
            if len(times) >= passes:
                break
        before = probe.Snapshot.take(self.r)
        self.r.delete(keys.JANITOR_LOCK)
        janitor.sweep()
        one = before.delta(probe.Snapshot.take(self.r))
        return {"ms": probe.pct(times, 0.5), "commands": one["commands"], "inner_calls": one["inner_calls"]}

    def idle(self, seconds: float) -> dict[str, Any]:
        probe.slowlog_by_name(self.r)
        before = probe.Snapshot.take(self.r)
        time.sleep(seconds)
        d = before.delta(probe.Snapshot.take(self.r))
        log = probe.slowlog_by_name(self.r)
        s = d["seconds"]
        return {
            "heartbeats_s": d["calls"].get("exec", 0) / s, "commands_s": d["commands"] / s,
            "scripts_s": d["calls"].get("evalsha", 0) / s,
            "bytes_in_s": d["net_in"] / s,
            "inner_calls_s": d["inner_calls"] / s, "redis_cpu_pct": 100 * d["cpu"] / s,
            "idle_pop_us": probe.summary(log.get("pop", [])), "pops_s": len(log.get("pop", [])) / s,
        }  # fmt: skip

    async def burst(self, n: int) -> dict[str, Any]:
        client = aioredis.Redis.from_url(self.url, socket_timeout=STALL)
        store = AsyncJobStore(client, self.limits)
        start_done = self.finished()
        probe.slowlog_by_name(self.r)
        before = probe.Snapshot.take(self.r)
        t0 = time.monotonic()
        await self.fill(store, 0, n, batch=50)
        deadline = t0 + 120
        while self.finished() - start_done < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t0
        d = before.delta(probe.Snapshot.take(self.r))
        log = probe.slowlog_by_name(self.r)
        await client.aclose()
        done = self.finished() - start_done
        per_job = {k: v / max(done, 1) for k, v in sorted(d["calls"].items(), key=lambda kv: -kv[1])}
        return {
            "jobs": done, "seconds": elapsed, "jobs_s": done / elapsed,
            "redis_cpu_us_per_job": d["cpu"] / max(done, 1) * 1e6, "commands_per_job": d["commands"] / max(done, 1),
            "inner_calls_per_job": d["inner_calls"] / max(done, 1), "calls_per_job": per_job,
            "scripts_per_job": d["calls"].get("evalsha", 0) / max(done, 1), "window_s": d["seconds"],
            **{f"{name}_us": probe.summary(log.get(name, [])) for name in ("pop", "finish", "emit", "enqueue_batch")},
        }  # fmt: skip

    def dead_worker(self) -> dict[str, Any]:
        """A worker with 4 jobs in flight is killed (SIGKILL); another holding the model takes them: seconds until
        each is running again."""
        victim = self.spawn("--prefix", "victim", "--count", "1", "--slots", "4", "--only", "dead", "--hang")
        self.wait_live(self.fleet_size + 1)
        ids = [
            self.r_enqueue(JobRequest(model="dead", prompt="x", wait=True)) for _ in range(4)
        ]  # (the victim is the one worker holding the model: it takes all four)
        self.wait_for(lambda: all(self.r.hget(keys.job_key(i), "status") == b"started" for i in ids))
        rescuer = self.spawn("--prefix", "rescuer", "--count", "1", "--slots", "4", "--only", "dead")
        self.wait_live(self.fleet_size + 2)
        victim.kill()
        t0 = time.monotonic()
        again: dict[str, float] = {}
        while len(again) < len(ids) and time.monotonic() - t0 < 60:
            for i in ids:
                if i not in again and self.r.hget(keys.job_key(i), "worker_name") == b"rescuer000":
                    again[i] = time.monotonic() - t0
            time.sleep(0.02)
        victim.wait()
        rescuer.send_signal(signal.SIGTERM)
        rescuer.wait(30)
        times = list(again.values())
        return {"n": len(times), "p50": probe.pct(times, 0.5), "max": max(times) if times else float("nan")}

    def r_enqueue(self, req: JobRequest) -> str:
        return JobStore(self.r, self.limits).enqueue(req).id

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark step did not happen")
            time.sleep(0.05)

    async def fleet_curve(self, sizes: list[int]) -> list[dict[str, Any]]:
        self.r.flushall()
        out = []
        for size in sizes:
            self.grow(size)
            time.sleep(2)
            row: dict[str, Any] = {"workers": size}
            row["idle"] = self.idle(3 if self.quick else 6)
            row["janitor"] = self.janitor_pass(5 if self.quick else 10)
            row["burst"] = b = await self.burst(500 if self.quick else 3000)
            # net of the fleet's idle traffic meanwhile (heartbeats, idle polls, janitors)
            idle_share = b["window_s"] / max(b["jobs"], 1)
            b["net_commands_per_job"] = b["commands_per_job"] - row["idle"]["commands_s"] * idle_share
            b["net_scripts_per_job"] = b["scripts_per_job"] - row["idle"]["scripts_s"] * idle_share
            row["dead"] = self.dead_worker()
            out.append(row)
            i, b = row["idle"], row["burst"]
            print(f"  {size:>3} workers: {i['heartbeats_s']:.0f} beats/s, idle Redis CPU "
                  f"{i['redis_cpu_pct']:.1f} %, janitor {row['janitor']['ms']:.1f} ms; {b['jobs_s']:.0f} jobs/s, "
                  f"pop p50 {b['pop_us']['p50']:.0f} us, {b['net_commands_per_job']:.0f} commands and "
                  f"{b['net_scripts_per_job']:.1f} script calls per job (net of idle), "
                  f"{b['redis_cpu_us_per_job']:.0f} us Redis CPU/job; dead worker's jobs again in "
                  f"{row['dead']['p50']:.1f} s (max {row['dead']['max']:.1f})", flush=True)  # fmt: skip
        return out

    # -- 3. full scale ----------------------------------------------------------------------------------------

    async def full(self, jobs: int, seconds: float) -> dict[str, Any]:
        """The fleet at its largest drains ``jobs`` queued jobs; the rate over ``seconds``."""
        client = aioredis.Redis.from_url(self.url, socket_timeout=STALL)
        store = AsyncJobStore(client, self.limits)
        t0, done_before = time.monotonic(), self.finished()
        await self.fill(store, 0, jobs, batch=500)
        fill_s = time.monotonic() - t0
        done_in_fill = self.finished() - done_before
        probe.slowlog_by_name(self.r)
        before, done0 = probe.Snapshot.take(self.r), self.finished()
        queued0 = self.queued()
        await asyncio.sleep(seconds)
        d = before.delta(probe.Snapshot.take(self.r))
        done = self.finished() - done0
        log = probe.slowlog_by_name(self.r)
        await client.aclose()
        janitor = self.janitor_pass(5)  # (with the queue's keys and the dead workers of step 2 listed)
        return {
            "janitor": janitor, "keys": self.r.dbsize(), "workers": self.fleet_size, "filled": jobs,
            "fill_s": fill_s, "done_in_fill": done_in_fill, "queued_at_start": queued0,
            "queued_at_end": self.queued(), "jobs_s": done / d["seconds"],
            "redis_cpu_us_per_job": d["cpu"] / max(done, 1) * 1e6, "redis_cpu_pct": 100 * d["cpu"] / d["seconds"],
            "inner_calls_per_job": d["inner_calls"] / max(done, 1),
            **{f"{name}_us": probe.summary(log.get(name, [])) for name in ("pop", "finish", "emit")},
        }  # fmt: skip


async def amain(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    bench = Bench(args.quick)
    lengths = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    sizes = [10, 50] if args.quick else [int(size) for size in args.sizes.split(",")]
    load = os.getloadavg()
    result.update(label=args.label, quick=args.quick, cpus=psutil.cpu_count(), load=load)
    try:
        print(f"scale benchmark ({'quick' if args.quick else 'full'}); load average {load[0]:.1f} on "
              f"{psutil.cpu_count()} cores", flush=True)  # fmt: skip
        if not args.fleet_only:
            print("1. queue length (no workers)", flush=True)
            result["queue"] = await bench.queue_curve(lengths)
        if not args.queue_only:
            print("2. fleet size", flush=True)
            result["fleet"] = await bench.fleet_curve(sizes)
        if not (args.queue_only or args.fleet_only):
            print("3. full scale", flush=True)
            result["full"] = await bench.full(lengths[-1], 10 if args.quick else 20)
            f = result["full"]
            print(f"  {f['workers']} workers: {f['filled']} jobs submitted in {f['fill_s']:.0f} s, "
                  f"{f['done_in_fill']} done meanwhile; then {f['queued_at_start']} queued: {f['jobs_s']:.0f} "
                  "jobs/s, pop p50 "
                  f"{f['pop_us']['p50']:.0f} us, Redis CPU {f['redis_cpu_pct']:.0f} %; janitor pass "
                  f"{f['janitor']['ms']:.0f} ms "
                  f"({f['janitor']['commands']} commands, {f['keys']} keys)", flush=True)  # fmt: skip
    finally:
        bench.stop_fleet()
        bench.rig.close()
    result["load_after"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--quick", action="store_true", help="about a minute: 1k/10k jobs, 10/50 workers")
    parser.add_argument("--queue-only", action="store_true", help="only the queue-length curve")
    parser.add_argument("--fleet-only", action="store_true", help="only the fleet-size curve")
    parser.add_argument("--sizes", default="10,50,100,200", help="the fleet sizes (workers)")
    parser.add_argument("--label", default="after", help="the results file's name (before/after a change)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    try:
        asyncio.run(amain(args, result))
    finally:  # (what was measured is kept when a later step fails)
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"{args.label}{'-quick' if args.quick else ''}.json"
        path.write_text(json.dumps(result, indent=1))
        print(f"results: {path}")
    if not args.no_plot:
        from .scale_plot import plot

        plot(OUT, ROOT / "docs" / "img")


if __name__ == "__main__":
    main()
