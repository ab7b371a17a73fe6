"""The async job store driven from synchronous tests: each call runs to its end on an event loop of its own thread
(so a test may call it from inside a coroutine as well)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from typing import Any

import redis.asyncio as aioredis

from corral.common.jobs import Limits
from corral.common.store import AsyncJobStore

# the limits of the store tests: a roomy events stream, short TTLs, two retries
LIMITS = Limits(events_maxlen=1000, events_ttl_ms=60_000, result_ttl=60, job_timeout=30, max_retries=2)


class BlockingStore:
    """``AsyncJobStore``'s methods, called and waited for: ``BlockingStore(url, limits).pop(...)``."""

    def __init__(self, url: str, limits: Limits) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="blocking-store", daemon=True)
        self._thread.start()
        self.store: AsyncJobStore = self._wait(self._open(url, limits))
        self.limits = limits

    @staticmethod
    async def _open(url: str, limits: Limits) -> AsyncJobStore:
        return AsyncJobStore(aioredis.Redis.from_url(url), limits)

    def _wait(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        if not inspect.iscoroutinefunction(method):
            return method
        return lambda *args, **kwargs: self._wait(method(*args, **kwargs))

    def close(self) -> None:
        self._wait(self.store.redis.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
