"""Fixtures of the store tests: a ``BlockingStore`` on the test's own Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corral.cli.embedded_redis import RedisServer

from .blocking import LIMITS, BlockingStore


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[BlockingStore]:
    blocking = BlockingStore(redis_server.url, LIMITS)
    yield blocking
    blocking.close()
