"""``GET /metrics`` for Prometheus, computed from Redis at scrape time, so every API replica reports the same
fleet-wide numbers (counters live in ``corral:stats``, written by the job scripts)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from corral.common import keys
from corral.common.histograms import HISTOGRAMS, read_series
from corral.common.registry import list_workers

from ..deps import RedisDep, SettingsDep
from .fleet import queue_depths

router = APIRouter(tags=["fleet"])


class Snapshot:
    """A collector yielding metric families built before the scrape (prometheus_client's API is synchronous)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def job_families(stats: dict[str, int]) -> list[Metric]:
    submitted = CounterMetricFamily("corral_jobs_submitted", "Jobs accepted by the API")
    submitted.add_metric([], stats.get("submitted", 0))
    finished = CounterMetricFamily("corral_jobs_finished", "Jobs ended, by status", labels=["status"])
    for rq_status, status in (("finished", "succeeded"), ("failed", "failed"), ("canceled", "cancelled")):
        finished.add_metric([status], stats.get(f"finished:{rq_status}", 0))
    requeued = CounterMetricFamily("corral_jobs_requeued", "Jobs put back on their queue after a worker died")
    requeued.add_metric([], stats.get("requeued", 0))
    expired = CounterMetricFamily("corral_jobs_expired", "Jobs that waited past their queue deadline")
    expired.add_metric([], stats.get("expired", 0))
    return [submitted, finished, requeued, expired]


def worker_families(workers: list[dict[str, Any]]) -> list[Metric]:
    up = GaugeMetricFamily("corral_worker_up", "1 while the worker's heartbeat is fresh", labels=["worker"])
    healthy = GaugeMetricFamily(
        "corral_worker_healthy", "1 while the worker's Ollama answers", labels=["worker"]
    )
    slots = GaugeMetricFamily("corral_worker_slots", "Job slots of a worker", labels=["worker", "kind"])
    cpu = GaugeMetricFamily("corral_worker_cpu_percent", "Host CPU use", labels=["worker"])
    ram = GaugeMetricFamily("corral_worker_ram_used_bytes", "Host RAM in use", labels=["worker"])
    for w in workers:
        up.add_metric([w["id"]], 1 if w["alive"] else 0)
        if not w["alive"]:
            continue
        healthy.add_metric([w["id"]], 1 if w.get("healthy") else 0)
        slots.add_metric([w["id"], "total"], w.get("slots_total", 0))
        slots.add_metric([w["id"], "busy"], w.get("slots_busy", 0))
        cpu.add_metric([w["id"]], w.get("cpu_percent", 0))
        ram.add_metric([w["id"]], w.get("ram_used", 0))
    fleet = GaugeMetricFamily("corral_fleet_slots", "Job slots of the live workers, summed", labels=["kind"])
    live = [w for w in workers if w["alive"]]
    fleet.add_metric(["total"], sum(w.get("slots_total", 0) for w in live))
    fleet.add_metric(["busy"], sum(w.get("slots_busy", 0) for w in live))
    return [up, healthy, slots, cpu, ram, fleet]


def le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


async def timing_families(client: Any) -> list[Metric]:
    """The fleet-wide histograms and the tokens counter, read from the hashes the workers add to."""
    pipe = client.pipeline(transaction=False)
    for histogram in HISTOGRAMS:
        pipe.hgetall(histogram.key)
    pipe.hgetall(keys.TOKENS)
    *raws, tokens_raw = await pipe.execute()
    families: list[Metric] = []
    for histogram, raw in zip(HISTOGRAMS, raws, strict=True):
        family = HistogramMetricFamily(histogram.name, histogram.help, labels=list(histogram.labels))
        for series in read_series(histogram, raw):
            buckets = [(le(bound), count) for bound, count in series.buckets]
            family.add_metric(list(series.labels), buckets, series.sum)
        families.append(family)
    tokens = CounterMetricFamily("corral_tokens_generated", "Tokens generated (eval_count)", labels=["model"])
    for model, count in sorted(tokens_raw.items()):
        tokens.add_metric([model.decode()], int(count))
    return [*families, tokens]


@router.get("/metrics", response_class=Response)
async def metrics(client: RedisDep, settings: SettingsDep) -> Response:
    """Queue depth per model, jobs by outcome, re-queues, live workers and their slots and load, latency
    histograms (queue wait, time to first token, duration), generation speed and tokens."""
    stats = {k.decode(): int(v) for k, v in (await client.hgetall(keys.STATS)).items()}
    depth = GaugeMetricFamily("corral_queue_depth", "Jobs waiting in a model's queue", labels=["model"])
    for model, n in (await queue_depths(client)).items():
        depth.add_metric([model], n)
    workers = await list_workers(client, settings.heartbeat_ttl)
    registry = CollectorRegistry(auto_describe=False)
    families = [depth, *job_families(stats), *worker_families(workers), *await timing_families(client)]
    registry.register(Snapshot(families))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
