"""The ``corral`` command: the one module that wires the API, the worker and the tools together.

corral up | api | worker | redis | simulate          start parts
corral submit MODEL PROMPT [--stream] | submit MODEL --file F | status ID | watch ID | cancel ID | jobs
corral workers | queues | drain WORKER
corral keys create --scope read|submit|admin [--name N] [--rate R] [--max-jobs M] | keys list | keys revoke ID
corral models pull MODEL [--hosts A,B | --all | --replicas N] | rm MODEL | cp SRC DST | load MODEL | ls | ops
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import ValidationError

from corral.common.settings import Settings

from . import keys as key_commands
from . import models as model_commands
from .jobs import cmd_submit_batch, cmd_watch
from .remote import cmd_get, cmd_submit, jobs_query
from .stack import DEMO_OLLAMA_PORT, cmd_api, cmd_redis, cmd_up, cmd_worker


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
    model_commands.add_parser(sub)
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


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:  # the simulator has its own parser
        from corral.simulator import main as simulate

        simulate(argv[1:])
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
        "models": model_commands.cmd_models,
        "submit": cmd_submit_batch if getattr(args, "file", None) is not None else cmd_submit,
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
