"""The direct link, the API's end: a TCP listener that takes the chunk events of the jobs this process follows
straight from the workers running them (common/link.py), registered in Redis for them to find.

A connection must greet with this process' reply channel and its token within ``GREETING_TIMEOUT``; then every
event line goes to ``deliver``, which drops lines that are not events of a job followed here, and park lines say
which linked workers are parked for which models: ``hand_early`` sends one of them a job ahead of the enqueue,
which then hands the job to that worker (``prefer``) if Redis has it parked for the model still.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corral.common import keys, link, memlink
from corral.common.connections import TRANSIENT
from corral.common.jobs import PoppedJob, PreparedJob
from corral.common.tasks import cancel_and_wait

log = logging.getLogger(__name__)
GREETING_TIMEOUT = 5.0
# connections waiting to greet at once; more are closed at once (a flood of idle connections)
MAX_UNGREETED = 64
WILDCARDS = {"", "0.0.0.0", "::"}


def advertised(host: str) -> str:
    """The address workers connect to for a listener bound to ``host``: a wildcard is this host's name's."""
    if host not in WILDCARDS:
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


@dataclass
class Parked:
    """A linked worker's last park line."""

    link: LinkProtocol
    free: int
    warm: set[str]  # the models it is parked for that it has loaded
    at: float = field(default_factory=time.monotonic)


class LinkServer:
    """Listens on ``host`` (an ephemeral port) and keeps ``keys.link_key(channel)`` pointing at it."""

    def __init__(self, client: Any, channel: str, host: str, deliver: Callable[[bytes], None]) -> None:
        self.client = client
        self.channel = channel
        self.host = host
        self.deliver = deliver
        self.token = secrets.token_hex(16)
        self.port = 0
        self.registration = ""  # the value of keys.link_key(channel), once started
        self.links: set[LinkProtocol] = set()
        self.parked: dict[str, Parked] = {}  # worker id -> its last park line
        self.handed_early = 0  # jobs sent to a parked worker ahead of their enqueue
        self._server: asyncio.Server | None = None
        self._renew: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: LinkProtocol(self), self.host or None, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.registration = link.registration(advertised(self.host), self.port, self.token)
        memlink.serve(self.channel, lambda: LinkProtocol(self))  # (a worker in this process: no TCP)
        await self._register()
        self._renew = asyncio.create_task(self._keep_registered(), name="link-registration")

    async def _register(self) -> None:
        try:
            await self.client.set(keys.link_key(self.channel), self.registration, ex=link.TTL)
        except (*TRANSIENT, OSError) as exc:  # workers use Redis meanwhile; the next renewal retries
            log.debug("link registration not renewed: %s", exc)

    async def _keep_registered(self) -> None:
        while True:
            await asyncio.sleep(link.RENEW)
            await self._register()

    def noted(self, protocol: LinkProtocol, line: bytes) -> None:
        """A park line from a linked worker."""
        parsed = link.parse_park(line)
        if parsed is None:
            return
        worker, free, warm = parsed
        if free <= 0 or not warm:
            self.parked.pop(worker, None)
        else:
            self.parked[worker] = Parked(protocol, free, warm)

    def hand_early(self, job: PreparedJob) -> str:
        """Send ``job`` to the linked worker with the most free slots parked with its model loaded, ahead of its
        enqueue: the id of that worker, for the enqueue to prefer, or '' (none parked here). Never one without the
        model: its early run would load it, and the enqueue may give the job to a worker that has it."""
        now = time.monotonic()
        fresh = [
            (p.free, w)
            for w, p in self.parked.items()
            if now - p.at < link.PARK_FRESH and job.model in p.warm
        ]
        best = max(fresh, default=None)
        if best is None:
            return ""
        park = self.parked[best[1]]
        transport = park.link.transport
        assert transport is not None
        # (a worker in this process is handed the job as it is, not its line: common/memlink.py)
        hand = transport.hand if isinstance(transport, memlink.MemoryTransport) else None
        if hand is None and len(job.mapping["data"]) > link.MAX_LINE // 2:  # (a long prompt: the usual way)
            return ""
        park.free -= 1  # (the next job of a burst goes elsewhere unless the worker says it is free again)
        if park.free <= 0:
            del self.parked[best[1]]
        if hand is not None:
            hand(sent_ahead(job))
        else:
            transport.write(link.dispatch_line(pop_answer(job)))
        self.handed_early += 1
        return best[1]

    async def stop(self) -> None:
        if self._renew is not None:
            await cancel_and_wait([self._renew])
        if self._server is None:
            return  # (never started: CORRAL_DIRECT_LINK off)
        memlink.unserve(self.channel)
        self._server.close()
        for protocol in list(self.links):
            protocol.close()
        with contextlib.suppress(*TRANSIENT, OSError):
            await self.client.delete(keys.link_key(self.channel))


def pop_answer(job: PreparedJob) -> list[Any]:
    """``job`` as POP would answer with it: the job a dispatch line sends ahead, its first attempt, whose
    ``started`` event is seq 1."""
    mapping = job.mapping
    return [job.id, "1", mapping["data"], mapping["run_timeout"], job.model, mapping["enqueued_at"], 1]


def sent_ahead(job: PreparedJob) -> PoppedJob:
    """What a worker makes of ``pop_answer(job)`` (``decode_popped``), for a worker in this process, which is handed
    it as it is."""
    func_name, _instance, _args, kwargs = job.call
    return PoppedJob(id=job.id, attempt=1, model=job.model, timeout=float(job.mapping["run_timeout"]),
                     func_name=func_name, kwargs=kwargs, queue_wait=max(time.time() - job.created, 0.0),
                     start_seq=1)  # fmt: skip


class LinkProtocol(link.Lines):
    """One worker's link: its greeting, then event and park lines from it, and the jobs sent ahead to it."""

    def __init__(self, server: LinkServer) -> None:
        super().__init__()
        self.server = server
        self.timer: asyncio.TimerHandle | None = None

    @property
    def greeted(self) -> bool:
        return self.opened

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if sum(not p.greeted for p in self.server.links) >= MAX_UNGREETED:
            self.close()
            return
        self.server.links.add(self)
        self.timer = asyncio.get_running_loop().call_later(GREETING_TIMEOUT, self._not_greeted)

    def _not_greeted(self) -> None:
        if not self.greeted:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.links.discard(self)
        for worker in [w for w, park in self.server.parked.items() if park.link is self]:
            del self.server.parked[worker]
        if self.timer is not None:
            self.timer.cancel()

    def first_line(self, line: bytes) -> bool:
        if not link.greeted(line, self.server.channel, self.server.token):
            log.warning("link: a connection greeted with the wrong channel or token; closed")
            self.close()
            return False
        assert self.transport is not None
        self.transport.write(link.ACCEPTED)
        log.info("direct link from %s", self.transport.get_extra_info("peername"))
        return True

    def line(self, line: bytes) -> None:
        if line[:1] == b"{":
            self.server.deliver(line)
        else:
            self.server.noted(self, line)
