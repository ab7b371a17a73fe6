"""Redis connections from one factory: timeouts, keepalive and a bounded retry on every command."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .sentinel import async_master, is_sentinel_url, sync_master

log = logging.getLogger(__name__)
TRANSIENT = (RedisConnectionError, RedisTimeoutError, BusyLoadingError)


def _options(url: str, name: str) -> dict[str, object]:
    options: dict[str, object] = {
        "socket_connect_timeout": 2.0,
        "health_check_interval": 15,
        "retry_on_error": list(TRANSIENT),
        "client_name": name,
    }
    # TCP keepalive: redis-py's unix socket connections take no such option
    if urlsplit(url).scheme != "unix":
        options["socket_keepalive"] = True
    return options


def sync_redis(url: str, name: str = "corral") -> redis.Redis:
    """A sync client; a command that hits a dropped connection is retried 3 times with backoff."""
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), 3)
    if is_sentinel_url(url):  # the primary the sentinels name, asked again on every new connection
        return sync_master(url, {"retry": retry, **_options(url, name)})
    return redis.Redis.from_url(url, retry=retry, **_options(url, name))


def async_redis(url: str, name: str = "corral", max_connections: int = 64) -> aioredis.Redis:
    from redis.asyncio.retry import Retry as AsyncRetry

    retry = AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), 3)
    if is_sentinel_url(url):
        return async_master(url, {"retry": retry, **_options(url, name)}, max_connections)
    # a blocking pool: a burst of requests waits for a free connection instead of failing
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=10, retry=retry, **_options(url, name)
    )
    return aioredis.Redis(connection_pool=pool)


def wait_for_redis(client: redis.Redis, timeout: float, what: str = "redis") -> None:
    """Ping until Redis answers, logging each failed attempt; raise the last error after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    attempt = 0
    while True:
        attempt += 1
        try:
            client.ping()
            return
        except TRANSIENT as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s not reachable (attempt %d): %s; retrying in %.1fs", what, attempt, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
