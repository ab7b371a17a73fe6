"""Many concurrent SSE readers over several API replicas: ``make bench-streams``
(``python -m bench.streams [--readers 10000] [--replicas 2] [--jobs 100] [--tokens 20] [--tps 5]``).

One redis-server, one simulator and one worker, ``--replicas`` real ``corral api`` processes. The jobs are queued
before any worker runs (a placeholder holder of the model lets the enqueue accept them), then ``--readers`` SSE
readers connect to ``GET /jobs/{id}/events``, spread round-robin over the replicas and the jobs, each counting as
connected once its ``queued`` event arrived. Then the worker starts and every job streams ``--tokens`` chunks.

The CPU lists are the replicas', then the load generator's (this process), in % of one core.

Each reader checks its events' seqs (a gap or a duplicate is counted) and takes each event's delay: when it read
it minus when a subscriber of the job's Redis channel in this process saw it published. Reported: time to connect
all, events delivered, gaps and duplicates, p50/p99/max delay, each replica's CPU while connecting and while
streaming, RSS per stream, and RSS once every stream has ended (5 s and ``--settle`` s after).

The readers are plain asyncio protocols (no HTTP library: the load generator shares the 2 cores with the system
under test); connections open ``--connect-batch`` at a time, within the listen backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis.asyncio as aioredis

from corral.common import keys
from corral.common.schemas import TERMINAL_EVENTS

from .harness import Rig, pct, rss_mb

MODEL = "llama3:latest"
GATE = "bench-streams-gate"  # the placeholder holder of the model while the jobs are queued
TERMINAL = {t.encode() for t in TERMINAL_EVENTS}


@dataclass
class Tally:
    """What every reader saw, and when each event was published (seen on its channel)."""

    published: dict[tuple[str, int], float] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)
    events: int = 0
    gaps: int = 0
    duplicates: int = 0
    ended: int = 0
    failed: int = 0


class Reader(asyncio.Protocol):
    """One SSE reader: a chunked HTTP/1.1 response of ``id: <seq>`` / ``event: <type>`` blocks."""

    def __init__(self, job_id: str, tally: Tally, connected: asyncio.Future[None]) -> None:
        self.job_id, self.tally, self.connected = job_id, tally, connected
        self.done: asyncio.Future[None] = connected.get_loop().create_future()
        self.raw = b""  # bytes not yet de-chunked
        self.body = b""  # de-chunked bytes not yet a whole event
        self.head = True
        self.want = -1  # bytes left of the current chunk (-1: a size line is next)
        self.last = -1
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        request = f"GET /jobs/{self.job_id}/events HTTP/1.1\r\nHost: bench\r\n\r\n"
        transport.write(request.encode())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(failed=True)

    def _finish(self, failed: bool = False) -> None:
        if not self.done.done():
            if failed:
                self.tally.failed += 1
            else:
                self.tally.ended += 1
            self.done.set_result(None)
            if not self.connected.done():
                self.connected.set_result(None)
        if self.transport is not None and not failed:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.raw += data
        if self.head:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.raw.startswith(b"HTTP/1.1 200"):
                self._finish(failed=True)
                return
            self.head, self.raw = False, self.raw[end + 4 :]
        self._dechunk()
        now = time.monotonic()
        *blocks, self.body = self.body.split(b"\n\n")
        for block in blocks:
            self._event(block, now)

    def _dechunk(self) -> None:
        raw = self.raw
        while raw:
            if self.want < 0:
                line = raw.find(b"\r\n")
                if line < 0:
                    break
                self.want, raw = int(raw[:line], 16) + 2, raw[line + 2 :]
            take = raw[: self.want]
            self.body += take
            self.want -= len(take)
            raw = raw[len(take) :]
            if self.want == 0:
                self.body, self.want = self.body[:-2], -1  # the chunk's CRLF
        self.raw = raw

    def _event(self, block: bytes, now: float) -> None:
        if not block.startswith(b"id: "):
            return  # a keep-alive comment
        lines = block.split(b"\n", 2)
        seq, kind = int(lines[0][4:]), lines[1][7:]
        tally = self.tally
        if seq <= self.last:
            tally.duplicates += 1
            return
        if seq != self.last + 1:
            tally.gaps += 1
        self.last = seq
        tally.events += 1
        published = tally.published.get((self.job_id, seq))
        if published is not None:
            tally.delays.append(now - published)
        if not self.connected.done():
            self.connected.set_result(None)
        if kind in TERMINAL:
            self._finish()


async def watch_channels(url: str, job_ids: list[str], tally: Tally, ready: asyncio.Event) -> None:
    """Note when each event is published: the reference clock of the delays."""
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(*(keys.chunks_channel(j) for j in job_ids))
    confirmed = 0
    try:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] == "subscribe":
                confirmed += 1
                if confirmed == len(job_ids):
                    ready.set()
            elif message["type"] == "message":
                event = json.loads(message["data"])
                tally.published.setdefault((event["job"], event["seq"]), time.monotonic())
    finally:
        await pubsub.aclose()
        await client.aclose()


class CpuMeter:
    def __init__(self, processes: list[psutil.Process]) -> None:
        self.processes = processes
        self.mark()

    def mark(self) -> None:
        self.start = time.monotonic()
        self.base = [self._cpu(p) for p in self.processes]

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def percent(self) -> list[float]:
        """Each process's CPU since the last mark, in % of one core."""
        elapsed = max(time.monotonic() - self.start, 1e-6)
        return [
            round(100 * (self._cpu(p) - b) / elapsed) for p, b in zip(self.processes, self.base, strict=True)
        ]


