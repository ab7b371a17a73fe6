"""Log lines: a line per job state change, from real API and worker processes; text ``key=value`` or JSON lines;
never a prompt or a key."""

from __future__ import annotations

import json
import logging
import re
import time

import httpx
import pytest
import redis

from corral.common import keys
from corral.common.janitor import Janitor
from corral.common.logs import JsonFormatter, TextFormatter
from corral.common.schemas import JobRequest
from corral.common.store import JobStore

from ..conftest import Fleet
from ..support import wait_for
from .blocking import LIMITS, BlockingStore

PROMPTS = ("tell me about the purple-zebra-4711", "stream the orange-walrus-0815", "never-run-cactus-9")
KEY = "log-test-admin-key-0123456789"


def record(**fields: object) -> logging.LogRecord:
    made = logging.LogRecord("corral.jobs", logging.INFO, __file__, 1, "job %s", ("finished",), None)
    made.fields = {"event": "finished", **fields}
    return made


@pytest.mark.unit
def test_text_lines_are_key_value_and_json_lines_parse() -> None:
    line = TextFormatter().format(
        record(job="abc", status="failed", error='said "no" = 1', ttft_ms=1.5, tokens=None)
    )
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO corral\.jobs: job finished job=abc status=failed "
        r'error="said \\"no\\" = 1" ttft_ms=1.5',
        line,
    ), line
    entry = json.loads(JsonFormatter().format(record(job="abc", ttft_ms=1.5, msg="not the message")))
    assert entry["msg"] == "job finished" and entry["event"] == "finished" and entry["ttft_ms"] == 1.5
    assert entry["level"] == "INFO" and entry["logger"] == "corral.jobs" and entry["time"].endswith("Z")


@pytest.mark.integration
def test_a_requeue_and_an_expiry_are_a_line_each(
    store: BlockingStore, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "corral.jobs")
    r.zadd(keys.model_workers_key("m:latest"), {"live": time.time() + 60})
    running = store.enqueue(JobRequest(model="m", prompt=PROMPTS[0])).id
    assert store.pop("gone", ["m:latest"]) is not None
    waiting = store.enqueue(JobRequest(model="m", prompt=PROMPTS[1], queue_timeout=0.001)).id
    time.sleep(0.01)  # (past its queue deadline)
    Janitor(JobStore(r, LIMITS), heartbeat_ttl=0.0).sweep()
    lines = [(rec.getMessage(), rec.fields) for rec in caplog.records if rec.name == "corral.jobs"]  # type: ignore[attr-defined]
    assert [(m, f["job"]) for m, f in lines] == [
        ("job submitted", running),
        ("job submitted", waiting),
        ("job requeued", running),
        ("job finished", waiting),
    ]
    assert lines[2][1] | {} == {"event": "requeued", "job": running, "worker": "gone", "next_attempt": 2,
                                "reason": "worker gone is gone"}  # fmt: skip
    assert lines[3][1]["status"] == "failed"
    assert not any(p in caplog.text for p in PROMPTS)


@pytest.mark.integration
def test_one_line_per_state_change_from_the_api_and_the_worker(fleet: Fleet) -> None:
    sim = fleet.simulator()
    worker = fleet.worker(sim, "w-log", log_format="json")
    api = fleet.api(log_format="text", log_access="true", api_keys=f"{KEY}:admin")
    http = fleet.http(api)
    http.headers["Authorization"] = f"Bearer {KEY}"
    done = http.post("/jobs", json={"model": "llama3", "prompt": PROMPTS[0]}).json()["id"]
    with http.stream("POST", "/api/generate", json={"model": "llama3", "prompt": PROMPTS[1]}) as streamed:
        assert streamed.status_code == 200 and len(list(streamed.iter_lines())) > 1
    queued = http.post("/jobs", json={"model": "ghost", "prompt": PROMPTS[2], "wait": True}).json()["id"]
    assert http.delete(f"/jobs/{queued}").json()["status"] == "cancelled"
    wait_for(lambda: http.get(f"/jobs/{done}").json()["status"] == "succeeded", what="job done")

    def worker_events() -> list[dict[str, object]]:
        entries = [
            json.loads(line) for line in worker.log().splitlines() if line.strip()
        ]  # every line is JSON
        return [e for e in entries if e["logger"] == "corral.jobs"]

    wait_for(lambda: sum(e["event"] == "finished" for e in worker_events()) == 2, what="two finished lines")
    api_log = fleet.children[-1].log()
    submitted = re.findall(r" INFO corral\.jobs: job submitted job=(\w+) model=(\S+) ", api_log)
    assert len(submitted) == 3 and submitted[0] == (done, "llama3:latest") and submitted[2][0] == queued
    assert len(re.findall(rf"corral\.jobs: job cancelled job={queued}\b", api_log)) == 1
    assert re.search(rf'"GET /jobs/{done} HTTP/1.1" 200', api_log)  # the access log is on
    events = worker_events()
    by_job: dict[object, list[dict[str, object]]] = {}
    for event in events:
        by_job.setdefault(event["job"], []).append(event)
    assert len(by_job) == 2 and all(
        [e["event"] for e in lines] == ["started", "finished"] for lines in by_job.values()
    )
    started, finished = by_job[done]
    assert (
        started["worker"] == "w-log" and started["attempt"] == 1 and isinstance(started["queued_ms"], float)
    )
    assert (
        finished["status"] == "succeeded"
        and finished["attempt"] == 1
        and finished["model"] == "llama3:latest"
    )
    assert 0 < finished["ttft_ms"] <= finished["duration_ms"]  # type: ignore[operator]
    assert finished["tokens"] > 0 and finished["tokens_per_s"] > 0  # type: ignore[operator]
    for log in (api_log, worker.log()):
        assert not any(p in log for p in PROMPTS) and KEY not in log
    assert httpx.get(api + "/healthz").status_code == 200
