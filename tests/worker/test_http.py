"""The worker's lean HTTP client against a scripted loopback server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from corral.worker.backends import Connection, HttpPool
from corral.worker.http import LeanClient, TransportError

pytestmark = pytest.mark.unit

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    length = 0
    for line in head.split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return head, await reader.readexactly(length)


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def test_chunked_ndjson_lines_and_keep_alive() -> None:
    connections: list[int] = []
    heads: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            heads.append(head)
            assert body == b'{"a":1}'
            # one JSON line split over two chunks, then two lines in one chunk
            payload = [b'{"n":', b"1}\n", b'{"n":2}\n{"n":3}\n']
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in payload:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def main() -> None:
        server, url = await serve(handler)
        client = LeanClient(url, headers={"Authorization": "Bearer t"})
        for _ in range(2):
            async with client.stream("POST", "/api/generate", {"a": 1}) as response:
                assert response.status_code == 200
                assert [line async for line in response.aiter_lines()] == ['{"n":1}', '{"n":2}', '{"n":3}']
        await client.aclose()
        server.close()

    asyncio.run(main())
    assert len(connections) == 1  # the second request reused the connection
    assert "Authorization: Bearer t" in heads[0] and "Content-Length: 7" in heads[0]


def test_content_length_body_and_reconnect_after_the_server_closed() -> None:
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await read_request(reader)
        writer.write(b'HTTP/1.1 404 Not Found\r\nContent-Length: 20\r\n\r\n{"error":"no model"}')
        await writer.drain()
        # returning closes it: an idle keep-alive connection the server dropped

    async def main() -> None:
        server, url = await serve(handler)
        client = LeanClient(url)
        for _ in range(3):
            response = await client.request("GET", "/api/tags")
            assert response.status_code == 404
            assert await response.json() == {"error": "no model"}
            await asyncio.sleep(0.01)
        await client.aclose()
        server.close()

    asyncio.run(main())
    assert len(connections) == 3


def test_leaving_a_stream_early_closes_the_connection() -> None:
    eof = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nline\n\r\n")
        await writer.drain()
        if await reader.read() == b"":
            eof.set()

    async def main() -> None:
        server, url = await serve(handler)
        client = LeanClient(url)
        async with client.stream("POST", "/api/generate", {}) as response:
            async for line in response.aiter_lines():
                assert line == "line"
                break
        await asyncio.wait_for(eof.wait(), 5)  # the server learns the client went away: Ollama stops
        server.close()

    asyncio.run(main())


def test_garbage_and_refused_connections_are_transport_errors() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        server, url = await serve(handler)
        with pytest.raises(TransportError, match="not an HTTP"):
            await LeanClient(url).request("GET", "/")
        server.close()
        await server.wait_closed()
        with pytest.raises(TransportError, match="cannot connect"):
            await LeanClient(url).request("GET", "/")

    asyncio.run(main())
    with pytest.raises(ValueError):
        LeanClient("ftp://x")


def answer(n: int) -> bytes:
    body = b'{"n":%d}' % n
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def test_a_request_sent_now_is_on_the_wire_before_any_await() -> None:
    """``send_now`` writes from synchronous code on the kept connection; ``stream(sent=)`` reads its answer."""
    bodies: list[bytes] = []
    arrived = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for n in range(2):
            _head, body = await read_request(reader)
            bodies.append(body)
            arrived.set()
            writer.write(answer(n))
            await writer.drain()

    async def main() -> None:
        server, url = await serve(handler)
        client = LeanClient(url)
        assert client.send_now("POST", "/api/generate", {"a": 0}) is None  # no kept connection yet
        await client.request("POST", "/api/generate", {"a": 0})
        arrived.clear()
        sent = client.send_now("POST", "/api/generate", {"a": 1})
        assert sent is not None
        await asyncio.wait_for(arrived.wait(), 5)  # the server has it before the stream is even opened
        async with client.stream("POST", "/api/generate", sent=sent) as response:
            assert await response.json() == {"n": 1}
        await client.aclose()
        server.close()

    asyncio.run(main())
    assert bodies == [b'{"a":0}', b'{"a":1}']  # sent once


def test_a_request_sent_now_on_a_connection_the_server_dropped_goes_again_on_a_new_one() -> None:
    connections: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _head, body = await read_request(reader)
        connections.append(body)
        writer.write(answer(len(connections)))
        await writer.drain()
        # returning closes it: a kept connection the server dropped while the client was idle

    async def main() -> None:
        server, url = await serve(handler)
        client = LeanClient(url)
        await client.request("POST", "/api/generate", {"a": 0})
        await asyncio.sleep(0.05)  # the server has closed it
        # half-closed by the server, the connection is still open here: the request goes out on it
        sent = client.send_now("POST", "/api/generate", {"a": 1})
        assert sent is not None
        async with client.stream("POST", "/api/generate", sent=sent) as response:
            assert await response.json() == {"n": 2}
        await client.aclose()
        server.close()

    asyncio.run(main())
    assert connections == [b'{"a":0}', b'{"a":1}']


def test_a_pool_request_sent_early_and_discarded_closes_its_connection_and_frees_its_client() -> None:
    """A job's task cancelled before it ran: the answer to its early request must never be read as another
    request's, and its client goes back to the pool."""
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        n = 0
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            n += 1
            writer.write(answer(10 * len(connections) + n))
            await writer.drain()

    async def main() -> None:
        server, url = await serve(handler)
        pool = HttpPool(Connection(url=url), slots=0)  # one client
        async with pool.stream("/api/generate", {}) as response:
            assert await response.json() == {"n": 11}
        early = pool.send_now("/api/generate", {})
        assert early is not None and pool.send_now("/api/generate", {}) is None  # its client is taken
        early.discard()
        early.discard()  # idempotent
        async with pool.stream("/api/generate", {}) as response:
            assert await response.json() == {"n": 21}  # a new connection, not the dropped answer 12
        used = pool.send_now("/api/generate", {})
        assert used is not None
        async with pool.stream("/api/generate", {}, used) as response:
            assert await response.json() == {"n": 22}
        used.discard()  # a no-op once its answer was read: the kept connection stays
        async with pool.stream("/api/generate", {}) as response:
            assert await response.json() == {"n": 23}
        await pool.close()
        server.close()

    asyncio.run(main())
    assert len(connections) == 2


def test_a_request_cancelled_before_its_answer_never_hands_that_answer_to_the_next() -> None:
    """A timeout around a request (the heartbeat's /api/ps read) cancels it after it was written: the connection
    then holds an answer nobody reads, so it is closed, and the next request gets its own answer."""
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            path = head.split(" ", 2)[1]
            if path == "/slow":
                await release.wait()
            answer = f'{{"path":"{path}"}}'.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
            await writer.drain()

    async def main() -> list[object]:
        server, url = await serve(handler)
        client = LeanClient(url)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.request("GET", "/slow")
        release.set()  # the slow answer is on its way now, on the connection of the cancelled request
        answers = [await (await client.request("GET", f"/next{i}")).json() for i in range(2)]
        await client.aclose()
        server.close()
        return answers

    assert asyncio.run(main()) == [{"path": "/next0"}, {"path": "/next1"}]
