"""The first-token benchmark's client and busy load (bench/firsttoken.py)."""

from __future__ import annotations

import socket

import pytest

from bench.firsttoken import (
    ROUTES,
    Cell,
    Lane,
    Stack,
    busy,
    job_chunk,
    ndjson_token,
    one_round,
    read_lines,
    sse_token,
    table,
)
from bench.firsttoken_peers import OLLAMA_CHAT, parse

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


class Recorder(Stack):
    """A stack that measures nothing: it records which lane was asked when."""

    def __init__(self, name: str, lanes: list[Lane], log: list[tuple[str, str, bool]]) -> None:
        super().__init__(name, lanes)
        self.log = log

    def added(self, lane: Lane, keep_alive: bool, prompt: str) -> float:
        self.log.append((self.name, lane.route.name, keep_alive))
        return 0.001


def test_a_peer_takes_turns_with_corral_on_the_routes_it_serves() -> None:
    log: list[tuple[str, str, bool]] = []
    corral = Recorder("corral", [Lane(route, "http://api", "http://sim") for route in ROUTES], log)
    peer = Recorder("peer", [Lane(OLLAMA_CHAT, "http://peer", "http://sim")], log)
    out: dict[Cell, list[list[float]]] = {}
    one_round([corral, peer], 2, "quiet", out)
    first_pair = log[: len(log) // 2]
    assert first_pair[2:6] == [("corral", "/api/chat", True), ("peer", "/api/chat", True),
                               ("corral", "/api/chat", False), ("peer", "/api/chat", False)]  # fmt: skip
    assert log[len(log) // 2 :] == first_pair[::-1]  # the next pair the other way round
    assert out[("peer", "/api/chat", False, "quiet")] == [[0.001, 0.001]]
    assert ("peer", "POST /jobs (stream)", True, "quiet") not in out
    assert "| peer | /api/chat | new |" in table([corral, peer], {**out, **relabel(out, "busy")})


def relabel(out: dict[Cell, list[list[float]]], scenario: str) -> dict[Cell, list[list[float]]]:
    return {(stack, route, keep, scenario): runs for (stack, route, keep, _), runs in out.items()}


def test_peers_are_named_from_a_list() -> None:
    assert parse("bare, herd") == ["bare", "herd"] and parse("") == []
    with pytest.raises(SystemExit, match="unknown nginx"):
        parse("bare,nginx")