async def connect_readers(
    ports: list[int], job_ids: list[str], readers: int, batch: int, tally: Tally
) -> None:
    loop = asyncio.get_running_loop()
    for start in range(0, readers, batch):
        group = []
        for i in range(start, min(start + batch, readers)):
            connected = loop.create_future()
            job = job_ids[i % len(job_ids)]
            port = ports[i % len(ports)]
            await loop.create_connection(lambda j=job, c=connected: Reader(j, tally, c), "127.0.0.1", port)  # type: ignore[misc]
            group.append(connected)
        await asyncio.gather(*group)


def submit_jobs(api: str, count: int, tokens: int) -> list[str]:
    jobs = [
        {"model": MODEL, "prompt": f"streams {i}", "options": {"num_predict": tokens}} for i in range(count)
    ]
    ids: list[str] = []
    for start in range(0, count, 500):
        reply = httpx.post(api + "/jobs/batch", json={"jobs": jobs[start : start + 500]}, timeout=60)
        reply.raise_for_status()
        ids += [job["id"] for job in reply.json()["jobs"]]
    return ids


def settle(processes: list[Any], seconds: float) -> float:
    """The replicas' summed RSS after ``seconds`` of quiet (the lowest of a sample a second)."""
    samples = []
    for _ in range(max(1, int(seconds))):
        time.sleep(1)
        samples.append(sum(rss_mb(p) for p in processes))
    return min(samples)


