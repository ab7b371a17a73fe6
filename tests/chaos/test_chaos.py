"""Kill real processes mid-job and check that no job is lost or finishes twice."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from corral.cli.embedded_redis import RedisServer
from corral.simulator import expected_text

from ..conftest import Fleet
from ..support import wait_for

pytestmark = pytest.mark.chaos
FAST = {"heartbeat_interval": 0.3, "heartbeat_ttl": 2.0, "janitor_interval": 0.2}


def follow(api: str, job_id: str, out: list[dict[str, Any]]) -> None:
    """A reader that reconnects from its last seq until the job ends."""
    next_seq = 0
    for _ in range(200):
        try:
            with httpx.stream("GET", f"{api}/jobs/{job_id}/events", params={"from": next_seq},
                              headers={"Accept": "application/x-ndjson"}, timeout=60) as response:  # fmt: skip
                for line in response.iter_lines():
                    if line:
                        event = json.loads(line)
                        out.append(event)
                        next_seq = event["seq"] + 1
                        if event["type"] in ("done", "error", "cancelled"):
                            return
        except httpx.TransportError:
            continue


def check_job(api: str, job_id: str, prompt: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    view = httpx.get(f"{api}/jobs/{job_id}").json()
    assert view["status"] == "succeeded", (
        view.get("error"),
        [(e["type"], e.get("attempt")) for e in events],
        view,
    )
    assert view["text"] == expected_text("llama3", prompt)
    assert [e["seq"] for e in events] == list(range(len(events))), "gap or duplicate in a reader's events"
    types = [e["type"] for e in events]
    assert types.count("done") == 1 and types[-1] == "done"
    assert types.count("started") == types.count("retry") + 1  # every restart is marked by a retry
    last_start = len(types) - 1 - types[::-1].index("started")
    assert "".join(e["text"] for e in events[last_start:] if e["type"] == "chunk") == view["text"]
    return view  # type: ignore[no-any-return]


def test_sigkill_workers_at_random_points_of_20_streamed_jobs(fleet: Fleet) -> None:
    rng = random.Random(20261123)
    sims = [fleet.simulator("llama3:latest", tps=15, parallel=8) for _ in range(2)]
    live = {f"w{i}": fleet.worker(sims[i], f"w{i}", worker_slots=4, **FAST) for i in range(2)}
    api = fleet.api(**FAST)
    prompts = [" ".join(f"j{j}t{t}" for t in range(rng.randint(15, 35))) for j in range(20)]
    ids = [httpx.post(f"{api}/jobs", json={"model": "llama3", "prompt": p}).json()["id"] for p in prompts]
    streams: list[list[dict[str, Any]]] = [[] for _ in ids]
    readers = [threading.Thread(target=follow, args=(api, i, s)) for i, s in zip(ids, streams, strict=True)]
    for reader in readers:
        reader.start()
    kills = 0
    for round_ in range(4):
        # kill a worker at a random point: after a random number of events across all jobs
        target = sum(len(s) for s in streams) + rng.randint(3, 25)
        wait_for(lambda t=target: sum(len(s) for s in streams) >= t or all(not r.is_alive() for r in readers),
                 what="progress")  # fmt: skip
        victim = rng.choice(sorted(live))
        live.pop(victim).kill()
        kills += 1
        new_id = f"r{round_}"
        live[new_id] = fleet.worker(sims[int(victim[-1]) if victim[-1].isdigit() else 0], new_id,
                                    worker_slots=4, **FAST)  # fmt: skip
    for reader in readers:
        reader.join(60)
        assert not reader.is_alive()
    retries = 0
    for job_id, prompt, events in zip(ids, prompts, streams, strict=True):
        view = check_job(api, job_id, prompt, events)
        retries += view["attempt"] - 1
    assert kills == 4 and retries >= 1  # at least one kill hit a running job


def test_redis_shutdown_and_kill9_under_load(fleet: Fleet, redis_server: RedisServer) -> None:
    sim = fleet.simulator("llama3:latest", tps=30, parallel=8)
    fleet.worker(sim, "w1", worker_slots=8, **FAST)
    api = fleet.api(**FAST)
    prompts = [" ".join(f"p{j}w{t}" for t in range(20)) for j in range(16)]
    ids = [httpx.post(f"{api}/jobs", json={"model": "llama3", "prompt": p}).json()["id"] for p in prompts]
    wait_for(lambda: httpx.get(f"{api}/jobs/{ids[0]}").json()["events"] > 4, what="load running")
    redis_server.stop()  # SHUTDOWN: the AOF is flushed, nothing may be lost
    redis_server.start()
    more = [" ".join(f"q{j}w{t}" for t in range(20)) for j in range(8)]
    wait_for(lambda: httpx.post(f"{api}/jobs", json={"model": "llama3", "prompt": "ping"}).status_code == 202,
             what="api back")  # fmt: skip
    ids += [httpx.post(f"{api}/jobs", json={"model": "llama3", "prompt": p}).json()["id"] for p in more]
    prompts += more
    # let the AOF (fsync every second) hold everything acknowledged, then crash Redis for real
    wait_for(lambda: fleet.redis.info("persistence")["aof_last_write_status"] == "ok", what="aof")
    threading.Event().wait(1.2)  # appendfsync everysec: acknowledged writes reach the disk within a second
    redis_server.kill()
    redis_server.start()
    for job_id, prompt in zip(ids, prompts, strict=True):
        view = wait_for(lambda j=job_id: (v := httpx.get(f"{api}/jobs/{j}").json())["status"]
                        in ("succeeded", "failed") and v, timeout=60, what="job end")  # fmt: skip
        assert view["status"] == "succeeded", view
        assert view["text"] == expected_text("llama3", prompt)
        events = [json.loads(x) for x in httpx.get(f"{api}/jobs/{job_id}/events",
                  headers={"Accept": "application/x-ndjson"}).text.splitlines()]  # fmt: skip
        assert [e["type"] for e in events].count("done") == 1
    assert all(child.alive() for child in fleet.children)


def test_api_killed_mid_stream_reader_resumes_on_another(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest", tps=40)
    fleet.worker(sim, "w1")
    api_a, api_b = fleet.api(), fleet.api()
    prompt = " ".join(f"w{i}" for i in range(40))
    job_id = httpx.post(f"{api_a}/jobs", json={"model": "llama3", "prompt": prompt}).json()["id"]
    seen: list[dict[str, Any]] = []
    victim = next(c for c in fleet.children if c.name.startswith("api-") and api_a.endswith(c.name[4:]))
    stream = httpx.stream("GET", f"{api_a}/jobs/{job_id}/events", timeout=30)
    with pytest.raises(httpx.TransportError), stream as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if len(seen) == 8:
                    victim.kill()
    assert len(seen) >= 8
    last_id = str(seen[-1]["seq"])
    with httpx.stream("GET", f"{api_b}/jobs/{job_id}/events", headers={"Last-Event-ID": last_id},
                      timeout=30) as response:  # fmt: skip
        seen += [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    check_job(api_b, job_id, prompt, seen)


def test_ollama_crash_mid_job_finishes_on_another_host(fleet: Fleet) -> None:
    sim_a = fleet.simulator("llama3:latest", tps=20, name="sim-a")
    fleet.worker(sim_a, "a", **FAST)
    api = fleet.api(**FAST)
    prompt = " ".join(f"w{i}" for i in range(200))  # ~10 s on host a: it is still running when a crashes
    job_id = httpx.post(f"{api}/jobs", json={"model": "llama3", "prompt": prompt}).json()["id"]
    wait_for(lambda: httpx.get(f"{api}/jobs/{job_id}").json()["events"] > 5, what="job streaming on a")
    sim_b = fleet.simulator("llama3:latest", tps=500)
    fleet.worker(sim_b, "b", **FAST)
    assert httpx.get(f"{api}/jobs/{job_id}").json()["status"] == "running"
    next(c for c in fleet.children if c.name == "sim-a").kill()
    view = wait_for(lambda: (v := httpx.get(f"{api}/jobs/{job_id}").json())["status"] == "succeeded" and v,
                    timeout=30, what="job to finish on b")  # fmt: skip
    assert view["worker"] == "b" and view["text"] == expected_text("llama3", prompt)
    events: list[dict[str, Any]] = []
    follow(api, job_id, events)
    check_job(api, job_id, prompt, events)


def test_a_worker_dying_between_pop_and_start_loses_nothing(fleet: Fleet) -> None:
    """RQ's multi-queue BLPOP loses a job killed right after the pop; Corral's pop is one atomic move into the
    worker's in-flight list, so the janitor finds it there."""
    sim = fleet.simulator("llama3:latest")
    doomed = fleet.worker(sim, "doomed", test_fault="after_pop", **FAST)
    api = fleet.api(**FAST)
    job_id = httpx.post(f"{api}/jobs", json={"model": "llama3", "prompt": "survive"}).json()["id"]
    assert doomed.process is not None and doomed.process.wait(15) == 137  # died holding the job
    assert fleet.redis.lrange("corral:inflight:doomed", 0, -1) == [job_id.encode()]
    fleet.worker(sim, "healthy", **FAST)
    view = wait_for(lambda: (v := httpx.get(f"{api}/jobs/{job_id}").json())["status"] == "succeeded" and v,
                    what="job recovered")  # fmt: skip
    assert (
        view["worker"] == "healthy"
        and view["attempt"] == 2
        and view["text"] == expected_text("llama3", "survive")
    )


