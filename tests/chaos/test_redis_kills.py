"""Redis killed (``kill -9``) ten times under ~300 submits/s: no job is left running or queued with nobody to run
it. A bench (``pytest -m bench tests/chaos/test_redis_kills.py -s``), with push dispatch on and off (the workers
pop): about a minute each, over ``make test``'s budget. A job whose enqueue fell in the last second before a kill
may be gone with the AOF's unsynced second (``appendfsync everysec``): counted as lost, apart from the stuck ones.
The submits come from ``bench.submit_load`` (asyncio, open loop at ``RATE``); the achieved rate, the machine's load
and the CPU of each process are printed. ``CHAOS_SUBMITTERS`` spreads them over submitters and priorities;
``CHAOS_AOF_LOSS`` makes each kill a power loss (the AOF's last seconds cut), whose lost jobs are expected."""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from bench.submit_load import SubmitLoad
from corral.cli.embedded_redis import RedisServer
from corral.common import keys

from ..conftest import Fleet
from ..support import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.bench]
FAST = {"heartbeat_interval": 0.3, "heartbeat_ttl": 2.0, "janitor_interval": 0.2}
KILLS = int(os.environ.get("CHAOS_REDIS_KILLS", "10"))
# submits per second (the load); threads of httpx clients reached 69-250/s on 2 shared cores
RATE = float(os.environ.get("CHAOS_SUBMIT_RATE", "300"))
# submitters the load is spread over (round robin), each job at one of the three priorities by turn when over 1:
# the fair-share index's sub-queues, active sets and levels under the kills, not one sub-queue
SUBMITTERS = int(os.environ.get("CHAOS_SUBMITTERS", "1"))
# A kill -9 of the process alone loses nothing the AOF was given (the kernel still writes it out). With this many
# seconds (at most 1.5), each kill also drops what the AOF gained in the seconds before it, at whatever byte the
# cut falls, as a power loss would with `appendfsync everysec` (Redis loads a truncated AOF up to its last whole
# command and drops a MULTI/EXEC without its EXEC): the workers and the API act on replies Redis has forgotten.
AOF_LOSS = float(os.environ.get("CHAOS_AOF_LOSS", "0"))
PRIORITIES = ("normal", "high", "low")
ENDED = {"finished", "failed", "canceled"}  # RQ's words, in the job hash


def outcomes(fleet: Fleet, ids: list[str]) -> Counter[str]:
    pipe = fleet.redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job_key(job_id), "status")
    return Counter("lost" if status is None else status.decode() for status in pipe.execute())


def reruns(fleet: Fleet, ids: list[str]) -> Counter[str]:
    """Jobs that ran more than once, by why (each retry's reason, worker names and numbers left out) and whether
    the attempt given up had streamed output (a second run) or none (a re-queue of a job that never ran)."""
    pipe = fleet.redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job_key(job_id), "attempt")
    out: Counter[str] = Counter()
    for job_id, attempt in zip(ids, pipe.execute(), strict=True):
        if int(attempt or 1) < 2:
            continue
        chunks = 0
        for _, fields in fleet.redis.xrange(keys.events_key(job_id)):
            event = orjson.loads(fields[b"e"])
            chunks += event["type"] == "chunk"
            if event["type"] == "retry":
                ran = "had streamed" if chunks else "had not streamed"
                out[f"{re.sub(r'w[0-9]+|[0-9.]+', '#', event['reason'])} ({ran})"] += 1
                chunks = 0
    return out


