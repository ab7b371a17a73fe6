"""Fleet-wide histograms: bucket choice, the increments of one job, and reading a hash back cumulatively."""

from __future__ import annotations

from typing import Any

import pytest

from corral.common.histograms import (
    JOB_DURATION,
    QUEUE_WAIT,
    TIME_TO_FIRST_TOKEN,
    TOKENS_PER_SECOND,
    JobTiming,
    read_series,
    record_arguments,
    timing_increments,
)
from corral.common.jobs import queue_wait, rq_now, unix_time

pytestmark = pytest.mark.unit


def test_a_value_goes_to_the_first_bucket_that_holds_it() -> None:
    assert QUEUE_WAIT.bucket(0.0) == "0.005"
    assert QUEUE_WAIT.bucket(0.005) == "0.005"  # le: upper bounds are inclusive
    assert QUEUE_WAIT.bucket(0.0051) == "0.01"
    assert QUEUE_WAIT.bucket(600) == "600"
    assert QUEUE_WAIT.bucket(601) == "+Inf"


def apply(hashes: dict[str, dict[str, Any]], script_keys: list[str], args: list[Any]) -> None:
    """What FINISH's timing record does, in Python (the integration tests run the script itself)."""
    for i, key in enumerate(script_keys):
        field, amount = args[2 * i], args[2 * i + 1]
        table = hashes.setdefault(key, {})
        table[field] = table.get(field, 0) + (float(amount) if field.endswith("|sum") else int(amount))


def test_one_job_recorded_and_read_back() -> None:
    hashes: dict[str, dict[str, Any]] = {}
    timings = [
        JobTiming("llama3:latest", "succeeded", 1.5, queue_wait=0.02, first_token=0.3, eval_count=50,
                  eval_duration_ns=1_000_000_000),
        JobTiming("llama3:latest", "succeeded", 0.07, queue_wait=700.0),
        JobTiming("llama3:latest", "failed", 0.2),
    ]  # fmt: skip
    for timing in timings:
        apply(hashes, *record_arguments(timing_increments(timing)))
    durations = read_series(JOB_DURATION, hashes[JOB_DURATION.key])
    assert [s.labels for s in durations] == [("llama3:latest", "failed"), ("llama3:latest", "succeeded")]
    ok = durations[1]
    assert ok.count == 2 and ok.sum == pytest.approx(1.57)
    assert dict(ok.buckets)[0.1] == 1 and dict(ok.buckets)[2.5] == 2  # cumulative
    waits = read_series(QUEUE_WAIT, hashes[QUEUE_WAIT.key])[0]
    assert waits.count == 2 and dict(waits.buckets)[600] == 1  # 700 s is only in +Inf
    assert read_series(TIME_TO_FIRST_TOKEN, hashes[TIME_TO_FIRST_TOKEN.key])[0].count == 1
    speed = read_series(TOKENS_PER_SECOND, hashes[TOKENS_PER_SECOND.key])[0]
    assert speed.count == 1 and speed.sum == 50.0
    assert hashes["corral:tokens"] == {"llama3:latest": 50}


def test_record_arguments_pass_sums_as_floats_and_counts_as_integers() -> None:
    script_keys, args = record_arguments(timing_increments(JobTiming("m:latest", "failed", 1e-05)))
    assert script_keys == [JOB_DURATION.key, JOB_DURATION.key]
    assert args == ["m:latest|failed|0.05", 1, "m:latest|failed|sum", "1e-05"]


def test_fields_that_do_not_parse_are_ignored() -> None:
    raw = {b"a|b|c|1": b"3", b"llama3:latest|sum": b"2.5", b"llama3:latest|0.5": b"2"}
    series = read_series(TIME_TO_FIRST_TOKEN, raw)
    assert len(series) == 1 and series[0].count == 2 and series[0].sum == 2.5


def test_rq_timestamps() -> None:
    assert unix_time("2024-05-01T12:00:00.000000Z") == 1714564800.0
    assert unix_time("nonsense") is None and unix_time(None) is None
    wait = queue_wait(rq_now())
    assert wait is not None and 0 <= wait < 5
    assert queue_wait("") is None
