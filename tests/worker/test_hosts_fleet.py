"""Hosts by URL end to end, real processes: simulated engines added from the CLI and served by one ``corral fleet``
process; one engine going down marks only its host unhealthy; a removed host's worker drains and goes; kill -9 of
the fleet process re-queues every engine's in-flight jobs, none lost, stuck or run to a second result."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import NamedTuple

import httpx
import pytest

from corral.cli.main import main
from corral.simulator import expected_text

from ..conftest import Fleet, own_fleet
from ..support import free_port_block, wait_for

pytestmark = pytest.mark.integration
FAST = {"heartbeat_interval": 0.5, "heartbeat_ttl": 3.0}  # the fleet's and the API's (its janitor's)


class Engines(NamedTuple):
    fleet: Fleet
    urls: list[
        str
    ]  # three engines in one simulator process (`--count 3`); `slow:latest` takes 1.5 s to answer
    doomed: str  # an engine in a process of its own, to take down
    base: str  # the API
    api: httpx.Client


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    with own_fleet(tmp_path_factory.mktemp("hosts")) as (_server, fleet):
        port = free_port_block(3)
        fleet.simulator("llama3:latest,slow:latest", port=port, count=3, tps=300,
                        specs=json.dumps({"slow:latest": {"ttft": 1.5}}))  # fmt: skip
        doomed = fleet.simulator("llama3:latest", name="sim-doomed", tps=300)
        base = fleet.api(**FAST)
        yield Engines(
            fleet, [f"http://127.0.0.1:{port + n}" for n in range(3)], doomed, base, fleet.http(base)
        )


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``corral …`` in this process: its exit code and what it printed."""
    with pytest.raises(SystemExit) as ended:
        main(list(argv))
    out = capsys.readouterr()
    return int(ended.value.code or 0), out.out + out.err


def submit(api: httpx.Client, model: str, prompts: list[str]) -> list[str]:
    return [api.post("/jobs", json={"model": model, "prompt": p}).json()["id"] for p in prompts]


def finish(api: httpx.Client, ids: list[str], model: str, prompts: list[str]) -> list[dict[str, object]]:
    """Wait for each job to end; each must have succeeded with its own text. Their views."""
    views = []
    for job_id, prompt in zip(ids, prompts, strict=True):
        view = wait_for(lambda j=job_id: (v := api.get(f"/jobs/{j}").json())["status"] in ("succeeded", "failed")
                        and v, timeout=30, what=f"job {job_id}")  # fmt: skip
        assert view["status"] == "succeeded" and view["text"] == expected_text(model, prompt), view
        views.append(view)
    return views


def health(api: httpx.Client) -> dict[str, str]:
    return {h["name"]: h["health"]["status"] for h in api.get("/hosts").json()["hosts"]}


def test_three_hosts_from_the_cli_one_down_one_removed(
    engines: Engines, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet, api, base = engines.fleet, engines.api, engines.base
    process = fleet.fleet_process("fleet-t", **FAST, cold_delay=0)  # no waiting for h0, which claims llama3
    for name, url in (("h0", engines.urls[0]), ("h1", engines.doomed), ("h2", engines.urls[1])):
        code, out = cli(capsys, "hosts", "add", url, "--name", name, "--slots", "2", "--api", base)
        assert code == 0 and f"host {name} registered" in out, out
    wait_for(lambda: health(api) == dict.fromkeys(("h0", "h1", "h2"), "serving"), timeout=30,
             what=f"three hosts served:\n{process.log()[-2000:]}")  # fmt: skip
    code, out = cli(capsys, "hosts", "ls", "--api", base)
    assert code == 0 and out.count("serving") == 3 and "fleet-t" in out, out
    prompts = [f"spread {n}" for n in range(8)]
    views = finish(api, submit(api, "llama3", prompts), "llama3", prompts)
    assert len({v["worker"] for v in views}) >= 2
    code, out = cli(capsys, "hosts", "test", "h1", "--api", base)
    assert code == 0 and "✓ version:" in out and "✓ generation: llama3:latest" in out, out

    next(child for child in fleet.children if child.name == "sim-doomed").kill()
    wait_for(lambda: health(api) == {"h0": "serving", "h1": "unhealthy", "h2": "serving"}, timeout=20,
             what="only h1 unhealthy")  # fmt: skip
    prompts = [f"after {n}" for n in range(4)]
    assert {v["worker"] for v in finish(api, submit(api, "llama3", prompts), "llama3", prompts)} <= {
        "h0",
        "h2",
    }
    code, out = cli(capsys, "hosts", "test", "h1", "--api", base)
    assert code == 4 and "✗ reachable" in out, out

    removed = time.monotonic()
    assert cli(capsys, "hosts", "rm", "h0", "--api", base)[0] == 0
    wait_for(lambda: not fleet.redis.exists("corral:worker:h0", "corral:hosts:lease:h0"), timeout=15,
             what="h0's worker drained and gone")  # fmt: skip
    print(f"host removed to worker gone: {time.monotonic() - removed:.2f} s")
    assert process.alive() and health(api) == {"h1": "unhealthy", "h2": "serving"}
    for name in ("h1", "h2"):
        cli(capsys, "hosts", "rm", name, "--api", base)
    assert process.stop() == 0


@pytest.mark.chaos
def test_kill_9_of_the_fleet_requeues_every_engines_jobs(engines: Engines) -> None:
    fleet, api = engines.fleet, engines.api
    for n, url in enumerate(engines.urls):
        assert api.post("/hosts", json={"url": url, "name": f"k{n}", "slots": 2}).status_code == 201
    process = fleet.fleet_process("fleet-k", **FAST)
    wait_for(lambda: health(api) == dict.fromkeys(("k0", "k1", "k2"), "serving"), timeout=30, what="k hosts")
    prompts = [f"long {n}" for n in range(9)]
    ids = submit(api, "slow", prompts)
    inflight = [f"corral:inflight:k{n}" for n in range(3)]

    def busy() -> (
        bool
    ):  # jobs in flight on every host (a slow machine may finish a first one before the last starts)
        return all(fleet.redis.llen(k) for k in inflight) and sum(fleet.redis.llen(k) for k in inflight) >= 4

    wait_for(busy, timeout=30, what="jobs running on every host")
    process.kill()  # SIGKILL: the fleet and its three workers die at once, mid-generation
    running = {
        i.decode() for k in inflight for i in fleet.redis.lrange(k, 0, -1)
    }  # (frozen: nobody runs them)
    assert len(running) >= 4
    wait_for(lambda: not any(fleet.redis.exists(k) for k in inflight), timeout=20, what="janitor re-queued")
    statuses = {j: api.get(f"/jobs/{j}").json() for j in running}
    assert all(v["status"] == "queued" and v["attempt"] == 2 for v in statuses.values()), statuses
    fleet.fleet_process("fleet-k", **FAST)  # a fleet again: the jobs run once more, to one result each
    views = finish(api, ids, "slow", prompts)
    assert all(
        int(str(v["attempt"])) >= 2 for v in views if v["id"] in running
    )  # (3: a late beat on a busy box)
    for job_id in ids:
        reply = api.get(f"/jobs/{job_id}/events", headers={"Accept": "application/x-ndjson"})
        events = [json.loads(line) for line in reply.text.splitlines() if line]
        assert [e["type"] for e in events].count("done") == 1, events
