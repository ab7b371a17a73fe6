"""The chaos benches' submit load: it keeps to its schedule, counts every answer, and survives a server that closes
connections (as an API does while Redis is down)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.submit_load import SubmitLoad

pytestmark = pytest.mark.unit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API
    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            Handler.count += 1
            n = Handler.count
        if n % 10 == 0:  # every tenth: the connection drops with no answer
            self.close_connection = True
            return
        status, body = (503, b"{}") if n % 10 == 5 else (202, json.dumps({"id": f"j{n}"}).encode())
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_load_keeps_its_schedule_and_counts_every_answer(server: str) -> None:
    load = SubmitLoad(server, rate=200, connections=8).start()
    threading.Event().wait(1.0)
    load.stop()
    sent = sum(load.outcomes.values())
    assert 120 <= sent <= 210, load.outcomes  # ~200 in a second, never ahead of the schedule
    assert load.outcomes["202"] == len(load.ids) > 80 and load.outcomes["503"] > 5
    assert (
        sum(n for k, n in load.outcomes.items() if k not in ("202", "503")) > 5
    )  # dropped, then reconnected
    assert len(set(load.ids)) == len(load.ids) and load.achieved == pytest.approx(
        len(load.ids) / load.elapsed
    )
