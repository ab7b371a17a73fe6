"""Transport limits of a real ``corral api`` process, through raw sockets: request heads over the size or header
count (431), heads and bodies that do not arrive in time (closed; 408 for a stalled body), idle keep-alive
connections, and a client that leaves mid-upload (one log line, no traceback)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Fleet, own_fleet
from tests.support import wait_for

pytestmark = pytest.mark.integration

LIMITS = {"max_header_bytes": 4096, "max_headers": 20, "head_timeout": 0.5, "body_timeout": 0.5,
          "keep_alive_timeout": 1}  # fmt: skip


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, int]]:
    with own_fleet(tmp_path_factory.mktemp("transport")) as (_server, fleet):
        base = fleet.api(**LIMITS)
        yield fleet, int(base.rsplit(":", 1)[1])


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, on a connection that stays open."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return raw


def answer(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def closed_within(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    started = time.monotonic()
    raw = read_all(sock)
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"connection held {elapsed:.1f} s"
    return raw, elapsed


def test_an_oversized_header_gets_431(api: tuple[Fleet, int]) -> None:
    with connect(api[1]) as sock:
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n")
        status, body = answer(read_all(sock))
    assert status == 431
    assert body["code"] == "headers_too_large"


def test_a_head_that_grows_past_the_limit_gets_431_before_it_ends(api: tuple[Fleet, int]) -> None:
    with connect(api[1]) as sock:
        sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192)
        status, body = answer(closed_within(sock, 5)[0])
    assert status == 431
    assert set(body) == {"error"}  # Ollama's shape on /api/


def test_too_many_headers_get_431(api: tuple[Fleet, int]) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
    with connect(api[1]) as sock:
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, body = answer(read_all(sock))
    assert status == 431
    assert "20" in body["error"]


def test_requests_within_the_limits_are_served_on_one_connection(api: tuple[Fleet, int]) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(15))
    with connect(api[1]) as sock:
        for _ in range(3):
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_a_connection_that_sends_nothing_is_closed(api: tuple[Fleet, int]) -> None:
    with connect(api[1]) as sock:
        raw, elapsed = closed_within(sock, 5)
    assert raw == b""
    assert elapsed >= 0.3


def test_a_trickled_head_is_closed_at_the_head_timeout(api: tuple[Fleet, int]) -> None:
    with connect(api[1]) as sock:
        sock.sendall(b"GET /readyz HTTP/1.1\r\n")
        sock.settimeout(0.1)
        started = time.monotonic()
        for i in range(50):  # a header line every 0.1 s: each read is recent, the head never ends
            try:
                if sock.recv(65536) == b"":
                    break
            except TimeoutError:
                sock.sendall(b"X-T%d: v\r\n" % i)
        else:
            pytest.fail("a trickled head was held open for 5 s")
    assert time.monotonic() - started < 3


def test_a_stalled_body_gets_408(api: tuple[Fleet, int]) -> None:
    with connect(api[1]) as sock:
        sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"model\":")  # fmt: skip
        status, body = answer(closed_within(sock, 5)[0])
    assert status == 408
    assert body["code"] == "request_timeout"


def test_an_idle_keep_alive_connection_is_closed(api: tuple[Fleet, int]) -> None:
    with connect(api[1]) as sock:
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        _raw, elapsed = closed_within(sock, 5)
    assert elapsed >= 0.7


def test_a_client_that_leaves_mid_upload_logs_one_line_not_a_traceback(api: tuple[Fleet, int]) -> None:
    fleet, port = api
    log = Path(fleet.children[-1].log_path)
    before = log.read_text()
    for _ in range(3):
        with connect(port) as sock:
            sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n" + b" " * 5000)  # fmt: skip
    wait_for(
        lambda: log.read_text()[len(before) :].count("disconnected") >= 3, what="three log lines", timeout=5
    )
    new = log.read_text()[len(before) :]
    assert "Traceback" not in new
    assert "ERROR" not in new
