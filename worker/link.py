"""The direct link, the worker's end: one connection per API process whose jobs this worker runs, over which it
writes their chunk events (common/link.py).

``writer(channel)`` answers at once, from synchronous code: the open link to the API behind a job's ``reply_to``,
or None, in which case the events go through Redis only and a connection is made in the background (the API's
registration read from Redis, the greeting answered) for the jobs after. A refused or failed attempt is not
retried for ``RETRY_AFTER`` seconds; a link whose peer closes it is forgotten and made again when next needed.
A link to an API in this same process (``corral api --worker``) is an in-memory pair (common/memlink.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from corral.common import keys, link, memlink
from corral.common.connections import TRANSIENT
from corral.common.jobs import PoppedJob
from corral.common.tasks import cancel_and_wait

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 2.0
RETRY_AFTER = 5.0
MAX_BUFFERED = 1 << 20  # bytes waiting to be sent on a link: beyond it a link is too slow, Redis carries on


def usable(transport: asyncio.Transport) -> bool:
    """Whether a link takes a line now: open, and not too far behind."""
    return not transport.is_closing() and transport.get_write_buffer_size() < MAX_BUFFERED


class ApiLink(link.Lines):
    """The worker's end of one link: the greeting's answer, then the API's lines (jobs sent ahead), each handed to
    ``on_line`` from the callback that read it. Over an in-process link (common/memlink.py) a job sent ahead comes
    as it is, to ``on_job``, and has its request on its way to the engine before the API's hand returns."""

    max_line = 2 * link.MAX_LINE  # (a job sent ahead: its data, up to MAX_LINE // 2, escaped in the line)

    def __init__(
        self, on_line: Callable[[bytes], None] | None, on_job: Callable[[PoppedJob], None] | None = None
    ) -> None:
        super().__init__()
        self.on_line = on_line
        self.on_job = on_job
        self.accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.accepted.done():
            self.accepted.set_exception(ConnectionError("the API closed the link before accepting it"))

    def first_line(self, line: bytes) -> bool:
        if line != link.ACCEPTED:
            self.accepted.set_exception(ValueError("the API refused the greeting"))
            return False
        self.accepted.set_result(None)
        return True

    def line(self, line: bytes) -> None:
        if self.on_line is not None:
            self.on_line(line)

    def item_received(self, item: Any) -> None:
        if self.on_job is not None and isinstance(item, PoppedJob):
            self.on_job(item)


class Links:
    def __init__(self, client: Any, enabled: bool = True) -> None:
        self.client = client
        self.enabled = enabled
        self._open: dict[str, asyncio.Transport] = {}
        self._making: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, float] = {}  # channel -> monotonic time of its last failed attempt
        self.on_line: Callable[[bytes], None] | None = None  # a line from an API: a job sent ahead (Control)
        self.on_job: Callable[[PoppedJob], None] | None = None  # the same job, from an API in this process

    def writer(self, channel: str) -> asyncio.Transport | None:
        """The open link for ``channel``, or None (one is made in the background, unless it failed lately)."""
        if not self.enabled or not channel:
            return None
        transport = self._open.get(channel)
        if transport is not None:
            if not transport.is_closing():
                return transport if usable(transport) else None  # (slow: skipped until it drains)
            del self._open[channel]
        if (
            channel not in self._making
            and time.monotonic() - self._failed.get(channel, -RETRY_AFTER) >= RETRY_AFTER
        ):
            self._making[channel] = asyncio.create_task(self._make(channel), name="link-connect")
        return None

    async def _make(self, channel: str) -> None:
        try:
            transport = await self._connect(channel)
        except (*TRANSIENT, OSError, TimeoutError, ValueError) as exc:
            self._failed[channel] = time.monotonic()
            log.debug("no direct link to %s: %s", channel, exc)
            return
        finally:
            self._making.pop(channel, None)
        self._failed.pop(channel, None)
        self._open[channel] = transport

    async def _connect(self, channel: str) -> asyncio.Transport:
        found = link.parse_registration(await self.client.get(keys.link_key(channel)))
        if found is None:
            raise ValueError("the API has no direct link registered")
        host, port, token = found
        protocol = ApiLink(self.on_line, self.on_job)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            if memlink.served(channel):  # (the API runs in this process: corral api --worker)
                transport = memlink.connect(channel, protocol)
            else:
                transport, _ = await asyncio.get_running_loop().create_connection(
                    lambda: protocol, host, port
                )
            try:
                transport.write(link.greeting(channel, token))
                await protocol.accepted
            except BaseException:
                transport.close()
                raise
        return transport

    def announce(self, line: bytes) -> None:
        """Write ``line`` (a park line) on every open link."""
        for transport in self._open.values():
            if usable(transport):
                transport.write(line)

    async def aclose(self) -> None:
        await cancel_and_wait(list(self._making.values()))
        for transport in list(self._open.values()):
            transport.close()
        self._open.clear()


class Direct:
    """One job's chunk events over the link to the API that follows it, numbered as the emit script numbers them:
    the job's ``started`` event is ``start_seq``, nothing else writes events while it runs (a re-queue fences the
    worker off; the API then takes Redis' copy, ``corral.api.follow.Order``).

    ``link_first``: the job's reader cannot resume elsewhere (a drop-in route's: a restart after tokens ends its
    stream with an error), so a chunk goes on the link before its emit is written, and reaches the client before
    Redis, woken by the emit, takes a core. A worker killed between the two leaves that reader a chunk the record
    lacks; Redis' next event at that seq is then the ``retry``, which ends the reader's stream as it would have."""

    def __init__(self, links: Links, job: PoppedJob) -> None:
        self.links = links
        self.job = job
        self.channel = str(job.kwargs.get("reply_to") or "")
        self.link_first = bool(job.kwargs.get("link_first"))
        self.seq = job.start_seq + 1 if job.start_seq >= 0 else -1

    def send(self, body: str, written: bool) -> None:
        """Send the next chunk's event (``body`` as the emit script gets it) when its emit was ``written`` to Redis
        just before, in the same step (not batched behind a send in flight), or is about to be (``link_first``):
        otherwise a worker killed at any point leaves the API no event the record lacks. (The link line first is
        faster, but the line wakes the API, which can take the core before the emit is written: a worker killed
        then leaves a chunk the record lacks, and a reader that resumes elsewhere two events with one seq, a chunk
        and the retry.) Nothing when no link is open, or for a job sent ahead of its hand until the hand comes (it
        may be another worker's)."""
        if self.seq < 0:
            return
        seq, self.seq = self.seq, self.seq + 1
        if not written or not self.job.confirmed:
            return
        writer = self.links.writer(self.channel)
        if writer is not None:
            writer.write(link.event_line(self.job.id, seq, self.job.attempt_arg, body))
