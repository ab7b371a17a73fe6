"""``/metrics`` histograms come from Redis: after N jobs every API replica counts exactly N observations."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Fleet
from ..support import wait_for

pytestmark = pytest.mark.integration
N = 5
HISTOGRAMS = ("corral_queue_wait_seconds", "corral_time_to_first_token_seconds", "corral_job_duration_seconds",
              "corral_tokens_per_second")  # fmt: skip


def scrape(fleet: Fleet, base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = fleet.http(base).get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_histograms_count_every_job_on_every_replica(fleet: Fleet) -> None:
    sim = fleet.simulator("llama3:latest,nomic-embed-text:latest", tps=300)
    fleet.worker(sim, "w-metrics", worker_slots=2)
    first, second = fleet.api(), fleet.api()
    http = fleet.http(first)
    ids = [
        http.post("/jobs", json={"model": "llama3", "prompt": f"count {i}"}).json()["id"] for i in range(N)
    ]
    embed = http.post("/jobs", json={"model": "nomic-embed-text", "input": "no tokens streamed"}).json()["id"]
    views = wait_for(lambda: all((v := [http.get(f"/jobs/{i}").json() for i in [*ids, embed]])[k]["status"]
                                 == "succeeded" for k in range(N + 1)) and v, what="all jobs done")  # fmt: skip
    duration = ("corral_job_duration_seconds_count", {"model": "llama3:latest", "status": "succeeded"})
    wait_for(lambda: value(scrape(fleet, second), duration[0], **duration[1]) == N, what="timings recorded")

    a, b = scrape(fleet, first), scrape(fleet, second)
    llama = {"model": "llama3:latest"}
    for name in HISTOGRAMS:
        labels = {**llama, "status": "succeeded"} if name == "corral_job_duration_seconds" else llama
        count = value(a, name + "_count", **labels)
        assert count == N, (name, count)
        assert value(a, name + "_bucket", **labels, le="+Inf") == N
        assert (value(a, name + "_sum", **labels) or 0) > 0
        buckets = sorted(
            (float(dict(k[1])["le"]), v) for k, v in a.items() if k[0] == name + "_bucket"
            and dict(k[1]).get("model") == "llama3:latest"
        )  # fmt: skip
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    embed_labels = {"model": "nomic-embed-text:latest"}
    assert value(a, "corral_job_duration_seconds_count", **embed_labels, status="succeeded") == 1
    assert value(a, "corral_queue_wait_seconds_count", **embed_labels) == 1
    assert value(a, "corral_time_to_first_token_seconds_count", **embed_labels) is None  # nothing streamed
    tokens = sum(v["final"]["eval_count"] for v in views[:N])
    assert value(a, "corral_tokens_generated_total", **llama) == tokens
    assert value(a, "corral_fleet_slots", kind="total") == 2
    assert value(a, "corral_jobs_requeued_total") == 0
    histogram_lines = {k: v for k, v in a.items() if k[0].startswith(HISTOGRAMS)}
    assert histogram_lines == {k: v for k, v in b.items() if k[0].startswith(HISTOGRAMS)}  # same on both

    check_cancelled_job_timing(fleet, http)


def check_cancelled_job_timing(fleet: Fleet, http: Any) -> None:
    """A running job cancelled: timed as cancelled, its first token counted, no speed (no final stats)."""
    job_id = http.post("/jobs", json={"model": "llama3", "prompt": "w " * 1500}).json()["id"]
    wait_for(lambda: http.get(f"/jobs/{job_id}").json()["events"] > 3, what="tokens flowing")
    assert http.delete(f"/jobs/{job_id}").json()["status"] == "cancelling"
    labels = {"model": "llama3:latest", "status": "cancelled"}
    base = str(http.base_url)
    wait_for(lambda: value(scrape(fleet, base), "corral_job_duration_seconds_count", **labels) == 1,
             what="cancelled job timed")  # fmt: skip
    samples = scrape(fleet, base)
    assert value(samples, "corral_time_to_first_token_seconds_count", model="llama3:latest") == N + 1
    assert value(samples, "corral_tokens_per_second_count", model="llama3:latest") == N  # no final stats
