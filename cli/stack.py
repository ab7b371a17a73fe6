"""Starting parts: ``corral api``, ``corral worker``, ``corral redis`` and ``corral up`` (all of them at once)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

from corral.common import keys
from corral.common.configfile import find_config_file
from corral.common.connections import TRANSIENT
from corral.common.errors import CorralError
from corral.common.logs import configure_logging
from corral.common.settings import Settings, redacted_url

DEMO_OLLAMA_PORT = 11435
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def setup_logging(settings: Settings) -> None:
    configure_logging(settings)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from corral.api import create_app
    from corral.api.limits import TransportLimits, guarded_http

    setup_logging(settings)
    host = args.host or settings.api_host
    if not check_api_bind(host, settings):
        return 2
    uvicorn.run(
        create_app(settings),
        host=host,
        port=args.port or settings.api_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through Corral's handler, in its format
        access_log=settings.log_access if settings.log_access is not None else settings.log_level == "DEBUG",
        http=guarded_http(TransportLimits.from_settings(settings)),
        timeout_keep_alive=settings.keep_alive_timeout,
    )
    return 0


def check_api_bind(host: str, settings: Settings) -> bool:
    """False (with the reason on stderr) when an API without keys would listen beyond loopback."""
    from corral.api.apikeys import check_bind, is_loopback, parse_api_keys
    from corral.common.connections import sync_redis

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
    from corral.worker import check_backend, run_worker

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
        process = subprocess.Popen([sys.executable, "-m", "corral", *argv], env=env, start_new_session=True)
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
        if (config := find_config_file()) is not None:
            print(f"corral up: settings from {config} (CORRAL_* variables override it; see: corral config)")
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
            simulator = f"http://127.0.0.1:{port}"  # (over any backend the environment or the file names)
            env.update(CORRAL_OLLAMA_URL=simulator, CORRAL_BACKEND_URL=simulator, CORRAL_BACKEND="ollama")
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
