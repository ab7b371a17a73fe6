"""Fixtures of the worker's scheduling tests: a ``BlockingStore`` on the test's own Redis, with model ``M`` served
(a live holder in its index, so enqueues are accepted without a worker process)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from corral.cli.embedded_redis import RedisServer
from corral.common import keys
from corral.common.jobs import Limits

from ..common.blocking import BlockingStore

M = "m:latest"
LIMITS = Limits(events_maxlen=1000, events_ttl_ms=60_000, result_ttl=60, job_timeout=30, max_retries=2,
                warm_ttl=60, priority_aging=30)  # fmt: skip


@pytest.fixture
def store(r: redis.Redis, redis_server: RedisServer) -> Iterator[BlockingStore]:
    r.zadd(keys.model_workers_key(M), {"w": time.time() + 60})
    blocking = BlockingStore(redis_server.url, LIMITS)
    yield blocking
    blocking.close()
