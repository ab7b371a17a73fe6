"""The worker talks only to its configured Ollama, on Ollama's own paths: no field of a request (native, drop-in,
or a job planted straight in Redis) can make it call another host or another path.

The worker's "Ollama" here is a recording fake that answers like Ollama and logs every request; a canary server
stands for any other host a request might name and must never see a connection."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from ..conftest import Fleet
from ..support import wait_for

pytestmark = pytest.mark.integration
OLLAMA_PATHS = {"/api/tags", "/api/ps", "/api/generate", "/api/chat", "/api/embed", "/api/show"}


class RecordingOllama(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, dict[str, Any]]]

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, {}))
        models = [{"name": "llama3:latest", "model": "llama3:latest"}] if self.path == "/api/tags" else []
        self.reply(json.dumps({"models": models}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.seen.append(("POST", self.path, body))
        if self.path == "/api/chat":
            chunk = {"message": {"role": "assistant", "content": "ok"}, "done": False}
            last = {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"}
        else:
            chunk, last = (
                {"response": "ok", "done": False},
                {"response": "", "done": True, "done_reason": "stop"},
            )
        self.reply(b"".join(json.dumps(c).encode() + b"\n" for c in (chunk, last)), "application/x-ndjson")


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_ollama() -> Iterator[tuple[str, list[tuple[str, str, dict[str, Any]]]]]:
    seen: list[tuple[str, str, dict[str, Any]]] = []
    handler = type("Recording", (RecordingOllama,), {"seen": seen})
    for server in serve(handler):
        yield f"http://127.0.0.1:{server.server_port}", seen


@pytest.fixture
def canary() -> Iterator[tuple[str, list[object]]]:
    """A listening socket that records every connection made to it."""
    hits: list[object] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            hits.append(conn.getpeername())
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", hits
    stop.set()
    thread.join(5)
    sock.close()


def test_no_request_field_changes_where_the_worker_connects(
    fleet: Fleet,
    fake_ollama: tuple[str, list[tuple[str, str, dict[str, Any]]]],
    canary: tuple[str, list[object]],
) -> None:
    ollama_url, seen = fake_ollama
    elsewhere, hits = canary
    fleet.worker(ollama_url, "w-url")
    api = fleet.api()
    bait = {"host": elsewhere, "url": elsewhere + "/api/pull", "base_url": elsewhere, "path": "/api/delete",
            "ollama_url": elsewhere, "OLLAMA_HOST": elsewhere}  # fmt: skip
    with httpx.Client(base_url=api, timeout=30) as http:
        tools = [{"type": "function", "function": {"name": elsewhere}}]
        fields = {
            "prompt": elsewhere,
            "system": elsewhere,
            "template": elsewhere,
            "format": {"$ref": elsewhere},
        }
        native = http.post("/jobs", json={"model": "llama3", **fields, "tools": tools})
        assert native.status_code == 202
        assert http.post("/jobs", json={"model": "llama3", "prompt": "x", **bait}).status_code == 422
        assert (
            http.post("/jobs", json={"model": "llama3", "prompt": "x", "images": [elsewhere]}).status_code
            == 422
        )
        assert http.post(
            "/api/generate", json={"model": "llama3", "prompt": "x", "stream": False, **bait}
        ).json()
        assert http.post("/api/chat", json={"model": "llama3", "stream": False, **bait,
                                            "messages": [{"role": "user", "content": elsewhere}]}).json()  # fmt: skip
        image = {"type": "image_url", "image_url": {"url": elsewhere + "/cat.png"}}
        refused = http.post("/v1/chat/completions", json={"model": "llama3", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"}, image]}]})  # fmt: skip
        assert refused.status_code == 400 and "data: URL" in refused.json()["error"]["message"]
        # a job planted straight into Redis, with extra fields in its Ollama request
        planted = Job.create("corral.generate", kwargs={"request": {"model": "llama3:latest", "prompt": "p", **bait}},
                             connection=fleet.redis, id="a" * 32, serializer=JSONSerializer)  # fmt: skip
        mapping = planted.to_dict()
        mapping.update(
            status="queued", model="llama3:latest", attempt=1, seq=0, origin="ollama:llama3:latest"
        )
        fleet.redis.hset("rq:job:" + "a" * 32, mapping=mapping)
        fleet.redis.rpush("rq:queue:ollama:llama3:latest", "a" * 32)
        fleet.redis.publish("corral:wake:llama3:latest", "x")
        wait_for(
            lambda: fleet.redis.hget("rq:job:" + "a" * 32, "status") == b"finished", what="planted job ran"
        )
        job_id = native.json()["id"]
        wait_for(lambda: http.get(f"/jobs/{job_id}").json()["status"] == "succeeded", what="native job ran")
    assert hits == [], "a request made the worker connect elsewhere"
    assert {path for _method, path, _body in seen} <= OLLAMA_PATHS
    generated = [body for method, path, body in seen if path in ("/api/generate", "/api/chat")]
    assert len(generated) == 4  # native, /api/generate, /api/chat, planted