def submit_streamed(api: str, prompt: str, out: list[dict[str, Any]]) -> None:
    """A streamed submit (its chunks over the direct link, the jobs sent ahead to parked workers) read to its end."""
    body = {"model": "llama3", "prompt": prompt, "stream": True}
    with httpx.stream("POST", f"{api}/jobs", json=body, headers={"Accept": "application/x-ndjson"},
                      timeout=60) as response:  # fmt: skip
        out.extend(json.loads(line) for line in response.iter_lines() if line)


def starter(events: list[dict[str, Any]]) -> str:
    """The worker of the last start among ``events`` ('' before any)."""
    return next((e["worker"] for e in reversed(events) if e["type"] == "started"), "")


def kill_the_busiest_twice(
    fleet: Fleet,
    sims: list[str],
    live: dict[str, Any],
    load: tuple[list[list[Any]], list[threading.Thread], random.Random],
    busy: Callable[[str], int],
) -> None:
    """Start the reading threads; twice, once their streams have grown a little more, SIGKILL the live worker that
    ``busy`` ranks busiest and start a fresh one on its simulator; then wait for every thread to end."""
    streams, threads, rng = load
    for thread in threads:
        thread.start()
    for round_ in range(2):
        target = sum(len(s) for s in streams) + rng.randint(5, 30)
        wait_for(lambda t=target: sum(len(s) for s in streams) >= t or all(not r.is_alive() for r in threads),
                 what="progress")  # fmt: skip
        victim = max(sorted(live), key=busy)
        live.pop(victim).kill()
        live[f"r{round_}"] = fleet.worker(sims[int(victim[-1])], f"r{round_}", worker_slots=4, **FAST)
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()


