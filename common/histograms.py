"""Fleet-wide latency histograms kept in Redis, so that every API replica's ``/metrics`` shows the same numbers.

A worker records what it measured of a job when the job ends, in one script call: per histogram one ``HINCRBY``
on the bucket the value falls in and one ``HINCRBYFLOAT`` on the sum, in the hash ``corral:hist:<name>``.
Fields are ``<label values>|<bound>`` (a bucket's own count, not cumulative) and ``<label values>|sum``; label
values are joined by ``|`` (a model name never holds one). Rendering adds the buckets up into Prometheus'
cumulative form.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from . import keys

INF = "+Inf"


@dataclass(frozen=True)
class Histogram:
    """A histogram's name (as Prometheus shows it), help text, label names and bucket upper bounds."""

    name: str
    help: str
    labels: tuple[str, ...]
    bounds: tuple[float, ...]

    @property
    def key(self) -> str:
        return keys.histogram_key(self.name)

    def bucket(self, value: float) -> str:
        """The field suffix of the first bucket holding ``value``."""
        index = bisect.bisect_left(self.bounds, value)
        return INF if index == len(self.bounds) else f"{self.bounds[index]:g}"


QUEUE_WAIT = Histogram(
    "corral_queue_wait_seconds",
    "Time a job waited in its queue before a worker took it (per attempt that ended)",
    ("model",),
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "corral_time_to_first_token_seconds",
    "Time from a worker taking a job to its first token (model load included)",
    ("model",),
    (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
JOB_DURATION = Histogram(
    "corral_job_duration_seconds",
    "Time from a worker taking a job to its end, by outcome",
    ("model", "status"),
    (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
TOKENS_PER_SECOND = Histogram(
    "corral_tokens_per_second",
    "Generation speed of a finished job (Ollama's eval_count / eval_duration)",
    ("model",),
    (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000),
)
HISTOGRAMS = (QUEUE_WAIT, TIME_TO_FIRST_TOKEN, JOB_DURATION, TOKENS_PER_SECOND)


@dataclass(frozen=True)
class JobTiming:
    """What a worker measured of one job attempt that ended."""

    model: str
    status: str  # succeeded, failed or cancelled
    duration: float
    queue_wait: float | None = None
    first_token: float | None = None
    eval_count: int | None = None
    eval_duration_ns: int | None = None


Increment = tuple[str, str, int | float]  # key, field, amount


def observe(histogram: Histogram, labels: tuple[str, ...], value: float) -> list[Increment]:
    prefix = "|".join(labels) + "|"
    return [(histogram.key, prefix + histogram.bucket(value), 1), (histogram.key, prefix + "sum", value)]


def timing_increments(timing: JobTiming) -> list[Increment]:
    """The Redis increments recording one job's timing (pure; the script that finishes the job applies them)."""
    model = (timing.model,)
    out = observe(JOB_DURATION, (timing.model, timing.status), max(timing.duration, 0.0))
    if timing.queue_wait is not None:
        out += observe(QUEUE_WAIT, model, max(timing.queue_wait, 0.0))
    if timing.first_token is not None:
        out += observe(TIME_TO_FIRST_TOKEN, model, max(timing.first_token, 0.0))
    if timing.eval_count and timing.eval_duration_ns:
        out += observe(TOKENS_PER_SECOND, model, timing.eval_count / (timing.eval_duration_ns / 1e9))
    if timing.eval_count:
        out.append((keys.TOKENS, timing.model, int(timing.eval_count)))
    return out


def record_arguments(increments: list[Increment]) -> tuple[list[str], list[str | int]]:
    """Increments as script arguments: one hash key each, and a field and an amount each (``record`` in
    common/lua/lib.lua, which the script that finishes a job runs: the timing is recorded whole or not at all, with
    the job's end)."""
    args: list[str | int] = []
    for _key, field, amount in increments:
        args += [field, repr(float(amount)) if isinstance(amount, float) else amount]
    return [key for key, _field, _amount in increments], args


@dataclass(frozen=True)
class Series:
    """One labelled series of a histogram, cumulative as Prometheus wants it."""

    labels: tuple[str, ...]
    buckets: list[tuple[float, int]]  # (upper bound, cumulative count); the last bound is +inf
    sum: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]


def read_series(histogram: Histogram, raw: dict[Any, Any]) -> list[Series]:
    """An HGETALL of a histogram's hash → its series, sorted by labels. Fields that do not parse are ignored."""
    counts: dict[tuple[str, ...], dict[str, int]] = {}
    sums: dict[tuple[str, ...], float] = {}
    for raw_field, raw_value in raw.items():
        field = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
        *names, slot = field.split("|")
        if len(names) != len(histogram.labels):
            continue
        if slot == "sum":
            sums[tuple(names)] = float(raw_value)
        else:
            counts.setdefault(tuple(names), {})[slot] = int(raw_value)
    series = []
    for labels, by_slot in sorted(counts.items()):
        running, buckets = 0, []
        for bound in (*histogram.bounds, float("inf")):
            running += by_slot.get(INF if bound == float("inf") else f"{bound:g}", 0)
            buckets.append((bound, running))
        series.append(Series(labels, buckets, sums.get(labels, 0.0)))
    return series
