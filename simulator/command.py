"""``python -m corral.simulator`` / ``corral simulate``: run the bundled Ollama simulator."""

from __future__ import annotations

import argparse
import json
import socket
import sys

from starlette.types import ASGIApp, Receive, Scope, Send

from .app import build_app
from .model import ModelSpec, SimConfig, normalise

DEMO_MODELS = "llama3:latest,qwen2.5:0.5b,nomic-embed-text:latest"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral simulate", description="Run the bundled Ollama simulator.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=11434, help="port to bind (Ollama's is 11434)")
    p.add_argument(
        "--models", default=DEMO_MODELS, help="comma-separated model names ('embed' in a name: embedding)"
    )
    p.add_argument("--ttft", type=float, default=0.05, help="seconds to first token")
    p.add_argument("--tps", type=float, default=50.0, help="tokens per second (0 = instant)")
    p.add_argument("--load-time", type=float, default=1.0, help="seconds to load a model")
    p.add_argument("--size-gb", type=float, default=4.0, help="memory of each model")
    p.add_argument("--parallel", type=int, default=4, help="like OLLAMA_NUM_PARALLEL")
    p.add_argument("--max-loaded", type=int, default=3, help="like OLLAMA_MAX_LOADED_MODELS")
    p.add_argument("--memory-gb", type=float, default=64.0, help="GPU memory of this host")
    p.add_argument("--max-queue", type=int, default=512, help="like OLLAMA_MAX_QUEUE")
    p.add_argument("--keep-alive", type=float, default=300.0, help="seconds a model stays loaded")
    p.add_argument("--time-scale", type=float, default=1.0, help="multiplies every delay (0 = instant)")
    p.add_argument("--min-tokens", type=int, default=0, help="pad every reply to this many tokens")
    p.add_argument("--speed", type=float, default=1.0, help="host speed: multiplies tokens/s, divides delays")
    p.add_argument("--disk-gb", type=float, default=1000.0, help="disk capacity for pulled models")
    p.add_argument(
        "--pull-rate", type=float, default=1000.0, help="download rate of a pull, MiB/s (0 = instant)"
    )
    p.add_argument("--pull-size-gb", type=float, default=2.0, help="size of a pulled model")
    p.add_argument("--registry", default="",
                   help='JSON model -> size (GB) a pull finds, e.g. {"phi3": 2.2}; others are unknown (default: '
                   "any name)")  # fmt: skip
    p.add_argument(
        "--specs",
        default="",
        help='JSON per-model overrides, e.g. {"llama3:latest": {"size_gb": 8, "load_time": 5, "tps": 40}}',
    )
    p.add_argument("--flavor", choices=("ollama", "openai"), default="ollama",
                   help="which API to speak: Ollama's or OpenAI's (/v1, like vLLM or llama.cpp's server)")  # fmt: skip
    p.add_argument("--token", default="", help="answer 401 unless 'Authorization: Bearer <token>'")
    p.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    p.add_argument("--count", type=int, default=1,
                   help="serve this many independent engines, on ports PORT to PORT+COUNT-1")  # fmt: skip
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def parse_registry(text: str) -> dict[str, float] | None:
    return {normalise(k): float(v) for k, v in json.loads(text).items()} if text else None


def config_from_args(args: argparse.Namespace) -> SimConfig:
    overrides = {normalise(k): v for k, v in json.loads(args.specs or "{}").items()}
    specs = [
        ModelSpec(
            **{
                "name": normalise(name),
                "size_gb": args.size_gb,
                "load_time": args.load_time,
                "ttft": args.ttft,
                "tps": args.tps,
                "embedding": "embed" in name,
                **overrides.get(normalise(name), {}),
            }
        )
        for name in args.models.split(",")
        if name.strip()
    ]
    return SimConfig(
        models=specs,
        parallel=args.parallel,
        max_loaded=args.max_loaded,
        memory_gb=args.memory_gb,
        max_queue=args.max_queue,
        keep_alive=args.keep_alive,
        time_scale=args.time_scale,
        min_tokens=args.min_tokens,
        speed=args.speed,
        disk_gb=args.disk_gb,
        pull_rate_mbps=args.pull_rate,
        pull_size_gb=args.pull_size_gb,
        registry={normalise(k): float(v) for k, v in json.loads(args.registry).items()}
        if args.registry
        else None,
    )


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound (as uvicorn and redis-server bind: address reuse on); ``corral up``
    checks its ports with it too."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def main(argv: list[str] | None = None) -> None:
    """``corral simulate``: either flavour, optionally behind a bearer token and over TLS."""
    import uvicorn

    from .openai import build_openai_app, require_token

    args = parse_args(argv)
    if not port_free(args.host, args.port):
        print(f"corral simulate: port {args.port} on {args.host} is in use; choose another with --port",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
    build = build_openai_app if args.flavor == "openai" else build_app
    apps: dict[int, ASGIApp] = {}
    for port in range(args.port, args.port + max(args.count, 1)):
        apps[port] = build(config_from_args(args))  # each engine its own models, memory and queue
        if args.token:
            apps[port] = require_token(apps[port], args.token, args.flavor)
    if len(apps) == 1:
        uvicorn.run(apps[args.port], host=args.host, port=args.port, log_level="warning", access_log=False,
                    ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)  # fmt: skip
        return
    sockets = [bound_socket(args.host, port) for port in apps]
    config = uvicorn.Config(by_port(apps), lifespan="off", log_level="warning", access_log=False,
                            ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)  # fmt: skip
    uvicorn.Server(config).run(sockets=sockets)


def bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def by_port(apps: dict[int, ASGIApp]) -> ASGIApp:
    """One ASGI app in front of several: a request goes to the engine of the port it came in on."""

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        await apps[scope["server"][1]](scope, receive, send)

    return route
