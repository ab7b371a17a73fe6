"""Two API replicas on one Redis, one of them killed (-9): readers and jobs carry on through the other, and a
key's rate limit and job quota hold across both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import Fleet, own_fleet
from ..support import Child, wait_for

pytestmark = pytest.mark.chaos
KEYS = ["reader-key-0123456789", "streamer-key-0123456789", "rate-key-0123456789", "quota-key-0123456789"]
SETTINGS = {"api_keys": ",".join(f"{k}:submit" for k in KEYS), "rate_limit": 0.2, "rate_burst": 6,
            "max_jobs_per_key": 2}  # fmt: skip
LONG_JOB = {"model": "llama3", "prompt": "a long story"}  # 60 tokens at 20/s: 3 s


class Replicas:
    """Two API replicas that live through the module, and two more to be killed."""

    def __init__(self, fleet: Fleet, bases: list[str]) -> None:
        self.fleet = fleet
        self.survivors, self.victims = bases[:2], bases[2:]

    def victim(self) -> tuple[str, Child]:
        base = self.victims.pop()
        return base, next(c for c in self.fleet.children if c.name == f"api-{base.rsplit(':', 1)[1]}")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    tmp: Path = tmp_path_factory.mktemp("replicas")
    with own_fleet(tmp) as (_server, fleet):
        sim = fleet.simulator(tps=20, min_tokens=60)
        with ThreadPoolExecutor(5) as pool:  # the processes start side by side
            worker = pool.submit(fleet.worker, sim, "w-replicas")
            bases = list(pool.map(lambda _: fleet.api(**SETTINGS), range(4)))
            worker.result()
        yield Replicas(fleet, bases)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def read_events(lines: Iterator[str], seqs: list[int], stop_after: int = 0) -> bool:
    """Append each event's seq; True at the job's last event, False after ``stop_after`` events (0: never)."""
    for line in lines:
        if line.startswith("data: "):
            event: dict[str, Any] = json.loads(line[6:])
            seqs.append(int(event["seq"]))
            if event["type"] in {"done", "error", "cancelled"}:
                return True
            if stop_after and len(seqs) >= stop_after:
                return False
    return False


def test_a_reader_whose_api_dies_resumes_on_the_other(replicas: Replicas) -> None:
    survivor = replicas.survivors[0]
    victim, child = replicas.victim()
    headers = auth(KEYS[0])
    job_id = httpx.post(f"{survivor}/jobs", json=LONG_JOB, headers=headers).json()["id"]
    seqs: list[int] = []
    with httpx.stream("GET", f"{victim}/jobs/{job_id}/events", headers=headers, timeout=30) as response:
        lines = response.iter_lines()
        assert not read_events(lines, seqs, stop_after=4)
        child.kill()
        with pytest.raises(httpx.HTTPError):  # the stream breaks with its API
            read_events(lines, seqs)
    resume = {**headers, "Last-Event-ID": str(seqs[-1])}
    with httpx.stream("GET", f"{survivor}/jobs/{job_id}/events", headers=resume, timeout=30) as response:
        assert read_events(response.iter_lines(), seqs)
    assert seqs == list(range(len(seqs))), "a gap or a duplicate"


def test_a_streamed_submit_whose_api_dies_is_still_done(replicas: Replicas) -> None:
    survivor = replicas.survivors[1]
    victim, child = replicas.victim()
    headers = auth(KEYS[1])
    seqs: list[int] = []
    with httpx.stream("POST", f"{victim}/jobs", json={**LONG_JOB, "stream": True}, headers=headers,
                      timeout=30) as response:  # fmt: skip
        job_id = response.headers["x-corral-job"]
        assert not read_events(response.iter_lines(), seqs, stop_after=3)
        child.kill()
    http = replicas.fleet.http(survivor)
    job_key = f"rq:job:{job_id}"  # watched in Redis: the key's rate limit is for the assertions below
    wait_for(
        lambda: replicas.fleet.redis.hget(job_key, "status") == b"finished", timeout=30, what="the job done"
    )
    events = http.get(f"/jobs/{job_id}/events", headers={**headers, "Accept": "application/x-ndjson"})
    replay = [json.loads(line)["seq"] for line in events.text.splitlines() if line]
    assert replay == list(range(len(replay))) and replay[:3] == seqs
    assert http.get(f"/jobs/{job_id}", headers=headers).json()["text"]


def test_rate_limits_and_quotas_hold_across_replicas(replicas: Replicas) -> None:
    clients = [replicas.fleet.http(base) for base in replicas.survivors]
    codes = [clients[n % 2].get("/queues", headers=auth(KEYS[2])).status_code for n in range(12)]
    assert codes.count(200) in (6, 7) and codes.count(429) == 12 - codes.count(200), codes  # one burst of 6
    ghost = {"model": "ghost", "prompt": "x", "wait": True}  # no worker: the jobs stay queued
    quota = [clients[n % 2].post("/jobs", json=ghost, headers=auth(KEYS[3])) for n in range(3)]
    assert [r.status_code for r in quota] == [202, 202, 429], [r.text for r in quota]
