"""The ``corral`` command: the one module that wires the API, the worker and the tools together.

corral up | api | worker | redis | simulate          start parts
corral submit MODEL PROMPT [--stream] | status ID | cancel ID | workers | queues
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from .settings import Settings

DEMO_OLLAMA_PORT = 11435
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: one line (and some CPU) per job on a worker
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


# -- starting parts -----------------------------------------------------------------------------------------
def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api import create_app

    setup_logging(settings)
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level == "DEBUG",
    )
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker import run_worker

    setup_logging(settings)
    run_worker(settings)
    return 0


def cmd_redis(args: argparse.Namespace, settings: Settings) -> int:
    from .embedded_redis import RedisServer

    url = urlparse(settings.redis_url)
    server = RedisServer(
        port=url.port or 6379, data_dir=settings.data_dir / "redis", host=url.hostname or "127.0.0.1"
    )
    server.data_dir.mkdir(parents=True, exist_ok=True)
    os.execv(server.command()[0], server.command())


class Stack:
    """The child processes of ``corral up``, stopped in reverse order."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        # own session: a Ctrl-C in the terminal reaches `up` only, which then stops the parts in order
        process = subprocess.Popen(
            [sys.executable, "-m", "common.cli", *argv], env=env, start_new_session=True
        )
        self.children.append((name, process))

    def wait_port(self, name: str, host: str, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(host, port):
            for child, process in self.children:
                if process.poll() is not None:
                    raise SystemExit(f"corral up: {child} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"corral up: {name} did not open {host}:{port}")
            time.sleep(0.1)

    def stop(self) -> None:
        for _name, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Embedded Redis (if the URL is the default), the simulator (if no Ollama answers), the API and a worker."""
    env = dict(os.environ)
    stack = Stack()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        redis_url = urlparse(settings.redis_url)
        redis_port = redis_url.port or 6379
        if redis_url.hostname in LOOPBACK and not port_open("127.0.0.1", redis_port):
            print(
                f"corral up: embedded Redis on {settings.redis_url}, data in {settings.data_dir}/redis (AOF on)"
            )
            stack.spawn("redis", ["redis"], env)
            stack.wait_port("redis", "127.0.0.1", redis_port)
        ollama = urlparse(settings.ollama_url)
        if args.demo or not port_open(ollama.hostname or "127.0.0.1", ollama.port or 11434):
            port = args.sim_port
            print(f"corral up: no Ollama at {settings.ollama_url}; starting the Ollama simulator on :{port}")
            stack.spawn("simulator", ["simulate", "--port", str(port)], env)
            stack.wait_port("simulator", "127.0.0.1", port)
            env["CORRAL_OLLAMA_URL"] = f"http://127.0.0.1:{port}"
        stack.spawn("api", ["api"], env)
        stack.spawn("worker", ["worker"], env)
        stack.wait_port("api", settings.api_host, settings.api_port)
        base = f"http://{settings.api_host}:{settings.api_port}"
        print(f"corral up: API on {base}  (Ctrl-C stops everything)")
        print(f'  curl -d \'{{"model":"llama3","prompt":"hi"}}\' {base}/jobs')
        print("  corral submit llama3 'hi' --stream")
        while all(p.poll() is None for _, p in stack.children):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


# -- talking to the API -------------------------------------------------------------------------------------
def api_client(args: argparse.Namespace, settings: Settings) -> httpx.Client:
    base = args.api or os.environ.get("CORRAL_API") or f"http://{settings.api_host}:{settings.api_port}"
    return httpx.Client(base_url=base, timeout=httpx.Timeout(30.0, read=None))


def fail(response: httpx.Response) -> int:
    try:
        message = response.json().get("error", response.text)
    except ValueError:
        message = response.text
    print(f"error ({response.status_code}): {message}", file=sys.stderr)
    return 2 if response.status_code < 500 else 3


def stream_events(http: httpx.Client, job_id: str, show: Any) -> dict[str, Any]:
    """Follow a job's events, reconnecting from the last seq if the connection drops; returns the last event."""
    next_seq, last_event, attempts = 0, {}, 0
    while attempts < 20:
        try:
            headers = {"Accept": "application/x-ndjson"}
            with http.stream(
                "GET", f"/jobs/{job_id}/events", params={"from": next_seq}, headers=headers
            ) as resp:
                if resp.status_code != 200:
                    resp.read()
                    return {"type": "error", "error": resp.text}
                for line in resp.iter_lines():
                    if not line:
                        continue
                    event: dict[str, Any] = json.loads(line)
                    next_seq, last_event = event["seq"] + 1, event
                    show(event)
                    if event["type"] in ("done", "error", "cancelled"):
                        return event
        except httpx.TransportError:
            attempts += 1
            time.sleep(min(0.2 * attempts, 2.0))
    return last_event


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {"model": args.model, "prompt": args.prompt, "wait": args.wait}
    if args.system:
        body["system"] = args.system
    with api_client(args, settings) as http:
        response = http.post("/jobs", json=body)
        if response.status_code != 202:
            return fail(response)
        job = response.json()
        if not args.stream:
            print(job["id"] if not args.json else json.dumps(job))
            return 0

        def show(event: dict[str, Any]) -> None:
            if event["type"] == "chunk":
                print(event["text"], end="", flush=True)
            elif event["type"] == "retry":
                print(f"\n[retry: {event.get('reason')}]", file=sys.stderr)

        last = stream_events(http, job["id"], show)
        print()
        if last.get("type") != "done":
            print(
                f"job {job['id']}: {last.get('type')}: {last.get('error') or last.get('reason')}",
                file=sys.stderr,
            )
            return 1
        return 0


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def render(kind: str, body: dict[str, Any]) -> str:
    """Readable tables for people; ``--json`` gives the API's JSON for scripts."""
    if kind == "workers":
        rows = [
            [w["id"], "alive" if w["alive"] else "DEAD", w.get("state") or "-",
             "ok" if w.get("healthy") else "unhealthy", f"{w.get('slots_busy', 0)}/{w.get('slots_total', 0)}",
             f"{w.get('age', 0):.1f}s", ",".join(w.get("models") or []) or "-"]
            for w in body["workers"]
        ]  # fmt: skip
        return table(rows, ["WORKER", "LIVE", "STATE", "OLLAMA", "SLOTS", "HEARTBEAT", "MODELS"])
    if kind == "queues":
        rows = [[q["model"], str(q["queued"]), str(q.get("running", 0))] for q in body["queues"]]
        return table(rows, ["MODEL", "QUEUED", "RUNNING"])
    return json.dumps(body, indent=2)


def cmd_get(args: argparse.Namespace, settings: Settings, method: str, path: str) -> int:
    with api_client(args, settings) as http:
        response = http.request(method, path)
        if response.status_code >= 400:
            return fail(response)
        body = response.json()
        print(json.dumps(body, indent=2) if args.json else render(args.command, body))
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral", description="Redis-queue job dispatcher for Ollama fleets"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="embedded Redis + API + worker (+ simulator when no Ollama answers)")
    up.add_argument("--demo", action="store_true", help="always use the bundled Ollama simulator")
    up.add_argument("--sim-port", type=int, default=DEMO_OLLAMA_PORT, help="port of the simulator if started")
    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    sub.add_parser("worker", help="run a worker for the local Ollama")
    sub.add_parser("redis", help="run the embedded redis-server (infra/redis.conf, AOF on)")
    sub.add_parser("simulate", help="run the bundled Ollama simulator (corral simulate --help)")
    for name, helptext in (
        ("submit", "submit a job"),
        ("status", "show a job"),
        ("cancel", "cancel a job"),
        ("workers", "list workers"),
        ("queues", "list queues"),
        ("drain", "drain a worker: no new jobs, finish running ones, exit"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--api", help="API base URL (default from CORRAL_API or CORRAL_API_HOST/PORT)")
        p.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
        if name == "submit":
            p.add_argument("model")
            p.add_argument("prompt")
            p.add_argument("--system")
            p.add_argument("--stream", action="store_true", help="print tokens as they arrive")
            p.add_argument("--wait", action="store_true", help="queue even if no worker has the model yet")
        if name in ("status", "cancel", "drain"):
            p.add_argument("id")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:  # the simulator has its own parser
        from . import simulator

        simulator.main(argv[1:])
        return
    args = build_parser().parse_args(argv)
    settings = Settings()
    settings.data_dir = Path(settings.data_dir)
    handlers: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
        "up": cmd_up,
        "api": cmd_api,
        "worker": cmd_worker,
        "redis": cmd_redis,
        "submit": cmd_submit,
        "status": lambda a, s: cmd_get(a, s, "GET", f"/jobs/{a.id}"),
        "cancel": lambda a, s: cmd_get(a, s, "DELETE", f"/jobs/{a.id}"),
        "workers": lambda a, s: cmd_get(a, s, "GET", "/workers"),
        "queues": lambda a, s: cmd_get(a, s, "GET", "/queues"),
        "drain": lambda a, s: cmd_get(a, s, "POST", f"/workers/{a.id}/drain"),
    }
    sys.exit(handlers[args.command](args, settings))


if __name__ == "__main__":
    main()