async def stream_phase(rig: Rig, args: argparse.Namespace, apis: list[Any], job_ids: list[str],
                       sim: str) -> dict[str, Any]:  # fmt: skip
    tally = Tally()
    ports = [int(url.rsplit(":", 1)[1]) for url, _ in apis]
    meter = CpuMeter([*(psutil.Process(p.pid) for _, p in apis), psutil.Process()])  # the replicas, then us
    ready = asyncio.Event()
    watcher = asyncio.create_task(watch_channels(rig.url, job_ids, tally, ready))
    await ready.wait()
    started = time.monotonic()
    await connect_readers(ports, job_ids, args.readers, args.connect_batch, tally)
    connect_s = time.monotonic() - started
    connect_cpu = meter.percent()
    rss_connected = sum(rss_mb(p) for _, p in apis)
    meter.mark()
    streaming = time.monotonic()
    await asyncio.to_thread(rig.worker, sim, "bench-streams", worker_slots=args.jobs)
    await rig_remove_gate(rig)
    deadline = time.monotonic() + args.timeout
    while tally.ended + tally.failed < args.readers and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    stream_s = time.monotonic() - streaming
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    seqs = [int(rig.redis.hget(keys.job_key(j), "seq") or 0) for j in job_ids]  # each job's events
    expected = sum(seqs[i % len(seqs)] for i in range(args.readers))
    return {
        "connect_s": round(connect_s, 1), "connect_cpu_pct": connect_cpu, "stream_s": round(stream_s, 1),
        "stream_cpu_pct": meter.percent(), "readers_ended": tally.ended, "readers_failed": tally.failed,
        "events": tally.events, "events_expected": expected, "gaps": tally.gaps,
        "duplicates": tally.duplicates, "delays_n": len(tally.delays),
        "delay_p50_ms": round(1000 * pct(tally.delays, 0.5), 1) if tally.delays else None,
        "delay_p99_ms": round(1000 * pct(tally.delays, 0.99), 1) if tally.delays else None,
        "delay_max_ms": round(1000 * max(tally.delays), 1) if tally.delays else None,
        "rss_connected_mb": round(rss_connected, 1),
    }  # fmt: skip


async def rig_remove_gate(rig: Rig) -> None:
    await asyncio.to_thread(rig.redis.zrem, keys.model_workers_key(MODEL), GATE)


def profile(path: str, pid: int) -> subprocess.Popen[bytes]:
    """py-spy sampling the first replica (collapsed stacks: ``path``), until interrupted."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "50",
                             "--nonblocking", "--output", path], stdout=subprocess.DEVNULL)  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # for the readers and the replicas (inherited)
    rig = Rig()
    try:
        sim = rig.simulator(ttft=0.05, tps=args.tps, load_time=0, parallel=args.jobs, max_queue=args.jobs * 2)
        apis = [rig.api(**args.api_setting) for _ in range(args.replicas)]
        rig.redis.zadd(keys.model_workers_key(MODEL), {GATE: float("inf")})
        job_ids = submit_jobs(apis[0][0], args.jobs, args.tokens)
        load_before = [round(x, 1) for x in psutil.getloadavg()]
        idle = settle([p for _, p in apis], 3)
        profiler = profile(args.py_spy, apis[0][1].pid) if args.py_spy else None
        result = asyncio.run(stream_phase(rig, args, apis, job_ids, sim))
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        after = settle([p for _, p in apis], 5)
        settled = settle([p for _, p in apis], max(1.0, args.settle - 5))
        per_stream_kb = (result["rss_connected_mb"] - idle) * 1024 / args.readers
        return {"readers": args.readers, "replicas": args.replicas, "jobs": args.jobs, "tokens": args.tokens,
                **result, "rss_idle_mb": round(idle, 1), "rss_per_stream_kb": round(per_stream_kb, 1),
                "rss_after_mb": round(after, 1), "rss_settled_mb": round(settled, 1),
                "load_avg_before": load_before, "load_avg": [round(x, 1) for x in psutil.getloadavg()]}  # fmt: skip
    finally:
        rig.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.streams")
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=2, help="corral api processes")
    parser.add_argument("--jobs", type=int, default=100, help="jobs the readers follow")
    parser.add_argument("--tokens", type=int, default=20, help="chunks each job streams")
    parser.add_argument("--tps", type=float, default=5.0, help="the simulator's tokens per second")
    parser.add_argument("--connect-batch", type=int, default=500, help="connections opened at a time")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds the streams may take")
    parser.add_argument(
        "--settle", type=float, default=20.0, help="seconds after the streams of the last sample"
    )
    parser.add_argument(
        "--py-spy", metavar="FILE", help="profile the first replica (py-spy, collapsed stacks)"
    )
    parser.add_argument("--api-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a CORRAL_ setting of the replicas (e.g. malloc_trim=false)")  # fmt: skip
    args = parser.parse_args()
    args.api_setting = dict(s.split("=", 1) for s in args.api_setting)
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
