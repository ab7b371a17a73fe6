"""`make bench-failover`: Redis behind Sentinel, the primary killed (-9) under load, again and again.

A primary, a replica and three sentinels on loopback (``SentinelGroup``), two API replicas, three workers, each
with its simulator; submitters post jobs to both APIs in turn, readers follow jobs' events over SSE and, half-way
through each job, leave and resume on the other API with ``Last-Event-ID``. Each round kills the primary, waits for
the sentinels to promote the replica, and starts the killed node again (it comes back as a replica). Reported: the
time from the kill until a submit is acknowledged again, acknowledged jobs missing afterwards (lost), jobs not
ended (stuck), jobs run more than once, and the readers' gaps and duplicates. Run with and without
``CORRAL_ACK_REPLICAS=1``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from corral.cli.embedded_sentinel import SentinelGroup
from corral.common.connections import sync_redis

from .harness import Rig, free_port, wait

TERMINAL = {"succeeded", "failed", "cancelled"}
JOB = {"model": "llama3", "prompt": "tell me a story " * 4}


@dataclass
class SentinelRig(Rig):
    """A Rig whose Redis is a Sentinel group: every process gets the ``redis+sentinel://`` URL."""

    replicas: int = 1

    def __post_init__(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="corral-sentinel-"))
        self.group = SentinelGroup(directory, free_port, replicas=self.replicas).start()
        self.url = self.group.url
        self.server = self.group.nodes[0]  # (Rig's own checks want one; the group stops them all)
        self.redis = sync_redis(self.url, name="bench")

    def close(self) -> None:
        super().close()
        self.group.stop()


@dataclass
class Load:
    acked: dict[str, float] = field(default_factory=dict)  # job id -> when its 202 came
    successes: list[float] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # what a failed submit got, counted
    streams: int = 0
    resumed: int = 0
    gaps: int = 0
    duplicates: int = 0
    last_error: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def submitter(apis: list[str], load: Load, first: int) -> None:
    clients = [httpx.Client(base_url=a, timeout=10) for a in apis]
    for n in itertools.count(first):
        if load.stop.is_set():
            break
        try:
            response = clients[n % 2].post("/jobs", json=JOB)
            outcome = str(response.status_code) if response.status_code != 202 else ""
            if outcome:
                load.last_error = response.text[:300]
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        with load.lock:
            if outcome:
                load.refused[outcome] = load.refused.get(outcome, 0) + 1
            else:
                load.acked[response.json()["id"]] = time.monotonic()
                load.successes.append(time.monotonic())
        time.sleep(0.05 if not outcome else 0.02)
    for client in clients:
        client.close()


def reader(apis: list[str], load: Load, first: int) -> None:
    """Follow the newest acknowledged job: half its events from one API, the rest from the other."""
    seen: set[str] = set()
    for n in itertools.count(first):
        if load.stop.is_set():
            return
        with load.lock:
            fresh = [j for j in reversed(load.acked) if j not in seen][:1]
        if not fresh:
            time.sleep(0.05)
            continue
        seen.add(fresh[0])
        follow(apis, fresh[0], n, load)


def follow(apis: list[str], job_id: str, n: int, load: Load) -> None:
    seqs: list[int] = []
    switch_at, deadline = 2, time.monotonic() + 60
    while time.monotonic() < deadline:
        headers = {"Last-Event-ID": str(seqs[-1])} if seqs else {}
        try:
            with httpx.stream(
                "GET", f"{apis[n % 2]}/jobs/{job_id}/events", headers=headers, timeout=30
            ) as response:
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[6:])
                    seqs.append(int(event["seq"]))
                    if event["type"] in {"done", "error", "cancelled"}:
                        return _count(load, seqs, resumed=switch_at < 0)
                    if len(seqs) == switch_at:  # leave, and resume on the other API
                        switch_at = -1
                        break
        except httpx.HTTPError:
            time.sleep(0.1)
        n += 1
    _count(load, seqs, resumed=switch_at < 0)


def _count(load: Load, seqs: list[int], resumed: bool) -> None:
    with load.lock:
        load.streams += 1
        load.resumed += resumed
        load.duplicates += len(seqs) - len(set(seqs))
        load.gaps += sum(1 for a, b in itertools.pairwise(seqs) if b > a + 1)


def kill_round(rig: SentinelRig, load: Load) -> dict[str, float]:
    """Kill the primary; once the sentinels have promoted the replica, start the killed node again (as a supervisor
    would; it comes back as a replica). Seconds from the kill to the promotion and to the next acknowledged
    submit."""
    node = rig.group.kill_primary()
    killed = time.monotonic()
    rig.group.wait_failover(node.port)
    promoted = time.monotonic() - killed
    node.start()
    try:
        wait(lambda: any(t > killed for t in load.successes[-50:]), timeout=60)
    except TimeoutError:
        raise TimeoutError(
            f"no submit acknowledged 60 s after the kill: {load.refused}, {load.last_error}"
        ) from None
    recovered = min(t for t in load.successes if t > killed) - killed
    wait(rig.group.replicas_in_sync, timeout=60)
    return {"promoted": promoted, "submits": recovered}