def test_sigkill_linked_workers_under_streamed_submits(fleet: Fleet) -> None:
    """The same over the direct link: each submitter's own stream, read live, has every event once and in order
    (a worker killed after a chunk went on the link leaves no event the record lacks), a retry before each restart,
    and the whole text after the last start."""
    rng = random.Random(20261207)
    sims = [fleet.simulator("llama3:latest", tps=15, parallel=8) for _ in range(2)]
    live = {f"w{i}": fleet.worker(sims[i], f"w{i}", worker_slots=4, **FAST) for i in range(2)}
    api = fleet.api(**FAST)
    warm = [" ".join(f"warm{j}t{t}" for t in range(3)) for j in range(4)]  # the workers make their links
    for prompt in warm:
        submit_streamed(api, prompt, [])
    prompts = [" ".join(f"s{j}t{t}" for t in range(rng.randint(15, 30))) for j in range(12)]
    streams: list[list[dict[str, Any]]] = [[] for _ in prompts]
    submitters = [threading.Thread(target=submit_streamed, args=(api, p, s)) for p, s in zip(prompts, streams,
                                                                                         strict=True)]  # fmt: skip

    def running(worker: str) -> int:
        return [starter(s) for s in streams if s and s[-1]["type"] in ("started", "chunk")].count(worker)

    kill_the_busiest_twice(fleet, sims, live, (streams, submitters, rng), running)
    retries = sum(check_job(api, events[0]["job"], prompt, events)["attempt"] - 1
                  for prompt, events in zip(prompts, streams, strict=True))  # fmt: skip
    assert retries >= 1  # a kill hit a running job


