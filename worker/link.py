"""The direct link, the worker's end: one connection per API process whose jobs this worker runs, over which it
writes their chunk events (common/link.py).

``writer(channel)`` answers at once, from synchronous code: the open link to the API behind a job's ``reply_to``,
or None, in which case the events go through Redis only and a connection is made in the background (the API's
registration read from Redis, the greeting answered) for the jobs after. A refused or failed attempt is not
retried for ``RETRY_AFTER`` seconds; a link whose peer closes it is forgotten and made again when next needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from corral.common import keys, link
from corral.common.connections import TRANSIENT
from corral.common.jobs import PoppedJob
from corral.common.tasks import cancel_and_wait

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 2.0
RETRY_AFTER = 5.0
MAX_BUFFERED = 1 << 20  # bytes waiting to be sent on a link: beyond it a link is too slow, Redis carries on


def usable(writer: asyncio.StreamWriter) -> bool:
    """Whether a link takes a line now: open, and not too far behind."""
    return not writer.is_closing() and writer.transport.get_write_buffer_size() < MAX_BUFFERED


class Links:
    def __init__(self, client: Any, enabled: bool = True) -> None:
        self.client = client
        self.enabled = enabled
        self._open: dict[str, asyncio.StreamWriter] = {}
        self._making: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, float] = {}  # channel -> monotonic time of its last failed attempt
        self._watches: set[asyncio.Task[None]] = set()
        self.on_line: Callable[[bytes], None] | None = None  # a line from an API: a job sent ahead (Control)

    def writer(self, channel: str) -> asyncio.StreamWriter | None:
        """The open link for ``channel``, or None (one is made in the background, unless it failed lately)."""
        if not self.enabled or not channel:
            return None
        writer = self._open.get(channel)
        if writer is not None:
            if not writer.is_closing():
                return writer if usable(writer) else None  # (slow: skipped until it drains)
            del self._open[channel]
        if (
            channel not in self._making
            and time.monotonic() - self._failed.get(channel, -RETRY_AFTER) >= RETRY_AFTER
        ):
            self._making[channel] = asyncio.create_task(self._make(channel), name="link-connect")
        return None

    async def _make(self, channel: str) -> None:
        try:
            writer = await self._connect(channel)
        except (*TRANSIENT, OSError, TimeoutError, ValueError) as exc:
            self._failed[channel] = time.monotonic()
            log.debug("no direct link to %s: %s", channel, exc)
            return
        finally:
            self._making.pop(channel, None)
        self._failed.pop(channel, None)
        self._open[channel] = writer

    async def _connect(self, channel: str) -> asyncio.StreamWriter:
        found = link.parse_registration(await self.client.get(keys.link_key(channel)))
        if found is None:
            raise ValueError("the API has no direct link registered")
        host, port, token = found
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port, limit=2 * link.MAX_LINE)
            try:
                writer.write(link.greeting(channel, token))
                if await reader.readline() != link.ACCEPTED:
                    raise ValueError(f"{host}:{port} refused the greeting")
            except BaseException:
                writer.close()
                raise
        watch = asyncio.create_task(self._watch(channel, reader, writer), name="link-watch")
        self._watches.add(watch)
        watch.add_done_callback(self._watches.discard)
        return writer

    async def _watch(self, channel: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The API's lines (jobs sent ahead) until the link closes."""
        with contextlib.suppress(OSError, ValueError):  # (ValueError: a line over the reader's limit)
            while line := await reader.readline():
                if self.on_line is not None:
                    self.on_line(line)
        writer.close()
        if self._open.get(channel) is writer:
            del self._open[channel]

    def announce(self, line: bytes) -> None:
        """Write ``line`` (a park line) on every open link."""
        for writer in self._open.values():
            if usable(writer):
                writer.write(line)

    async def aclose(self) -> None:
        await cancel_and_wait([*self._making.values(), *self._watches])
        for writer in list(self._open.values()):
            writer.close()
        self._open.clear()


class Direct:
    """One job's chunk events over the link to the API that follows it, numbered as the emit script numbers them:
    the job's ``started`` event is ``start_seq``, nothing else writes events while it runs (a re-queue fences the
    worker off; the API then takes Redis' copy, ``corral.api.follow.Order``)."""

    def __init__(self, links: Links, job: PoppedJob) -> None:
        self.links = links
        self.job = job
        self.channel = str(job.kwargs.get("reply_to") or "")
        self.seq = job.start_seq + 1 if job.start_seq >= 0 else -1

    def send(self, body: str, written: bool) -> None:
        """Send the next chunk's event (``body`` as the emit script gets it) when its emit was ``written`` to Redis
        just before, in the same step (not batched behind a send in flight): a worker killed at any point leaves the
        API no event the record lacks. (The link line first was faster, but the line woke the API, which could
        take the core before the emit was written: a worker killed then left a chunk the record lacked, and the
        reader two events with one seq, a chunk and the retry.) Nothing when no link is open, or for a job sent
        ahead of its hand until the hand comes (it may be another worker's)."""
        if self.seq < 0:
            return
        seq, self.seq = self.seq, self.seq + 1
        if not written or not self.job.confirmed:
            return
        writer = self.links.writer(self.channel)
        if writer is not None:
            writer.write(link.event_line(self.job.id, seq, self.job.attempt_arg, body))