def settle(rig: SentinelRig, load: Load, timeout: float = 90.0) -> dict[str, int]:
    """After the load: acknowledged jobs lost, stuck (not ended after ``timeout``), run more than once."""
    ids = list(load.acked)
    deadline = time.monotonic() + timeout
    while True:
        states = _states(rig.redis, ids)
        pending = [i for i, (status, _) in states.items() if status is not None and status not in TERMINAL]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return {
        "acked": len(ids),
        "lost": sum(1 for status, _ in states.values() if status is None),
        "stuck": len(pending),
        "failed": sum(1 for status, _ in states.values() if status == "failed"),
        "rerun": sum(1 for _, attempt in states.values() if attempt > 1),
        "reruns": [explain_rerun(rig.redis, i) for i, (_, attempt) in states.items() if attempt > 1],
    }


def explain_rerun(client: redis.Redis, job_id: str) -> str:
    """Why a job ran more than once, from its events: each retry's reason, and how many chunks the engine had
    already streamed in the attempt that was given up (0: the attempt never ran, a re-queue and not a second run)."""
    parts, chunks = [], 0
    for _, fields in client.xrange(f"corral:events:{job_id}"):
        event = json.loads(fields[b"e"])
        if event["type"] == "chunk":
            chunks += 1
        elif event["type"] == "retry":
            parts.append(f"attempt {event['attempt'] - 1} after {chunks} chunks: {event.get('reason', '?')}")
            chunks = 0
    return f"{job_id}: " + "; ".join(parts)


def _states(client: redis.Redis, ids: list[str]) -> dict[str, tuple[str | None, int]]:
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(f"rq:job:{job_id}", "status", "attempt")
    names = {"finished": "succeeded", "failed": "failed", "canceled": "cancelled"}
    out = {}
    for job_id, (status, attempt) in zip(ids, pipe.execute(), strict=True):
        word = status.decode() if status else None
        out[job_id] = (names.get(word, word) if word else None, int(attempt or 1))
    return out


def bench_redis_failover(kills: int, ack_replicas: int, replicas: int = 1) -> dict[str, Any]:
    rig, load = SentinelRig(replicas=replicas), Load()
    try:
        settings = {"ack_replicas": ack_replicas, "ack_timeout_ms": 1000} if ack_replicas else {}
        for i in range(3):
            rig.worker(rig.simulator(ttft=0.02, tps=100, load_time=0), f"w{i}")
        apis = [rig.api(**settings)[0] for _ in range(2)]
        threads = [threading.Thread(target=submitter, args=(apis, load, i), daemon=True) for i in range(4)]
        threads += [threading.Thread(target=reader, args=(apis, load, i), daemon=True) for i in range(2)]
        for thread in threads:
            thread.start()
        recoveries, epoch = [], _epoch(rig)
        for n in range(kills):
            time.sleep(3)
            recoveries.append(kill_round(rig, load))
            print(f"ack {ack_replicas}, kill {n + 1}: {recoveries[-1]}", file=sys.stderr)
        time.sleep(3)
        load.stop.set()
        for thread in threads:
            thread.join(90)
        jobs = settle(rig, load)
        return {"recovery": recoveries, "jobs": jobs, "load": load, "failovers": _epoch(rig) - epoch}
    finally:
        load.stop.set()
        rig.close()


def _epoch(rig: SentinelRig) -> int:
    """The sentinels' configuration epoch: one more at each failover (a kill's, or one of a live primary the
    sentinels took for dead: a stall longer than ``down-after-milliseconds`` on a loaded machine)."""
    return int(rig.group.sentinels[0].master_state()["config-epoch"])


def report(kills: int, runs: list[tuple[int, int]]) -> None:
    """One row per (CORRAL_ACK_REPLICAS, replicas) run."""
    rows = []
    for ack, replicas in runs:
        result = bench_redis_failover(kills, ack, replicas)
        jobs, load = result["jobs"], result["load"]
        rec = [r["submits"] for r in result["recovery"]]
        promoted = [r["promoted"] for r in result["recovery"]]
        for line in jobs["reruns"]:
            print(f"ack {ack}, {replicas} replica(s), run twice: {line}", file=sys.stderr)
        rows.append((
            f"CORRAL_ACK_REPLICAS={ack}, {replicas} replica(s)", f"{len(rec)} / {result['failovers']}",
            f"{statistics.median(promoted):.2f} / {max(promoted):.2f} s",
            f"{statistics.median(rec):.2f} / {max(rec):.2f} s",
            str(jobs["acked"]), str(jobs["lost"]), str(jobs["stuck"]), str(jobs["rerun"]), str(jobs["failed"]),
            f"{load.resumed}/{load.streams}", f"{load.gaps} / {load.duplicates}",
            ", ".join(f"{k}: {v}" for k, v in sorted(load.refused.items())) or "-",
        ))  # fmt: skip
    header = ("setting", "kills / failovers", "promoted p50 / max", "submits back p50 / max", "acked", "lost", "stuck",
              "run twice", "failed", "streams resumed on the other API", "reader gaps / dups",
              "failed submits")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_failover")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--runs", default="0:1,1:1,1:2", help="CORRAL_ACK_REPLICAS:replicas of each run")
    args = parser.parse_args()
    report(args.kills, [(int(a), int(r)) for a, r in (run.split(":") for run in args.runs.split(","))])


if __name__ == "__main__":
    main()
