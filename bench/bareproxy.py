"""The floor of any one process between a client and an engine: the smallest correct streaming HTTP/1.1 forwarder,
on asyncio (uvloop when installed), no framework, used by ``python -m bench.firsttoken --peers bare``.

Each client connection gets an upstream connection of its own, kept while both sides keep theirs alive. A request
goes up as it came (its head unchanged, its body by Content-Length or chunked); the response comes back as the
upstream writes it: each chunk of a chunked body is written to the client, and drained, as soon as it is read.
Interim (1xx) answers are passed on; a response framed by the connection's end closes both connections.
Run: ``python -m bench.bareproxy --port 9000 http://127.0.0.1:11434``.
"""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import urlparse

Headers = dict[bytes, bytes]


class Closed(Exception):
    """The connection ended between two requests: nothing to answer."""


async def read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ConnectionError("closed mid-head") from exc
        raise Closed from exc


def headers_of(head: bytes) -> Headers:
    fields = (line.partition(b":") for line in head.split(b"\r\n")[1:] if b":" in line)
    return {name.strip().lower(): value.strip() for name, _, value in fields}


def keeps_alive(head: bytes, headers: Headers) -> bool:
    """HTTP/1.1 keeps the connection unless it says ``close``; HTTP/1.0 closes it unless it says ``keep-alive``."""
    tokens = {t.strip() for t in headers.get(b"connection", b"").lower().split(b",")}
    if b"HTTP/1.0" in head.split(b"\r\n", 1)[0]:
        return b"keep-alive" in tokens
    return b"close" not in tokens


async def copy_body(src: asyncio.StreamReader, dst: asyncio.StreamWriter, headers: Headers) -> bool:
    """Pass on one message body, piece by piece; False if it was framed by the end of the connection."""
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        while True:
            size_line = await src.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:  # the last chunk, then trailer lines up to an empty one
                dst.write(size_line)
                while (line := await src.readuntil(b"\r\n")) != b"\r\n":
                    dst.write(line)
                dst.write(b"\r\n")
                await dst.drain()
                return True
            dst.write(size_line + await src.readexactly(size + 2))
            await dst.drain()
    if b"content-length" in headers:
        left = int(headers[b"content-length"])
        while left:
            data = await src.read(min(left, 65536))
            if not data:
                raise ConnectionError("closed mid-body")
            dst.write(data)
            await dst.drain()
            left -= len(data)
        return True
    return False


async def relay_response(
    up: asyncio.StreamReader, client: asyncio.StreamWriter, method: bytes
) -> tuple[bytes, Headers]:
    """The upstream's answer to one request, interim answers first; the final head and its headers."""
    while True:
        head = await up.readuntil(b"\r\n\r\n")
        client.write(head)
        status = int(head.split(b" ", 2)[1])
        if not 100 <= status < 200 or status == 101:
            break
    headers = headers_of(head)
    if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        await client.drain()
        return head, headers
    if not await copy_body(up, client, headers):  # no framing: the body runs to the upstream's close
        while data := await up.read(65536):
            client.write(data)
            await client.drain()
        headers[b"connection"] = b"close"
    return head, headers


class Forwarder:
    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head = await read_head(reader)
                headers = headers_of(head)
                if up is None:
                    up = await asyncio.open_connection(self.host, self.port)
                up[1].write(head)
                await copy_body(reader, up[1], headers)
                await up[1].drain()
                answer, answer_headers = await relay_response(up[0], writer, head.split(b" ", 1)[0])
                if not (keeps_alive(head, headers) and keeps_alive(answer, answer_headers)):
                    break
        except (Closed, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            for w in (writer, up[1] if up else None):
                if w is not None:
                    w.close()

    async def serve(self, port: int, host: str = "127.0.0.1") -> asyncio.Server:
        return await asyncio.start_server(self.handle, host, port)


async def run(port: int, upstream: str) -> None:
    server = await Forwarder(upstream).serve(port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bareproxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("upstream", help="the engine's URL, e.g. http://127.0.0.1:11434")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args.port, args.upstream))
    else:
        uvloop.run(run(args.port, args.upstream))


if __name__ == "__main__":
    main()
