"""The chunk bus, reader side: one pub/sub connection per process fans job events out to every reader.

A reader subscribes to its job's channel (``subscribe``; ``corral.api.follow`` puts the events in order). A job
this process submits and follows at once (a streamed submit, the drop-in routes: ``submit_followed``) needs no
subscription: the hub ``expect``s it before the enqueue, and the job carries the hub's own channel as ``reply_to``,
which every later event of the job is published on as well (the enqueue returns the events it writes itself,
queued and, when a parked worker took the job at once, started). The hub has been subscribed to that channel since
it connected, so every event arrives there, and a follow costs no Redis command at all. The worker running such a
job also sends its chunk events over the direct link (``direct``, ``corral.api.link``), ahead of Redis.

An event published once reaches every reader of its job here as one ``Event``: parsed once by the hub and written
once as a Server-Sent Event (``Event.sse``), however many readers the job has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from corral.common import jsonfast, keys
from corral.common.connections import TRANSIENT
from corral.common.jobs import Idempotency, PreparedJob, new_job_id
from corral.common.pubsub import PubSubConnection, pubsub_connection
from corral.common.schemas import JobRequest
from corral.common.store import AsyncJobStore
from corral.common.tasks import cancel_and_wait

from .memory import StreamGauge, malloc_trim, release_memory_of

log = logging.getLogger(__name__)
RESYNC = b"\x00resync"  # in a reader's mailbox: re-read the replay stream


class Event(dict[str, Any]):
    """A job event as every reader of the job in this process gets it: parsed once, and its Server-Sent Event
    encoded by the first reader that writes it (``sse``). Readers never change it. ``raw``: its bytes as sent;
    ``direct``: it came over the direct link, not from Redis (``corral.api.follow.Order``)."""

    __slots__ = ("direct", "raw", "sse")

    def __init__(self, raw: bytes, direct: bool = False) -> None:
        super().__init__(jsonfast.loads(raw))
        self.raw = raw
        self.direct = direct
        self.sse: bytes | None = None


class Mailbox:
    """The raw events for one reader: what it uses of ``asyncio.Queue`` (``put_nowait``, ``get``, ``empty``,
    ``get_nowait``, ``qsize``), a fraction of the work per event and per reader (no task counting, no putter queue, no
    event object). One reader at a time awaits ``get``. It holds ``Event``s and ``RESYNC``."""

    __slots__ = ("__weakref__", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class ChunkHub:
    """One pub/sub connection, dynamically (un)subscribed, dispatching messages to per-reader queues."""

    def __init__(
        self, client: aioredis.Redis, confirm_timeout: float = 5.0, url: str = "", trim_memory: bool = False
    ) -> None:
        self.client = client
        # the readers following a job here, and giving their memory back after a burst (api/memory.py)
        self.streams = StreamGauge(release_memory_of(malloc_trim()) if trim_memory else None)
        self.url = url
        self.confirm_timeout = confirm_timeout
        self._subs: dict[str, set[Mailbox]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._pubsub: PubSubConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._own = keys.chunks_channel(f"hub-{os.getpid()}-{id(self)}")
        self._resync: set[str] = set()
        self.connected = asyncio.Event()
        # jobs submitted here, by id: the queue their reader takes events from (gone with the reader)
        self._expected: weakref.WeakValueDictionary[str, Mailbox] = weakref.WeakValueDictionary()
        self._own_ready = False  # the subscription to the own channel is confirmed
        self.direct_events = 0  # events taken from the direct link (``direct``)
        # a job's early hand to a parked worker over the direct link (``corral.api.link.LinkServer.hand_early``)
        self.hand_early: Callable[[PreparedJob], str] | None = None

    @property
    def reply_channel(self) -> str:
        """The channel a job submitted here names as ``reply_to``."""
        return self._own

    def expect(self, job_id: str) -> Mailbox | None:
        """Before enqueueing a job with ``reply_to=reply_channel``: the queue its events will arrive in.
        None when the hub is not subscribed now (the reader then subscribes to the job's channel)."""
        if not self._own_ready:
            return None
        queue = Mailbox()
        self._expected[job_id] = queue
        return queue

    def forget(self, job_id: str) -> None:
        self._expected.pop(job_id, None)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chunk-hub")

    async def stop(self) -> None:
        await self.streams.aclose()
        if self._task:
            await cancel_and_wait([self._task])
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    @property
    def channels(self) -> int:
        return len(self._subs)

    async def _connect(self) -> None:
        pubsub = pubsub_connection(self.url, self.client, self._dispatch)
        await pubsub.connect()
        self._pubsub = pubsub
        self._resync = set(self._subs)
        self._own_ready = False
        for event in self._confirmed.values():
            event.clear()
        await pubsub.subscribe(self._own, *self._subs)
        self.connected.set()

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                await self._connect()
                delay = 0.05
                assert self._pubsub is not None
                await self._pubsub.wait_closed()
                raise RedisConnectionError("pub/sub connection closed")
            except asyncio.CancelledError:
                raise
            except (*TRANSIENT, OSError) as exc:
                if self.connected.is_set():
                    log.warning("chunk bus lost redis (%s); reconnecting", exc)
                self.connected.clear()
                if self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()
                self._pubsub = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        if channel == self._own:
            self._dispatch_own(message)
            return
        if message["type"] == "subscribe":
            event = self._confirmed.get(channel)
            if event is not None:
                if event.is_set():
                    return
                event.set()
            if channel in self._resync:
                # after a reconnect: readers re-read the stream for what they missed meanwhile
                self._resync.discard(channel)
                for queue in self._subs.get(channel, ()):
                    queue.put_nowait(RESYNC)
            return
        if message["type"] == "message":
            listeners = self._subs.get(channel)
            if listeners and (shared := parsed(message["data"])) is not None:
                for queue in listeners:  # one event object for every reader of the job
                    queue.put_nowait(shared)

    def _reader_of(self, raw: bytes) -> Mailbox | None:
        """The queue of the reader following, here, the job of an event's bytes (``{"job":"<32 hex>",...``)."""
        return self._expected.get(raw[8:40].decode(errors="replace"))

    def direct(self, raw: bytes) -> None:
        """An event line from the direct link (``corral.api.link``): to the reader of its job, if it is followed
        here; anything else is dropped (its copy comes by Redis)."""
        reader = self._reader_of(raw)
        if reader is None:
            return
        try:
            event = Event(raw, direct=True)
        except ValueError:
            return
        self.direct_events += 1
        reader.put_nowait(event)

    def _dispatch_own(self, message: dict[str, Any]) -> None:
        if message["type"] == "subscribe":
            self._own_ready = True
            for queue in list(self._expected.values()):  # after a reconnect: re-read what was missed
                queue.put_nowait(RESYNC)
        elif message["type"] == "message":
            data = message["data"]
            reader = self._reader_of(data)
            if reader is not None and (event := parsed(data)) is not None:
                reader.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[Mailbox]:
        """A queue of the raw events of one job, live from the moment this returns."""
        channel = keys.chunks_channel(job_id)
        queue = Mailbox()
        listeners = self._subs.setdefault(channel, set())
        listeners.add(queue)
        # inside the try: a reader that leaves during the SUBSCRIBE (a client gone, a cancel) leaves no state
        try:
            if channel not in self._confirmed:
                self._confirmed[channel] = asyncio.Event()
                with contextlib.suppress(*TRANSIENT, AttributeError):
                    await self._pubsub.subscribe(channel)  # type: ignore[union-attr]
            # a reader still works without the confirmation: it polls the stream (see follow_batches)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.confirm_timeout):
                    await self._confirmed[channel].wait()
            yield queue
        finally:
            listeners.discard(queue)
            if not listeners:
                self._subs.pop(channel, None)
                self._confirmed.pop(channel, None)
                with contextlib.suppress(*TRANSIENT, AttributeError):
                    await self._pubsub.unsubscribe(channel)  # type: ignore[union-attr]


def parsed(raw: bytes) -> Event | None:
    """The event of a pub/sub message; None (logged) for one that is not JSON: its reader finds the gap it leaves
    and reads the event from the replay stream."""
    try:
        return Event(raw)
    except ValueError:
        log.warning("chunk bus: a message that is not an event: %.80r", raw)
        return None


@dataclass
class Followed:
    """A job submitted here to be followed at once: its id and the hub's queue for its events (None: the reader
    subscribes to the job's channel)."""

    id: str
    expected: Mailbox | None = None


async def submit_followed(
    store: AsyncJobStore,
    hub: ChunkHub,
    request: JobRequest,
    owner: str,
    max_jobs: int,
    idempotency: Idempotency | None = None,
    link_first: bool = False,
) -> Followed:
    """Enqueue a job this process follows at once: its events come to the hub's own channel (``reply_to``) when
    the hub is subscribed to it now (``ChunkHub.expect``). A replayed ``idempotency`` key: the earlier job,
    followed through its own channel. ``link_first``: this reader cannot resume elsewhere (a drop-in route's), so
    the worker may send it each chunk before the chunk's emit (worker/link.py)."""
    job_id = new_job_id()
    expected = hub.expect(job_id)
    if expected is None:
        return Followed((await store.enqueue(request, job_id, owner, max_jobs, idempotency)).id)
    try:
        followed, written = await store.enqueue_followed(
            request, job_id, hub.reply_channel, owner, max_jobs, idempotency, hub.hand_early, link_first
        )
    except BaseException:
        hub.forget(job_id)
        raise
    if followed != job_id:
        hub.forget(job_id)
        return Followed(followed)
    for raw in written:  # the enqueue's own events (queued, started) come in its reply, not on the channel
        expected.put_nowait(Event(raw))
    return Followed(job_id, expected)
