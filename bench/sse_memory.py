"""The API's memory around a burst of SSE readers: idle RSS before, the peak while 3,000 readers are connected at
once (they connect in batches of ``--batch``) following running jobs, and RSS once they have all closed: 5 s after
(``rss_after_mb``) and ``--settle`` s after (``rss_settled_mb``).
``python -m bench.sse_memory [--readers 3000] [--batch 300] [--settle 20]``.

Each reader opens a loopback connection, asks for ``GET /jobs/{id}/events`` and reads until its first event
arrives; once all are connected, all close: the hub unsubscribes the jobs' channels, uvicorn drops the connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from typing import Any

import httpx

from .harness import Rig, rss_mb


async def connect_reader(port: int, job_id: str) -> asyncio.StreamWriter | None:
    """A reader that has its first event (None: the stream ended before one); the caller closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    seen = b""
    while b"data:" not in seen:
        chunk = await asyncio.wait_for(reader.read(65536), 60)
        if not chunk:
            writer.close()
            return None
        seen += chunk
    return writer


async def burst(port: int, job_ids: list[str], readers: int, batch: int) -> int:
    """``readers`` connected at once, then all closed; the readers that had their first event."""
    writers: list[asyncio.StreamWriter] = []
    try:
        for start in range(0, readers, batch):
            count = min(batch, readers - start)
            results = await asyncio.gather(
                *(connect_reader(port, job_ids[(start + i) % len(job_ids)]) for i in range(count)),
                return_exceptions=True,
            )
            writers += [w for w in results if isinstance(w, asyncio.StreamWriter)]
        return len(writers)
    finally:
        for writer in writers:
            writer.close()
        await asyncio.sleep(0.5)  # the closes go out before the loop ends


def submit_running_jobs(api: str, count: int) -> list[str]:
    """Jobs that stay queued or running for the whole burst (a slow simulator, long answers)."""
    jobs = [
        {"model": "llama3", "prompt": f"memory {i}", "options": {"num_predict": 100_000}}
        for i in range(count)
    ]
    reply = httpx.post(api + "/jobs/batch", json={"jobs": jobs}, timeout=60)
    reply.raise_for_status()
    return [job["id"] for job in reply.json()["jobs"]]


def settle(process: Any, seconds: float) -> float:
    """RSS after ``seconds`` of quiet (the lowest of a sample a second)."""
    samples = []
    for _ in range(max(1, int(seconds))):
        time.sleep(1)
        samples.append(rss_mb(process))
    return min(samples)


def run(readers: int, batch: int, jobs: int, settle_s: float = 20.0, release: bool = True) -> dict[str, Any]:
    rig = Rig()
    try:
        sim = rig.simulator(ttft=0.01, tps=2, load_time=0, parallel=4)
        rig.worker(sim, "bench-mem", worker_slots=4)
        api, process = rig.api(trim_memory=str(release).lower())
        port = int(api.rsplit(":", 1)[1])
        job_ids = submit_running_jobs(api, jobs)
        asyncio.run(burst(port, job_ids[:10], 20, 20))  # warm-up: imports, first connections
        idle = settle(process, 3)
        peak = idle
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.05):
                peak = max(peak, rss_mb(process))

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        ok = asyncio.run(burst(port, job_ids, readers, batch))
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        after = settle(process, 5)
        settled = settle(process, max(0.0, settle_s - 5)) if settle_s > 5 else after
        return {"release": release, "readers": readers, "batch": batch, "jobs": jobs, "readers_ok": ok,
                "burst_s": round(elapsed, 1), "rss_idle_mb": round(idle, 1), "rss_peak_mb": round(peak, 1),
                "rss_after_mb": round(after, 1), "rss_settled_mb": round(settled, 1)}  # fmt: skip
    finally:
        rig.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sse_memory")
    parser.add_argument("--readers", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument(
        "--jobs", type=int, default=300, help="running jobs the readers follow (at most 1000)"
    )
    parser.add_argument(
        "--settle", type=float, default=20.0, help="seconds after the burst of the last sample"
    )
    parser.add_argument(
        "--no-release",
        action="store_true",
        help="the API without the release after a burst (CORRAL_TRIM_MEMORY=false)",
    )
    args = parser.parse_args()
    print(json.dumps(run(args.readers, args.batch, args.jobs, args.settle, not args.no_release), indent=2))


if __name__ == "__main__":
    main()
