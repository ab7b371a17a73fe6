"""Subscribers: the lean one (``fastredis.FastPubSub``) where it takes the URL, redis-py's PubSub behind the same
interface for the rest (TLS, URL options)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from .connections import TRANSIENT
from .fastredis import FastPubSub, takes_url
from .tasks import cancel_and_wait


class RedisPyPubSub:
    """The same interface over redis-py's PubSub, for URLs FastPubSub does not take (TLS, URL options)."""

    def __init__(self, client: Any, on_message: Callable[[dict[str, Any]], None]) -> None:
        self.client = client
        self.on_message = on_message
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._pubsub = self.client.pubsub()
        await self._pubsub.connect()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                if not self._pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                message = await self._pubsub.get_message(timeout=1.0)
                if message:
                    self.on_message(message)
        except (RedisConnectionError, OSError):
            raise
        except Exception as exc:  # whatever broke the subscriber, its owner reconnects
            raise RedisConnectionError(f"pub/sub failed: {exc}") from exc

    async def subscribe(self, *channels: str) -> None:
        if channels:
            await self._pubsub.subscribe(*channels)

    async def unsubscribe(self, *channels: str) -> None:
        if channels:
            await self._pubsub.unsubscribe(*channels)

    async def wait_closed(self) -> None:
        assert self._task is not None
        await asyncio.shield(self._task)  # it only ends by raising: the connection was lost

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()


PubSubConnection = FastPubSub | RedisPyPubSub


def pubsub_connection(
    url: str, client: Any, on_message: Callable[[dict[str, Any]], None]
) -> PubSubConnection:
    """A subscriber: the lean one for plain ``redis://`` and ``unix://`` URLs, redis-py's (with ``client``'s
    options) else."""
    return FastPubSub(url, on_message) if takes_url(url) else RedisPyPubSub(client, on_message)


async def resubscribing(
    redis_url: str,
    client: Any,
    on_message: Callable[[dict[str, Any]], None],
    session: Callable[[PubSubConnection], Awaitable[None]],
) -> None:
    """Run ``session`` on a new subscriber connection, and again on a new one after each lost connection (half a
    second apart), until cancelled."""
    while True:
        pubsub = pubsub_connection(redis_url, client, on_message)
        try:
            await pubsub.connect()
            await session(pubsub)
        except asyncio.CancelledError:
            await pubsub.aclose()
            raise
        except (*TRANSIENT, OSError):
            pass
        await pubsub.aclose()
        await asyncio.sleep(0.5)


__all__ = ["PubSubConnection", "RedisPyPubSub", "pubsub_connection", "resubscribing"]
