"""The first-token benchmark's client and busy load (bench/firsttoken.py)."""

from __future__ import annotations

import socket

import pytest

from bench.firsttoken import busy, job_chunk, ndjson_token, read_lines, sse_token

pytestmark = pytest.mark.unit


def test_lines_come_whole_across_chunk_and_packet_boundaries() -> None:
    server, client = socket.socketpair()
    with server, client:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b'{"a":1}\n{"b"' + b":2}\n"
        chunks = (
            b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
        )
        server.sendall(head + chunks)
        assert list(read_lines(client)) == [b'{"a":1}', b'{"b":2}']


def test_a_response_that_is_not_a_stream_fails_the_run() -> None:
    server, client = socket.socketpair()
    with server, client:
        server.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        with pytest.raises(AssertionError):
            list(read_lines(client))


def test_a_token_is_content_not_an_event_or_the_end() -> None:
    assert ndjson_token(b'{"response":"hi","done":false}')
    assert ndjson_token(b'{"message":{"role":"assistant","content":"hi"},"done":false}')
    assert not ndjson_token(b'{"response":"","done":true}')
    assert job_chunk(b'{"type":"chunk","seq":2}') and not job_chunk(b'{"type":"started","seq":1}')
    assert sse_token(b'data: {"choices":[{"delta":{"content":"hi"}}]}')
    assert not sse_token(b'data: {"choices":[{"delta":{"role":"assistant"}}]}')
    assert not sse_token(b"data: [DONE]")


def test_the_busy_load_runs_only_inside_its_block() -> None:
    with busy(bound=30) as procs:
        assert len(procs) == 6 and all(proc.is_alive() for proc in procs)
    assert not any(proc.is_alive() for proc in procs)