def generate_streamed(api: str, prompt: str, out: list[dict[str, Any]], jobs: list[str]) -> None:
    """A drop-in ``/api/generate`` stream (its chunks on the link before their emit: ``link_first``) to its end."""
    body = {"model": "llama3", "prompt": prompt, "stream": True}
    with httpx.stream("POST", f"{api}/api/generate", json=body, timeout=60) as response:
        jobs.append(response.headers["X-Corral-Job"])
        for line in response.iter_lines():
            if line:
                out.append(json.loads(line))


def test_sigkill_linked_workers_under_dropin_streams(fleet: Fleet) -> None:
    """Drop-in readers cannot resume, so their chunks go on the link before their emit: a worker killed between
    the two leaves such a reader a chunk the record lacks. Each stream must still be the model's text, whole and
    ``done``, or a prefix of it and the error that says the job restarted after tokens were sent, never two
    attempts' text; and every job must finish once, whole, in the record."""
    rng = random.Random(20261208)
    sims = [fleet.simulator("llama3:latest", tps=15, parallel=8) for _ in range(2)]
    live = {f"w{i}": fleet.worker(sims[i], f"w{i}", worker_slots=4, **FAST) for i in range(2)}
    api = fleet.api(**FAST)
    for j in range(4):  # the workers make their links
        generate_streamed(api, f"warm{j}", [], [])
    prompts = [" ".join(f"d{j}t{t}" for t in range(rng.randint(15, 30))) for j in range(12)]
    streams: list[list[dict[str, Any]]] = [[] for _ in prompts]
    jobs: list[list[str]] = [[] for _ in prompts]
    readers = [threading.Thread(target=generate_streamed, args=(api, *args))
               for args in zip(prompts, streams, jobs, strict=True)]  # fmt: skip

    def in_flight(worker: str) -> int:
        return int(fleet.redis.llen(f"corral:inflight:{worker}"))

    kill_the_busiest_twice(fleet, sims, live, (streams, readers, rng), in_flight)
    cut = 0
    for prompt, lines, (job_id,) in zip(prompts, streams, jobs, strict=True):
        text = "".join(line.get("response", "") for line in lines)
        whole = expected_text("llama3", prompt)
        if "error" in lines[-1]:
            assert "restarted on another worker after tokens were sent" in lines[-1]["error"], lines[-1]
            assert whole.startswith(text) and text, (text, whole)
            cut += 1
        else:
            assert lines[-1]["done"] is True and text == whole
        view = wait_for(lambda j=job_id: (v := httpx.get(f"{api}/jobs/{j}").json())["status"] == "succeeded" and v,
                        what="the job finished elsewhere")  # fmt: skip
        assert view["text"] == whole
    assert cut >= 1  # a kill hit a stream after its first tokens
