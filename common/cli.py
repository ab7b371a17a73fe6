"""The ``corral`` command: the one module that wires the API, the worker and the tools together.

corral up | api | worker | redis | simulate          start parts
corral submit MODEL PROMPT [--stream] | submit MODEL --file F | status ID | watch ID | cancel ID | jobs
corral workers | queues | drain WORKER
corral keys create --scope read|submit|admin [--name N] [--rate R] [--max-jobs M] | keys list | keys revoke ID
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
from pydantic import ValidationError

from . import key_commands, keys
from .connections import TRANSIENT, redacted_url
from .errors import CorralError
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
    host = args.host or settings.api_host
    if not check_api_bind(host, settings):
        return 2
    uvicorn.run(
        create_app(settings),
        host=host,
        port=args.port or settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level == "DEBUG",
        # longer than clients keep idle connections (httpx 5 s, aiohttp 15 s): with uvicorn's 5 s default a
        # client could send its next request as the server closed the connection (a ReadError in the bench)
        timeout_keep_alive=75,
    )
    return 0


def check_api_bind(host: str, settings: Settings) -> bool:
    """False (with the reason on stderr) when an API without keys would listen beyond loopback."""
    from .auth import check_bind, is_loopback, parse_api_keys
    from .connections import sync_redis

    configured = bool(parse_api_keys(settings.api_keys.get_secret_value()))
    if not configured and not settings.allow_unauthenticated and not is_loopback(host):
        client = sync_redis(settings.redis_url, name="corral-api-check")
        try:
            configured = bool(client.exists(keys.AUTH_REQUIRED))
        except TRANSIENT:
            pass  # cannot tell: refuse below
        finally:
            client.close()
    try:
        check_bind(host, configured, settings.allow_unauthenticated)
    except CorralError as exc:
        print(f"corral api: {exc.message}", file=sys.stderr)
        return False
    return True


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker import check_backend, run_worker

    if args.check:
        return check_backend(settings)
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
                f"corral up: embedded Redis on {redacted_url(settings.redis_url)}, "
                f"data in {settings.data_dir}/redis (AOF on)"
            )
            stack.spawn("redis", ["redis"], env)
            stack.wait_port("redis", "127.0.0.1", redis_port)
        engine = urlparse(settings.engine_url)
        if args.demo or not port_open(engine.hostname or "127.0.0.1", engine.port or 11434):
            port = args.sim_port
            print(
                f"corral up: nothing at {settings.engine_display_url}; starting the Ollama simulator on :{port}"
            )
            stack.spawn("simulator", ["simulate", "--port", str(port)], env)
            stack.wait_port("simulator", "127.0.0.1", port)
            env.update(
                CORRAL_OLLAMA_URL=f"http://127.0.0.1:{port}", CORRAL_BACKEND_URL="", CORRAL_BACKEND="ollama"
            )
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
def api_base(args: argparse.Namespace, settings: Settings) -> str:
    return args.api or os.environ.get("CORRAL_API") or f"http://{settings.api_host}:{settings.api_port}"


def api_client(args: argparse.Namespace, settings: Settings) -> httpx.Client:
    key = settings.api_key.get_secret_value()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(
        base_url=api_base(args, settings), headers=headers, timeout=httpx.Timeout(30.0, read=None)
    )


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
    if args.file is not None:
        from .cli_jobs import cmd_submit_batch

        return cmd_submit_batch(args, settings)
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
             f"{w.get('age', 0):.1f}s", w.get("backend") or "-", _num(w.get("weight")),
             _num(w.get("max_loaded_models") or None), ",".join(w.get("models") or []) or "-"]
            for w in body["workers"]
        ]  # fmt: skip
        header = [
            "WORKER",
            "LIVE",
            "STATE",
            "HEALTH",
            "SLOTS",
            "HEARTBEAT",
            "BACKEND",
            "WEIGHT",
            "MAX_LOADED",
        ]
        return table(rows, [*header, "MODELS"])
    if kind == "jobs":
        return jobs_table(body)
    if kind == "queues":
        rows = [[q["model"], str(q["queued"]), str(q.get("running", 0))] for q in body["queues"]]
        return table(rows, ["MODEL", "QUEUED", "RUNNING"])
    return json.dumps(body, indent=2)


def _num(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def jobs_table(body: dict[str, Any]) -> str:
    rows = [
        [j["id"], j["status"], j["model"], j.get("worker") or "-", _num(j.get("queued_s"), "s"),
         _num(j.get("ttft_s"), "s"), _num(j.get("tokens_per_s")), str(j["attempt"]), (j.get("error") or "")[:60]]
        for j in body["jobs"]
    ]  # fmt: skip
    header = ["JOB", "STATUS", "MODEL", "WORKER", "QUEUED", "TTFT", "TOK/S", "ATTEMPTS", "ERROR"]
    more = f"\nmore: --cursor {body['next_cursor']}" if body.get("next_cursor") else ""
    return table(rows, header) + more


def jobs_query(args: argparse.Namespace) -> dict[str, Any]:
    names = ("status", "model", "worker", "since", "limit", "cursor")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def cmd_get(
    args: argparse.Namespace, settings: Settings, method: str, path: str, params: dict[str, Any] | None = None
) -> int:
    with api_client(args, settings) as http:
        response = http.request(method, path, params=params)
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
    worker = sub.add_parser(
        "worker", help="run a worker for the configured backend (Ollama or OpenAI-compatible)"
    )
    worker.add_argument("--check", action="store_true",
                        help="test the backend (reachable, auth, models, a 1-token generation) and exit: "
                        "0 ok, 4 unreachable, 5 auth refused, 6 no models, 7 generation failed")  # fmt: skip
    sub.add_parser("redis", help="run the embedded redis-server (infra/redis.conf, AOF on)")
    sub.add_parser("simulate", help="run the bundled Ollama simulator (corral simulate --help)")
    key_commands.add_parser(sub)
    for name, helptext in (
        ("submit", "submit a job"),
        ("status", "show a job"),
        ("watch", "follow a job: its status, then its tokens until it ends"),
        ("cancel", "cancel a job"),
        ("jobs", "job history: what ran where, queue time, time to first token, tokens/s"),
        ("workers", "list workers"),
        ("queues", "list queues"),
        ("drain", "drain a worker: no new jobs, finish running ones, exit"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--api", help="API base URL (default from CORRAL_API or CORRAL_API_HOST/PORT)")
        p.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
        if name == "submit":
            p.add_argument("model")
            p.add_argument("prompt", nargs="?")
            p.add_argument("--file", help="many jobs: a prompt (or a JSON job body) per line; - reads stdin")
            p.add_argument("--system")
            p.add_argument("--stream", action="store_true", help="print tokens as they arrive")
            p.add_argument("--wait", action="store_true", help="queue even if no worker has the model yet")
        if name in ("status", "watch", "cancel", "drain"):
            p.add_argument("id")
        if name == "jobs":
            p.add_argument("--status", help="queued, running, succeeded, failed or cancelled")
            p.add_argument("--model")
            p.add_argument("--worker")
            p.add_argument("--since", help="epoch seconds or ISO 8601")
            p.add_argument("--limit", type=int)
            p.add_argument("--cursor", help="next page (printed after a full page)")
    return parser


def check_submit(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command != "submit":
        return
    if (args.prompt is None) == (args.file is None):
        parser.error("submit takes a PROMPT or --file, one of the two")
    if args.file is not None and args.stream:
        parser.error("--stream follows one job; with --file a progress bar shows the batch")


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    from .cli_jobs import cmd_watch as watch

    return watch(args, settings)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:  # the simulator has its own parser
        from . import simulator_openai

        simulator_openai.main(argv[1:])
        return
    parser = build_parser()
    args = parser.parse_args(argv)
    check_submit(parser, args)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"CORRAL_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        print(f"corral: invalid settings: {problems}", file=sys.stderr)
        sys.exit(2)
    settings.data_dir = Path(settings.data_dir)
    handlers: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
        "up": cmd_up,
        "api": cmd_api,
        "worker": cmd_worker,
        "redis": cmd_redis,
        "keys": key_commands.cmd_keys,
        "submit": cmd_submit,
        "status": lambda a, s: cmd_get(a, s, "GET", f"/jobs/{a.id}"),
        "watch": cmd_watch,
        "cancel": lambda a, s: cmd_get(a, s, "DELETE", f"/jobs/{a.id}"),
        "jobs": lambda a, s: cmd_get(a, s, "GET", "/jobs", jobs_query(a)),
        "workers": lambda a, s: cmd_get(a, s, "GET", "/workers"),
        "queues": lambda a, s: cmd_get(a, s, "GET", "/queues"),
        "drain": lambda a, s: cmd_get(a, s, "POST", f"/workers/{a.id}/drain"),
    }
    try:
        code = handlers[args.command](args, settings)
    except httpx.TransportError as exc:  # a client command that could not reach the API
        print(f"error: the API is unavailable ({exc})", file=sys.stderr)
        code = 3
    sys.exit(code)


if __name__ == "__main__":
    main()