class CPU:
    """CPU used by the processes of a run (the API, workers, simulators; "tests" is this process: the submit load)
    from now on, in cores."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.before = self._times()
        self.load = os.getloadavg()[0]

    def _times(self) -> dict[str, float]:
        out = {}
        for child in self.fleet.children:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(child.pid).cpu_times()
                out[child.name.split("-")[0]] = (
                    out.get(child.name.split("-")[0], 0.0) + times.user + times.system
                )
        own = psutil.Process().cpu_times()
        return {**out, "tests": own.user + own.system}

    def report(self, seconds: float) -> str:
        after = self._times()
        shares = {name: (after[name] - self.before.get(name, 0.0)) / seconds for name in after}
        cores = ", ".join(f"{name} {share:.2f}" for name, share in sorted(shares.items()))
        return f"load average {self.load:.1f} -> {os.getloadavg()[0]:.1f}; cores used: {cores}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("push", ["true", "false"], ids=["push", "pop"])
def test_ten_redis_kill9_under_load_leave_no_job_stuck(
    fleet: Fleet, redis_server: RedisServer, push: str
) -> None:
    sims = [fleet.simulator("llama3:latest", tps=300, parallel=16) for _ in range(2)]
    for i, sim in enumerate(sims):
        fleet.worker(sim, f"w{i}", worker_slots=8, push_dispatch=push, **FAST)
    api = fleet.api(**FAST)
    cpu = CPU(fleet)
    load = SubmitLoad(api, RATE, body=body).start()
    try:
        down = 0.0  # seconds from each kill until Redis answers again (its AOF loaded)
        cut = 0  # AOF bytes dropped after the kills (AOF_LOSS)
        for _ in range(KILLS):
            time.sleep(1.5 - AOF_LOSS)  # the load runs between kills
            mark = aof_tail(redis_server)
            time.sleep(AOF_LOSS)
            redis_server.kill()
            killed = time.monotonic()
            cut += lose_aof_tail(redis_server, mark)
            redis_server.start()
            down += time.monotonic() - killed
    finally:
        load.stop()
    usage = cpu.report(load.elapsed)
    ids = load.ids

    def settled() -> Counter[str] | None:
        counts = outcomes(fleet, ids)
        return counts if set(counts) <= ENDED | {"lost"} else None

    try:
        counts = wait_for(settled, timeout=90, what="every job to end", step=0.5)
    except AssertionError:
        counts = outcomes(fleet, ids)
    stuck = counts["started"] + counts["queued"]
    inflight = sum(fleet.redis.llen(k) for k in fleet.redis.scan_iter("corral:inflight:*"))
    # ids left in the queues and the fair-share index once every job ended (stale entries: skipped by the pops)
    left = {
        p: sum(fleet.redis.llen(k) for k in fleet.redis.scan_iter(p)) for p in ("rq:queue:*", "corral:sq:*")
    }
    print(f"\n{KILLS} redis kill -9 in {load.elapsed:.1f}s, push dispatch {push}: {len(ids)} jobs accepted "
          f"({load.achieved:.0f}/s; {len(ids) / (load.elapsed - down):.0f}/s while Redis was up, {down:.1f}s down; "
          f"{load.offered:.0f}/s sent on a schedule of {RATE:.0f}/s, {SUBMITTERS} submitter(s), {cut:,} AOF bytes "
          f"cut; 202 p50 "
          f"{statistics.median(load.latencies) * 1000:.1f} ms); answers {dict(load.outcomes)}\n"
          f"  {usage}\n  outcomes {dict(counts)}; stuck {stuck}, left in flight {inflight}, in lists {left}; "
          f"ran more than once: {dict(reruns(fleet, ids))}; put back by the walk: {rescued(fleet)}")  # fmt: skip
    assert stuck == 0 and inflight == 0, (
        counts,
        [where(fleet, i) for i in ids if i not in ended(fleet, ids)],
    )


def aof_tail(server: RedisServer) -> tuple[Path, int] | None:
    """The AOF file being appended to and its size now (None: none yet, or no loss asked)."""
    files = sorted(
        (server.data_dir / "appendonlydir").glob("*.incr.aof"), key=lambda f: int(f.name.split(".")[-3])
    )
    if not AOF_LOSS or not files:
        return None
    return files[-1], files[-1].stat().st_size


def lose_aof_tail(server: RedisServer, mark: tuple[Path, int] | None) -> int:
    """Cut the AOF back to ``mark`` (the writes since it lost); 0 when it was rewritten meanwhile."""
    now = aof_tail(server)
    if mark is None or now is None or now[0] != mark[0]:
        return 0
    os.truncate(mark[0], mark[1])
    return now[1] - mark[1]


def body(n: int) -> dict[str, Any]:
    """The n-th submit: SubmitLoad's, spread over SUBMITTERS and their priorities."""
    if SUBMITTERS == 1:
        return {"model": "llama3", "prompt": f"k{n} w w w"}
    who, level = n % SUBMITTERS, PRIORITIES[(n // SUBMITTERS) % len(PRIORITIES)]
    return {"model": "llama3", "prompt": f"k{n} w w w", "submitter": f"t{who}", "priority": level}


def rescued(fleet: Fleet) -> int:
    """Jobs the janitors' walk over the history put back in a list (common/orphans.py): their log lines."""
    return sum(child.log().count("job rescued") for child in fleet.children)


def ended(fleet: Fleet, ids: list[str]) -> set[str]:
    pipe = fleet.redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job_key(job_id), "status")
    return {i for i, s in zip(ids, pipe.execute(), strict=True) if s is None or s.decode() in ENDED}


def where(fleet: Fleet, job_id: str) -> dict[str, object]:
    """A stuck job: its hash, events, and every list that holds it."""
    r = fleet.redis
    lists = [k.decode() for pattern in ("rq:queue:*", "corral:sq:*", "corral:inflight:*")
             for k in r.scan_iter(pattern) if r.lpos(k, job_id) is not None]  # fmt: skip
    parks = {k.decode(): r.hgetall(k) for k in r.scan_iter("corral:park:*")}
    events = [f[b"e"].decode() for _, f in r.xrange(keys.events_key(job_id))]
    return {
        "job": job_id,
        "hash": r.hgetall(keys.job_key(job_id)),
        "in": lists,
        "parks": parks,
        "events": events,
    }
