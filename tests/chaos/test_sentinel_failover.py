"""Redis behind Sentinel, the primary killed (-9) once while jobs are submitted and one streams: real processes
(a primary, two replicas and three sentinels from the embedded redis-server, a simulator, a worker, an API with
``CORRAL_ACK_REPLICAS=1``). No acknowledged job is lost, none is left stuck, and the reader's stream, resumed with
``Last-Event-ID`` across the failover, ends with no gap or duplicate. (``make bench-failover`` does this again and
again, with two APIs and three workers.)"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from corral.cli.embedded_sentinel import SentinelGroup
from corral.common import keys
from corral.common.connections import sync_redis
from corral.simulator import expected_text

from ..conftest import Fleet
from ..support import free_port, wait_for

pytestmark = pytest.mark.chaos
FAST = {"heartbeat_interval": 0.3, "heartbeat_ttl": 2.0, "janitor_interval": 0.2}
ENDED = {b"finished", b"failed", b"canceled"}  # RQ's words, in the job hash
LONG = " ".join(f"w{i}" for i in range(150))  # ~4 s at 40 tokens/s: it streams across the failover


@dataclass
class Load:
    acked: dict[str, float] = field(default_factory=dict)  # job id -> when its 202 came
    refused: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


def submit(api: str, load: Load) -> None:
    """Short jobs, one at a time, until told to stop; what fails during the failover (503, a broken connection) is
    counted, not retried."""
    with httpx.Client(base_url=api, timeout=10) as http:
        for n in range(100_000):
            if load.stop.is_set():
                return
            try:
                response = http.post("/jobs", json={"model": "llama3", "prompt": f"s{n} a b"})
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 202:
                load.acked[response.json()["id"]] = time.monotonic()
            else:
                load.refused += 1
            load.stop.wait(0.02 if response is not None and response.status_code == 202 else 0.1)


def follow(api: str, job_id: str, seqs: list[int], texts: list[str]) -> None:
    """A reader that reconnects with ``Last-Event-ID`` until the job ends."""
    for _ in range(200):
        headers = {"Last-Event-ID": str(seqs[-1])} if seqs else {}
        try:
            with httpx.stream("GET", f"{api}/jobs/{job_id}/events", headers=headers, timeout=30) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        seqs.append(int(event["seq"]))
                        texts.append(event["type"])
                        if event["type"] in ("done", "error", "cancelled"):
                            return
        except httpx.TransportError:
            continue


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path / "group", free_port, replicas=2)
    yield group.start()
    group.stop()


@pytest.fixture
def fleet(group: SentinelGroup, tmp_path: Path) -> Iterator[Fleet]:
    """Processes started with the group's ``redis+sentinel://`` URL."""
    fleet = Fleet(group.nodes[0].url, tmp_path)
    fleet.redis.close()
    fleet.redis_url = group.url  # the children's URL
    fleet.redis = sync_redis(group.url)  # follows the primary, as Corral's processes do
    yield fleet
    fleet.stop()


@pytest.mark.timeout(120)
def test_a_primary_killed_under_load_loses_no_acknowledged_job(group: SentinelGroup, fleet: Fleet) -> None:
    load, seqs, types = Load(), list[int](), list[str]()
    seen_at_kill = 0
    threads: list[threading.Thread] = []
    try:
        port = free_port()  # the three processes start side by side: the worker waits for its engine
        with ThreadPoolExecutor(1) as pool:
            sim = pool.submit(fleet.simulator, "llama3:latest", port=port, tps=40, parallel=16)
            worker = fleet.worker(f"http://127.0.0.1:{port}", "w1", wait_ready=False, worker_slots=12, **FAST)
            api = fleet.api(ack_replicas=1, ack_timeout_ms=1000, **FAST)
            sim.result()
        fleet.wait_worker("w1", worker)
        long_id = httpx.post(f"{api}/jobs", json={"model": "llama3", "prompt": LONG}).json()["id"]
        threads = [
            threading.Thread(target=submit, args=(api, load)),
            threading.Thread(target=follow, args=(api, long_id, seqs, types)),
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(seqs) >= 5 and len(load.acked) >= 10, what="jobs submitted and one streaming")
        old = group.kill_primary()
        killed, seen_at_kill = time.monotonic(), len(seqs)
        group.wait_failover(old.port)
        wait_for(lambda: max(load.acked.values()) > killed, timeout=30, what="a submit acknowledged again")
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(60)
    ids = list(load.acked)

    def statuses() -> list[bytes | None]:
        pipe = fleet.redis.pipeline(transaction=False)
        for job_id in [*ids, long_id]:
            pipe.hget(keys.job_key(job_id), "status")
        return pipe.execute()  # type: ignore[no-any-return]

    with contextlib.suppress(AssertionError):  # the counts below say what was left
        wait_for(
            lambda: all(s is None or s in ENDED for s in statuses()), timeout=30, what="every job to end"
        )
    final = statuses()
    lost = [job_id for job_id, s in zip([*ids, long_id], final, strict=True) if s is None]
    stuck = [
        job_id for job_id, s in zip([*ids, long_id], final, strict=True) if s is not None and s not in ENDED
    ]
    inflight = fleet.redis.llen(keys.inflight_key("w1"))
    view = httpx.get(f"{api}/jobs/{long_id}").json()
    assert not lost and not stuck and inflight == 0, (lost, stuck, inflight)
    assert set(final) == {b"finished"}, final
    assert view["text"] == expected_text("llama3", LONG)
    assert seen_at_kill < len(seqs) and types[seen_at_kill - 1] == "chunk", "the job streamed across the kill"
    assert types[-1] == "done" and types.count("done") == 1, types
    assert seqs == list(range(len(seqs))), f"a gap or duplicate in the resumed stream: {seqs}"
