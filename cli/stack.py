"""Starting parts: ``corral api``, ``corral worker``, ``corral redis`` and ``corral up`` (all of them at once)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from typing import Any
from urllib.parse import urlparse

from redis.exceptions import RedisError

from corral.common import keys
from corral.common.configfile import find_config_file
from corral.common.connections import TRANSIENT
from corral.common.errors import CorralError
from corral.common.logs import configure_logging
from corral.common.settings import Settings, redacted_url
from corral.simulator.command import port_free

from .children import Children, Signals

DEMO_OLLAMA_PORT = 11435
DEFAULT_API_PORT = 8000
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def setup_logging(settings: Settings) -> None:
    configure_logging(settings)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from corral.api.memory import exec_under_c_allocator

    host, port = args.host or settings.api_host, args.port or settings.api_port
    check_api_keys(settings)
    if not check_api_bind(host, settings):
        return 2
    if not port_free(host, port):
        raise StartFailed(
            f"port {port} on {host} is in use; stop what listens there or use --port", exit_code=2
        )
    if settings.trim_memory:
        exec_under_c_allocator(args.argv)  # (returns in the run it starts: PYTHONMALLOC is set there)
    # imported after that exec, so only once: the run before it imported them for nothing (2.5 -> 2.1 s of CPU to
    # listening, 2026-12-07)
    import uvicorn

    from corral.api import create_app
    from corral.api.limits import TransportLimits, guarded_http

    setup_logging(settings)
    app = create_app(settings.model_copy(update={"api_host": host}))  # (the direct link listens there too)
    config: dict[str, Any] = dict(
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through Corral's handler, in its format
        access_log=settings.log_access if settings.log_access is not None else settings.log_level == "DEBUG",
        http=guarded_http(TransportLimits.from_settings(settings)),
        timeout_keep_alive=settings.keep_alive_timeout,
    )
    if args.worker:
        from .combined import run

        run(app, config, settings)
    else:
        uvicorn.run(app, **config)
    return 0


def check_api_keys(settings: Settings) -> None:
    """``CORRAL_API_KEYS`` parses (each key 16+ characters), or ``InvalidRequest`` before anything starts."""
    from corral.api.apikeys import parse_api_keys

    parse_api_keys(settings.api_keys.get_secret_value())


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
    if not port_free(server.host, server.port):
        raise StartFailed(
            f"port {server.port} on {server.host} is in use (a Redis running already?)", exit_code=2
        )
    server.data_dir.mkdir(parents=True, exist_ok=True)
    os.execv(server.command()[0], server.command())


class StartFailed(CorralError):
    """``corral up`` could not start a part; ``exit_code`` is the command's (see docs/operations.md)."""

    code = "start_failed"

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message, exit_code=exit_code)
        self.exit_code = exit_code


