"""The direct link, both ends' shared part: how a worker sends the chunk events of a job straight to the API that
follows it, besides their way through Redis.

Through Redis a chunk crosses two process wake-ups and a script (worker -> Redis -> API); over the link, one.
Redis stays the record: the worker still emits every event there (the replay stream, the job's other readers),
and the API takes the link's copy only ahead of Redis' one, which confirms it (``corral.api.follow``).

An API process listens on a TCP port and registers ``corral:link:<its reply channel>`` (``keys.link_key``) with
its address and a random token, renewed before it expires. A worker running a job whose ``reply_to`` names that
channel reads the key once, connects, greets with the channel and the token, and from then on writes each chunk
event of such jobs as one line: the very bytes the emit script writes to the replay stream. Anyone who can read
the key could already publish on the API's channel, so the token keeps the trust where Redis puts it.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any, cast

from . import jsonfast

GREETING = b"CORRAL-LINK/1"
ACCEPTED = b"OK\n"
MAX_GREETING = 512  # bytes of a greeting line
MAX_LINE = 1 << 20  # bytes of one line; a longer one closes the link (what it carried goes by Redis)
TTL = 30  # seconds an API's registration lives unless renewed
RENEW = 10.0  # seconds between renewals


def enabled(direct_link: bool, redis_url: str) -> bool:
    """Whether a process uses the link: ``CORRAL_DIRECT_LINK``, and never when Redis is reached over TLS (the link is
    plain TCP: a fleet that encrypts its Redis traffic keeps its chunks encrypted, through Redis)."""
    url = redis_url.lower()
    return direct_link and not url.startswith("rediss:") and "ssl=true" not in url


def greeting(channel: str, token: str) -> bytes:
    """The line a worker opens a link with."""
    return b"%s %s %s\n" % (GREETING, channel.encode(), token.encode())


def greeted(line: bytes, channel: str, token: str) -> bool:
    """Whether ``line`` is a greeting for ``channel`` with its ``token`` (compared in constant time)."""
    parts = line.rstrip(b"\r\n").split(b" ")
    return (
        len(parts) == 3
        and parts[0] == GREETING
        and parts[1] == channel.encode()
        and hmac.compare_digest(parts[2], token.encode())
    )


def registration(host: str, port: int, token: str) -> str:
    """The value of an API's ``keys.link_key``: where its link listens and the token it asks for."""
    return f"{host} {port} {token}"


def parse_registration(value: bytes | str | None) -> tuple[str, int, str] | None:
    """(host, port, token) of a registration; None for a missing or malformed one."""
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    parts = text.split(" ")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
        return None
    return parts[0], int(parts[1]), parts[2]


def event_line(job_id: str, seq: int, attempt: str, body: str) -> bytes:
    """A chunk event as the emit script writes it (``emit`` in common/lua/lib.lua), and a newline."""
    return f'{{"job":"{job_id}","seq":{seq},"attempt":{attempt},{body[1:]}\n'.encode()


# The link's other lines, besides events (which start with "{"): a worker says where it is parked, and an API sends
# a parked worker a job ahead of the enqueue that hands it there (``dispatch_line``).
PARK_FRESH = 2.0  # seconds a worker's park line counts (an idle worker pops, and says it again, every second)


def park_line(worker_id: str, free: int, warm: list[str]) -> bytes:
    """``P <worker> <free slots> <models>``: parked, with those models loaded (comma-separated)."""
    return f"P {worker_id} {free} {','.join(warm)}\n".encode()


def unpark_line(worker_id: str) -> bytes:
    return f"U {worker_id}\n".encode()


def parse_park(line: bytes) -> tuple[str, int, set[str]] | None:
    """(worker, free slots, loaded models) of a park line; free 0 for an unpark; None: not one."""
    parts = line.decode(errors="replace").split(" ")
    if parts[0] == "U" and len(parts) == 2:
        return parts[1], 0, set()
    if parts[0] != "P" or len(parts) != 4 or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2]), set(parts[3].split(",")) - {""}


def dispatch_line(job: list[Any]) -> bytes:
    """A job sent to a parked worker, as the enqueue's hand sends it (``{"dispatch": <POP's answer>}``)."""
    return jsonfast.dumps({"dispatch": job}).encode() + b"\n"


class Lines(asyncio.Protocol):
    """A link end's framing, the same at both ends: a first line (the greeting, or its answer) within
    ``MAX_GREETING`` bytes, then lines, each handed to ``line`` from the callback that read it (no task, no turn of
    the loop). A first line that does not fit, or a line over ``max_line`` bytes still unfinished, closes the link."""

    max_line = MAX_LINE

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.opened = False  # the first line was read and taken

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's transports are not asyncio's classes)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def first_line(self, line: bytes) -> bool:
        """The first line, with its newline: True to go on to the lines after it."""
        raise NotImplementedError

    def line(self, line: bytes) -> None:
        """A line after the first one, without its newline."""
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        start = 0
        if not self.opened:
            end = buffer.find(b"\n", 0, MAX_GREETING)
            if end < 0:
                if len(buffer) >= MAX_GREETING:
                    self.close()
                self.buffer = buffer
                return
            if not self.first_line(buffer[: end + 1]):
                return
            self.opened = True
            start = end + 1
        while (end := buffer.find(b"\n", start)) >= 0:
            self.line(buffer[start:end])
            start = end + 1
        self.buffer = buffer[start:]
        if len(self.buffer) > self.max_line:
            self.close()
