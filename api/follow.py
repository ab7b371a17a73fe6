"""Following a job's events: from any ``seq`` on, in order, with no gap and no duplicate, until a terminal one.

A reader subscribes first (or takes the hub's queue of a job submitted here), then reads the replay stream for
what came before, then takes live events, filling any gap from the stream (a dropped pub/sub message, a Redis
restart) and re-reading it whenever the bus resubscribes.

A job submitted here can also send its chunk events over the direct link (common/link.py), ahead of their copy
from Redis (``Order``): a link event is taken when it is the next one; Redis' copy of it then confirms it. When
Redis' copy differs (the worker had lost the job: it was re-queued, or Redis forgot its start), the record wins:
the reader takes Redis' event at that seq and goes on from there, and link events of the attempt it contradicted (or
an earlier one) are ignored from then on: the worker that lost the job may send a few more.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from corral.common import jsonfast, keys
from corral.common.schemas import TERMINAL_EVENTS

from .bus import RESYNC, ChunkHub, Mailbox

Batch = list[dict[str, Any]]
UNCONFIRMED_KEPT = 256  # link events remembered until Redis' copy confirms them


async def read_stream(client: Any, job_id: str, after: int) -> list[dict[str, Any]]:
    """The job's events after seq ``after`` from its replay stream. ``client``: redis-py's or the lean client
    (``AsyncJobStore.scripts_client``: a reader's replay read is on the connect path of every stream), whose
    entries come as flat field lists."""
    entries = await client.execute_command("XRANGE", keys.events_key(job_id), f"{after + 2}-0", "+")
    return [jsonfast.loads(event_field(fields)) for _id, fields in entries]


def event_field(fields: dict[bytes, bytes] | list[bytes]) -> bytes:
    if isinstance(fields, dict):
        return fields[b"e"]
    return dict(zip(fields[::2], fields[1::2], strict=True))[b"e"]


class Order:
    """A reader's place in its job's events: the last seq taken, and the link events not yet confirmed."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.unconfirmed: dict[int, Any] = {}  # seq -> the link event taken, until Redis' copy confirms it
        self.stale = 0  # link events of this attempt or an earlier one are ignored: Redis contradicted one

    def take(self, items: list[Any]) -> tuple[Batch, bool]:
        """The events of ``items`` that follow in order; True when the stream must be read (a resync, a gap)."""
        events: Batch = []
        reread = False
        for event in items:
            if event is RESYNC:
                reread = True
            elif event.direct:
                if event["seq"] == self.last + 1 and event["attempt"] > self.stale:
                    self._keep(event)
                    events.append(event)
                    self.last = event["seq"]
            elif (sent := self.unconfirmed.pop(event["seq"], None)) is not None:
                if sent.raw != event.raw:  # the record wins from here on
                    self.stale = max(self.stale, sent["attempt"])
                    self.unconfirmed.clear()
                    events.append(event)
                    self.last = event["seq"]
            elif event["seq"] == self.last + 1:
                events.append(event)
                self.last = event["seq"]
            elif event["seq"] > self.last + 1:  # a message went missing: the stream has it
                reread = True
        return events, reread

    def after(self, backlog: Batch) -> Batch:
        """The events of a read of the replay stream that come after the last taken."""
        if backlog and backlog[0]["seq"] > self.last + 1:
            self.last = backlog[0]["seq"] - 1  # older events were trimmed by the stream's cap
        events = [event for event in backlog if event["seq"] > self.last]
        if events:
            self.last = events[-1]["seq"]
        return events

    def _keep(self, event: Any) -> None:
        self.unconfirmed[event["seq"]] = event
        if len(self.unconfirmed) > UNCONFIRMED_KEPT:
            del self.unconfirmed[next(iter(self.unconfirmed))]


async def follow_batches(
    client: Any,
    hub: ChunkHub,
    job_id: str,
    start: int = 0,
    idle: float = 5.0,
    expected: Mailbox | None = None,
) -> AsyncIterator[Batch | None]:
    """The events of ``job_id`` with ``seq >= start`` until a terminal one, in batches of what has arrived
    together (a reader writes each batch at once); ``None`` marks an idle tick. ``expected``: the hub's queue for
    a job submitted here (``ChunkHub.expect``), which gets every event from the first."""
    hub.streams.opened()
    try:
        if expected is not None:
            try:
                async for batch in _follow(client, job_id, start - 1, idle, expected, []):
                    yield batch
            finally:
                hub.forget(job_id)
            return
        async with hub.subscribe(job_id) as queue:
            backlog = await read_stream(client, job_id, start - 1)
            async for batch in _follow(client, job_id, start - 1, idle, queue, backlog):
                yield batch
    finally:
        hub.streams.closed()


async def _follow(
    client: Any,
    job_id: str,
    last: int,
    idle: float,
    queue: Mailbox,
    backlog: Batch,
) -> AsyncIterator[Batch | None]:
    order = Order(last)
    events = order.after(backlog)
    while True:
        for i, event in enumerate(events):
            if event["type"] in TERMINAL_EVENTS:
                yield events[: i + 1]
                return
        if events:
            yield events
        try:
            async with asyncio.timeout(idle):  # not wait_for: that wraps every wait in a new task
                raws = [await queue.get()]
        except TimeoutError:
            raws = [RESYNC]
        while not queue.empty():  # whatever else has arrived goes in the same batch
            raws.append(queue.get_nowait())
        events, reread = order.take(raws)
        if reread:
            backlog = await read_stream(client, job_id, order.last)
            if not backlog and not events:
                if not await client.execute_command("EXISTS", keys.job_key(job_id)):
                    return
                yield None
            events += order.after(backlog)
