"""The scheduling delays follow the load times a worker measures (common/delays.py), end to end."""

from __future__ import annotations

import json
from datetime import datetime

import httpx
import pytest

from corral.common import keys
from corral.common.jobs import Limits
from corral.common.schemas import JobRequest
from corral.common.settings import Settings
from corral.common.store import JobStore

from ..conftest import Fleet
from ..support import wait_for

pytestmark = pytest.mark.integration
M, X = "llama3:latest", "qwen2.5:0.5b"


def ts(value: str | None) -> float:
    assert value is not None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def load_seconds(fleet: Fleet, worker: str) -> dict[str, float]:
    return dict(json.loads(fleet.redis.hget(keys.worker_key(worker), "load_seconds") or b"{}"))


def test_a_cold_host_helps_after_its_measured_load_time_not_a_fixed_delay(fleet: Fleet) -> None:
    # A has M loaded and runs one job at a time, slowly; B loads any model in 0.3 s and has measured one load
    sim_a = fleet.simulator(M, tps=8)
    sim_b = fleet.simulator(f"{M},{X}", tps=200, load_time=0.3)
    httpx.post(sim_a + "/api/generate", json={"model": M}, timeout=10).raise_for_status()  # load only
    fleet.worker(sim_a, "wa", worker_slots=1)
    fleet.worker(sim_b, "wb", worker_slots=2)  # the delays unset: they follow the loads
    r = fleet.redis
    wait_for(lambda: r.zscore(keys.warm_key(M), "wa") is not None, what="wa claims the model warm")
    store = JobStore(r, Limits.from_settings(Settings(redis_url=fleet.redis_url)))

    first = store.enqueue(JobRequest(model=X, prompt="hi")).id  # only B has X: it loads it
    wait_for(lambda: store.get(first).status == "succeeded", what="X job done")
    wait_for(lambda: X in load_seconds(fleet, "wb"), what="wb's heartbeat shows the load it measured")
    assert 0.25 <= load_seconds(fleet, "wb")[X] < 1.0

    slow = store.enqueue(JobRequest(model=M, prompt=" ".join(["word"] * 40))).id  # ~5 s on A
    wait_for(lambda: store.get(slow).status != "queued", what="slow job started")
    assert store.get(slow).worker == "wa"
    waiting = store.enqueue(JobRequest(model=M, prompt="me next")).id
    wait_for(lambda: store.get(waiting).status != "queued", timeout=20, what="second job started")
    view = store.get(waiting)
    assert view.worker == "wb"  # A is saturated: B loads M, after about its load time (0.3 s), not 2 s
    assert 0.25 <= ts(view.started_at) - ts(view.enqueued_at) < 1.6
    assert store.cancel(slow) in ("cancelling", "cancelled")
