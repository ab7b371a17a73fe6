"""A running job's writes to Redis: its chunk events pipelined in order, and retries through a Redis restart.

While one batch of chunk events is on its way to Redis the next ones pile up and go together, so a fast model
costs few round trips and a slow one waits for none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
from redis.exceptions import NoScriptError

from corral.common.fastredis import reply_of

log = logging.getLogger(__name__)
T = TypeVar("T")
FENCED, CANCEL_ASKED = -1, 1  # what an EMIT answers besides 0
REDIS_GIVE_UP = 120.0
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


class Fenced(Exception):
    """Internal control flow, never raised out of the job's run: the job is no longer this worker's (re-queued to
    another), so its run stops without writing."""


class Cancelled(Exception):
    """Internal control flow, never raised out of the job's run: the job's cancel was asked (an EMIT saw it), so
    its run ends it as cancelled."""


async def with_redis_retry(fn: Callable[[], Awaitable[T]], what: str) -> T:
    """Redis calls of a running job survive a Redis restart: retry with backoff, log once, give up late."""
    deadline = time.monotonic() + REDIS_GIVE_UP
    delay, logged = 0.1, False
    while True:
        try:
            return await fn()
        except REDIS_ERRORS as exc:
            if time.monotonic() > deadline:
                raise
            if not logged:
                log.warning("redis unavailable during %s (%s); retrying", what, exc)
                logged = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


SendNow = Callable[[tuple[str, ...]], "asyncio.Future[Any] | None"]
RETRIED = (NoScriptError, *REDIS_ERRORS)  # a send written at once that failed so goes the awaited way


class Emitter:
    """Sends a job's chunk events in order, batching what arrives while a send is in flight. With ``send_now`` a
    send that finds none in flight is written at once, before the task that awaits its answer first runs."""

    def __init__(
        self, send: Callable[[tuple[str, ...]], Awaitable[int]], send_now: SendNow | None = None
    ) -> None:
        self.send = send
        self.send_now = send_now
        self.pending: list[str] = []
        self.task: asyncio.Task[int] | None = None

    def idle(self) -> bool:
        """No send in flight: the next ``add`` goes at once. (Raises ``Fenced`` or ``Cancelled`` when the last send's
        answer said so.)"""
        if self.task is not None and self.task.done():
            check(self.task.result())
            self.task = None
        return self.task is None

    def add(self, body: str, now: bool = True) -> bool:
        """Queue ``body``'s event; True when it was written to Redis at once (no send in flight, and the lean
        client connected), so that Redis has it even if this process dies the next instant. ``now`` False: the
        send goes from a task's first step, after what the loop had ready (a reader woken by this chunk's line
        writes to its client before Redis is woken to take a core)."""
        self.pending.append(body)
        if not self.idle():
            return False
        sent = None
        if now and self.send_now is not None:
            batch = tuple(self.pending)
            future = self.send_now(batch)
            if future is not None:
                self.pending.clear()
                sent = (future, batch)
        self.task = asyncio.create_task(self._drain(sent))
        return sent is not None

    async def _drain(self, sent: tuple[asyncio.Future[Any], tuple[str, ...]] | None = None) -> int:
        if sent is not None:
            future, batch = sent
            try:
                code = int(await reply_of(future))
            except RETRIED:  # not run (NOSCRIPT) or not known to have run: the awaited send retries it
                code = await self.send(batch)
            if code != 0:
                return code
        while self.pending:
            batch = tuple(self.pending)
            self.pending.clear()
            code = await self.send(batch)
            if code != 0:
                return code
        return 0

    async def close(self) -> tuple[str, ...]:
        """Wait for the send in flight; return what is still pending (it goes with the final event)."""
        if self.task is not None:
            check(await self.task)
        rest, self.pending = tuple(self.pending), []
        return rest

    def abort(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


def check(code: int) -> None:
    if code == FENCED:
        raise Fenced
    if code == CANCEL_ASKED:
        raise Cancelled
