"""Fleet-wide histograms: bucket choice, the increments of one job, and reading a hash back cumulatively."""

from __future__ import annotations

import fakeredis
import pytest

from common.histograms import (
    JOB_DURATION,
    QUEUE_WAIT,
    TIME_TO_FIRST_TOKEN,
    TOKENS_PER_SECOND,
    JobTiming,
    add_increments,
    read_series,
    timing_increments,
)
from common.jobs import queue_wait, rq_now, unix_time

pytestmark = pytest.mark.unit


def test_a_value_goes_to_the_first_bucket_that_holds_it() -> None:
    assert QUEUE_WAIT.bucket(0.0) == "0.005"
    assert QUEUE_WAIT.bucket(0.005) == "0.005"  # le: upper bounds are inclusive
    assert QUEUE_WAIT.bucket(0.0051) == "0.01"
    assert QUEUE_WAIT.bucket(600) == "600"
    assert QUEUE_WAIT.bucket(601) == "+Inf"


def test_one_job_recorded_and_read_back() -> None:
    client = fakeredis.FakeRedis()
    timings = [
        JobTiming("llama3:latest", "succeeded", 1.5, queue_wait=0.02, first_token=0.3, eval_count=50,
                  eval_duration_ns=1_000_000_000),
        JobTiming("llama3:latest", "succeeded", 0.07, queue_wait=700.0),
        JobTiming("llama3:latest", "failed", 0.2),
    ]  # fmt: skip
    pipe = client.pipeline(transaction=False)
    for timing in timings:
        add_increments(pipe, timing_increments(timing))
    pipe.execute()
    durations = read_series(JOB_DURATION, client.hgetall(JOB_DURATION.key))
    assert [s.labels for s in durations] == [("llama3:latest", "failed"), ("llama3:latest", "succeeded")]
    ok = durations[1]
    assert ok.count == 2 and ok.sum == pytest.approx(1.57)
    assert dict(ok.buckets)[0.1] == 1 and dict(ok.buckets)[2.5] == 2  # cumulative
    waits = read_series(QUEUE_WAIT, client.hgetall(QUEUE_WAIT.key))[0]
    assert waits.count == 2 and dict(waits.buckets)[600] == 1  # 700 s is only in +Inf
    assert read_series(TIME_TO_FIRST_TOKEN, client.hgetall(TIME_TO_FIRST_TOKEN.key))[0].count == 1
    speed = read_series(TOKENS_PER_SECOND, client.hgetall(TOKENS_PER_SECOND.key))[0]
    assert speed.count == 1 and speed.sum == 50.0
    assert client.hget("corral:tokens", "llama3:latest") == b"50"


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
