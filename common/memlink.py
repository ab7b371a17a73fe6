"""The direct link within one process: a worker run inside an API's process (``corral api --worker``) reaches that
API's link end over a pair of in-memory transports instead of a loopback TCP connection.

Both ends keep their code and protocol (``common/link.py``: greeting, event lines, park and dispatch lines); only
the bytes' way changes. A write is handed to the other end's protocol in the same step, so a chunk reaches its
reader, and a job sent ahead its worker, without the two process wake-ups (and the kernel's two copies) a TCP link
costs. A job sent ahead goes over as it is (``hand``), not as its line: its encoding and decoding are ~0.1 ms of
a first token on a machine whose caches other processes emptied meanwhile (docs/benchmarks.md). The API end
registers its channel here (``serve``) besides its TCP listener; a worker looks here first (``connect``), and uses
TCP for every channel not served in its own process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

log = logging.getLogger(__name__)
PEERNAME = ("in-process", 0)

# reply channel -> a factory of its API's link protocol
_served: dict[str, Callable[[], asyncio.Protocol]] = {}


def serve(channel: str, factory: Callable[[], asyncio.Protocol]) -> None:
    """Make ``channel``'s link end reachable from this process (until ``unserve``)."""
    _served[channel] = factory


def unserve(channel: str) -> None:
    _served.pop(channel, None)


def served(channel: str) -> bool:
    return channel in _served


def connect(channel: str, protocol: asyncio.Protocol) -> asyncio.Transport:
    """``protocol`` connected to ``channel``'s link end in this process (``KeyError`` when none is served here):
    its transport, as ``loop.create_connection`` gives one over TCP."""
    loop = asyncio.get_running_loop()
    near, far = MemoryTransport(loop, protocol), MemoryTransport(loop, _served[channel]())
    near.peer, far.peer = far, near
    protocol.connection_made(near)
    far.protocol.connection_made(far)
    return near


class Receiver(Protocol):
    """A link end that takes items handed over as they are, besides bytes (worker/link.py ``ApiLink``)."""

    def item_received(self, item: Any) -> None: ...


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory pair: ``write`` gives the bytes to the other end's protocol at once. An error in
    that protocol closes the pair and is logged, as an event loop does for a socket's protocol."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.loop = loop
        self.protocol = protocol
        self.peer: MemoryTransport | None = None
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        peer = self.peer
        if self.closing or peer is None or peer.closing:
            return
        try:
            peer.protocol.data_received(bytes(data))
        except Exception:
            self._failed()

    def hand(self, item: Any) -> None:
        """Give ``item`` to the other end's protocol as it is (its ``item_received``): what a line would carry,
        neither encoded nor decoded."""
        peer = self.peer
        if self.closing or peer is None or peer.closing:
            return
        try:
            cast(Receiver, peer.protocol).item_received(item)
        except Exception:
            self._failed()

    def _failed(self) -> None:
        log.exception("in-process link: its reader failed; closed")
        self.close()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.loop.call_soon(self.protocol.connection_lost, None)
        if self.peer is not None:
            self.peer.close()

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0  # (nothing is ever buffered: the other end has each write at once)

    def can_write_eof(self) -> bool:
        return False

    def is_reading(self) -> bool:
        return not self.closing

    def pause_reading(self) -> None:
        pass  # (lines are small and few; a reader over its limit closes the link, as over TCP)

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return PEERNAME if name == "peername" else default