def any_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(
    children: Children, signals: Signals, name: str, host: str, port: int, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        exited = children.exited()
        if exited is not None:
            raise StartFailed(
                f"the {exited.name} exited with {exited.process.returncode} (its output is above)"
            )
        if time.monotonic() > deadline:
            raise StartFailed(f"the {name} did not open {host}:{port} within {timeout:.0f} s")
        if signals.wait(0.1, above=0):
            raise KeyboardInterrupt


def start_redis(settings: Settings, children: Children, signals: Signals, env: dict[str, str]) -> None:
    """The embedded Redis when the URL is loopback and nothing listens there; then Redis must answer."""
    from corral.common.connections import sync_redis

    url, shown = urlparse(settings.redis_url), redacted_url(settings.redis_url)
    port = url.port or 6379
    if url.hostname in LOOPBACK and not port_open("127.0.0.1", port):
        print(f"corral up: embedded Redis on {shown}, data in {settings.data_dir}/redis (AOF on)")
        children.spawn("redis", ["redis"], env, kill_signal=signal.SIGTERM)
        wait_port(children, signals, "redis", "127.0.0.1", port)
    client = sync_redis(settings.redis_url, name="corral-up")
    try:
        client.ping()
    except (*TRANSIENT, RedisError) as exc:
        raise StartFailed(f"Redis at {shown} does not answer ({exc})", exit_code=3) from None
    finally:
        client.close()


def start_simulator(
    args: argparse.Namespace, settings: Settings, children: Children, signals: Signals, env: dict[str, str]
) -> None:
    """The Ollama simulator when no engine answers (or ``--demo``), on ``--sim-port`` or a free port."""
    engine = urlparse(settings.engine_url)
    if getattr(args, "hosts", None) or settings.hosts:  # hosts by URL: the fleet serves them, no local engine
        return
    if not (args.demo or not port_open(engine.hostname or "127.0.0.1", engine.port or 11434)):
        return
    port = args.sim_port or DEMO_OLLAMA_PORT
    if not port_free("127.0.0.1", port):
        if args.sim_port:
            raise StartFailed(f"the simulator port {port} is in use; choose another with --sim-port", 2)
        port = any_free_port()
    print(f"corral up: nothing at {settings.engine_display_url}; starting the Ollama simulator on :{port}")
    children.spawn("simulator", ["simulate", "--port", str(port)], env)
    wait_port(children, signals, "simulator", "127.0.0.1", port)
    simulator = f"http://127.0.0.1:{port}"  # (over any backend the environment or the file names)
    env.update(CORRAL_OLLAMA_URL=simulator, CORRAL_BACKEND_URL=simulator, CORRAL_BACKEND="ollama")


def start_parts(args: argparse.Namespace, settings: Settings, children: Children, signals: Signals) -> str:
    """Start Redis, the simulator, and the API with a worker in its process (``--worker-process``: a process of its
    own; with ``--host URL``, repeated: one fleet process serving those engines instead); the API's base URL."""
    check_api_keys(settings)
    host, port = settings.api_host, args.port or settings.api_port
    if not port_free(host, port):
        raise StartFailed(f"port {port} on {host} is in use (another corral up or API?); stop it, or choose "
                          f"another port: corral up --port {port + 1}", exit_code=2)  # fmt: skip
    env = {**os.environ, "CORRAL_API_PORT": str(port)}
    start_redis(settings, children, signals, env)
    start_simulator(args, settings, children, signals, env)
    hosts = getattr(args, "hosts", None) or []
    if hosts or settings.hosts:  # the fleet also reads the config file's [[hosts]] itself
        children.spawn("api", ["api"], env)
        children.spawn("fleet", ["fleet", *(f"--host={url}" for url in hosts)], env)
    elif getattr(args, "worker_process", False):
        children.spawn("api", ["api"], env)
        children.spawn("worker", ["worker"], env)
    else:  # (one process: 0.3-1 ms less to the first token, one interpreter less; docs/benchmarks.md)
        children.spawn("api", ["api", "--worker"], env)
    wait_port(children, signals, "api", host, port)
    return f"http://{host}:{port}"


def running_jobs(settings: Settings) -> int | None:
    """The jobs the worker of ``up`` holds (its in-flight list); None when Redis does not tell."""
    from corral.common.connections import sync_redis

    client = sync_redis(settings.redis_url, name="corral-up")
    try:
        return int(client.llen(keys.inflight_key(settings.worker_id)))
    except (*TRANSIENT, RedisError):
        return None
    finally:
        client.close()


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Embedded Redis (if the URL is the default), the simulator (if no Ollama answers), the API and a worker,
    until a signal: 0 after a clean stop, 130 when a second signal forced it, 1 when a part exited."""
    signals, children = Signals(), Children()
    code = 1
    try:
        if (config := find_config_file()) is not None:
            print(f"corral up: settings from {config} (CORRAL_* variables override it; see: corral config)")
        base = start_parts(args, settings, children, signals)
        print(f"corral up: API on {base}  (Ctrl-C stops everything: it drains; twice stops at once)")
        print(f'  curl -d \'{{"model":"llama3","prompt":"hi"}}\' {base}/jobs')
        api_url = "" if base == f"http://127.0.0.1:{DEFAULT_API_PORT}" else f"CORRAL_API_URL={base} "
        print(f"  {api_url}corral submit llama3 'hi' --follow", flush=True)
        while children.exited() is None:
            if signals.wait(0.5, above=0):
                code = 0
                break
        else:
            exited = children.exited()
            assert exited is not None
            print(
                f"corral up: the {exited.name} exited with {exited.process.returncode}; stopping the others"
            )
    except KeyboardInterrupt:  # a signal while starting
        code = 0
    finally:
        clean = children.stop(signals, settings.job_timeout + 5, lambda: running_jobs(settings))
        signals.restore()
    return code if clean else 130
