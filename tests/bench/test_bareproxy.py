"""The bare forwarder of the first-token benchmark's peers (bench/bareproxy.py), against an upstream in the test."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager

import pytest

from bench.bareproxy import Forwarder

pytestmark = pytest.mark.unit


class Upstream:
    """An HTTP/1.1 server that answers each request with two chunks, the second only once ``release`` is set,
    and counts the connections it accepted and the bodies it read."""

    def __init__(self) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []
        self.release = asyncio.Event()
        self.ended: list[asyncio.Future[None]] = []  # one per connection, done when it is closed

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        ended = asyncio.get_running_loop().create_future()
        self.ended.append(ended)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
                self.bodies.append(await reader.readexactly(length))
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
                await writer.drain()
                await self.release.wait()
                self.release.clear()
                writer.write(b"7\r\nsecond\n\r\n0\r\n\r\n")
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()
            ended.set_result(None)


def run(test: Callable[[], Coroutine[None, None, None]]) -> Callable[[], None]:
    """The test as a plain function that runs its coroutine on an event loop of its own."""
    return functools.wraps(test)(lambda: asyncio.run(test()))


@asynccontextmanager
async def proxy() -> AsyncIterator[tuple[Upstream, int]]:
    upstream = Upstream()
    engine = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    engine_port = engine.sockets[0].getsockname()[1]
    front = await Forwarder(f"http://127.0.0.1:{engine_port}").serve(0)
    async with engine, front:
        yield upstream, front.sockets[0].getsockname()[1]
        # the test closed its connections: the proxy closes the upstream ones in turn
        await asyncio.wait_for(asyncio.gather(*upstream.ended), 10)


def request(body: bytes, close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"POST /api/chat HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s" % (
        connection,
        len(body),
        body,
    )


async def read_to(reader: asyncio.StreamReader, end: bytes) -> bytes:
    return await asyncio.wait_for(reader.readuntil(end), 10)


@run
async def test_each_chunk_reaches_the_client_before_the_next_is_written() -> None:
    async with proxy() as (upstream, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request(b'{"model":"m"}'))
        head = await read_to(reader, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head
        assert (
            await read_to(reader, b"first\n\r\n") == b"6\r\nfirst\n\r\n"
        )  # while the upstream holds the rest
        upstream.release.set()
        assert await read_to(reader, b"0\r\n\r\n") == b"7\r\nsecond\n\r\n0\r\n\r\n"
        assert upstream.bodies == [b'{"model":"m"}']
        writer.close()


@run
async def test_a_kept_alive_client_reuses_one_upstream_connection() -> None:
    async with proxy() as (upstream, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for body in (b"one", b"two", b"three"):
            upstream.release.set()
            writer.write(request(body))
            await read_to(reader, b"0\r\n\r\n")
        assert upstream.bodies == [b"one", b"two", b"three"]
        assert upstream.connections == 1
        writer.close()


@run
async def test_connection_close_ends_both_connections_after_the_response() -> None:
    async with proxy() as (upstream, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        upstream.release.set()
        writer.write(request(b"x", close=True))
        await read_to(reader, b"0\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the proxy closed the client's connection
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        upstream.release.set()
        writer.write(request(b"y"))
        await read_to(reader, b"0\r\n\r\n")
        assert upstream.connections == 2  # a new client connection, a new upstream one
        writer.close()
