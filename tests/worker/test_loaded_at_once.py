"""A worker reads what its engine holds (/api/ps) as soon as a job's model has been loaded, not at its next timed
read: the load may have evicted another model, whose warm claim must go before more jobs of it are placed here."""

from __future__ import annotations

import pytest

from corral.common import keys
from corral.common.jobs import Limits
from corral.common.schemas import JobRequest
from corral.common.settings import Settings
from corral.common.store import JobStore

from ..conftest import Fleet
from ..support import wait_for

pytestmark = pytest.mark.integration
A, B = "llama3:latest", "qwen2.5:0.5b"
SLOW_BEATS = {"heartbeat_interval": 20, "heartbeat_ttl": 60, "model_refresh_interval": 20}


def test_an_eviction_withdraws_the_warm_claim_at_once(fleet: Fleet) -> None:
    sim = fleet.simulator(f"{A},{B}", max_loaded=1, load_time=0.2)  # the host holds one model
    fleet.worker(sim, "w", **SLOW_BEATS)  # its timed reads are 20 s apart
    r = fleet.redis
    store = JobStore(r, Limits.from_settings(Settings(redis_url=fleet.redis_url)))
    for model in (A, B):
        job = store.enqueue(JobRequest(model=model, prompt="hi")).id
        wait_for(lambda job=job: store.get(job).status == "succeeded", what=f"a job of {model}")
        if model == A:
            wait_for(lambda: r.zscore(keys.warm_key(A), "w") is not None, what="A claimed warm")
    assert r.zscore(keys.warm_key(B), "w") is not None  # B is loaded here now
    wait_for(lambda: r.zscore(keys.warm_key(A), "w") is None, timeout=5, what="A's claim withdrawn")
    assert store.get(job).worker == "w"


def test_a_busy_worker_keeps_its_warm_claim_while_its_jobs_outlast_it(fleet: Fleet) -> None:
    sim = fleet.simulator(A, tps=8)
    fleet.worker(sim, "w", worker_slots=1, heartbeat_interval=0.3, heartbeat_ttl=1.0)  # claims last 1 s
    r = fleet.redis
    store = JobStore(r, Limits.from_settings(Settings(redis_url=fleet.redis_url)))
    long = store.enqueue(JobRequest(model=A, prompt=" ".join(["word"] * 40))).id  # ~5 s; no pop meanwhile
    wait_for(lambda: store.get(long).status == "running", what="the long job started")
    first = r.zscore(keys.warm_key(A), "w")
    assert first is not None
    wait_for(lambda: (r.zscore(keys.warm_key(A), "w") or 0) > first + 1.5, timeout=4, what="claim renewed")
    assert store.get(long).status == "running"
    assert store.cancel(long) in ("cancelling", "cancelled")
