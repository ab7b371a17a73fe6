"""The ``corral`` command: the one module that wires the API, the worker and the tools together.

corral up | api | worker | redis | simulate          start parts
corral submit MODEL PROMPT [--follow | --wait] [--queue-anyway] | submit MODEL --file F
corral status ID | watch ID | cancel ID | jobs
corral workers | queues | drain WORKER
corral hosts add URL [--name N] [--token T] [--kind K] [--slots S] | hosts ls | hosts rm NAME | hosts test NAME
corral fleet [--host URL …]                        one process serving every registered host
corral keys create --scope read|submit|admin [--name N] [--rate R] [--max-jobs M] | keys list | keys revoke ID
corral config [--json]                              the effective settings; --config PATH on every command
corral models pull MODEL [--hosts A,B | --all | --replicas N] | rm MODEL | cp SRC DST | load MODEL | ls | ops
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.common.settings import Settings

from . import config as config_commands
from . import failures
from . import hosts as host_commands
from . import keys as key_commands
from . import models as model_commands
from .jobs import cmd_submit_batch, cmd_watch
from .lifeline import tie_to_parent
from .remote import add_api_options, api_base, cmd_get, cmd_submit, jobs_query
from .stack import DEMO_OLLAMA_PORT, cmd_api, cmd_redis, cmd_up, cmd_worker


def add_part_parsers(sub: Any) -> None:
    """``up``, ``api`` and ``worker``: the commands that start parts."""
    up = sub.add_parser("up", help="embedded Redis + API + worker (+ simulator when no Ollama answers)")
    up.add_argument("--port", type=int, help="port of the API (default CORRAL_API_PORT, 8000)")
    up.add_argument("--demo", action="store_true", help="always use the bundled Ollama simulator")
    up.add_argument("--sim-port", type=int, default=None,
                    help=f"port of the simulator if started (default {DEMO_OLLAMA_PORT}; a free one if that is "
                    "busy)")  # fmt: skip
    up.add_argument("--worker-process", action="store_true",
                    help="run the worker as a process of its own (default: in the API's process, corral api "
                    "--worker)")  # fmt: skip
    host_commands.add_host_options(up, many=True)
    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", help="address to bind (default CORRAL_API_HOST, 127.0.0.1)")
    api.add_argument("--port", type=int, help="port to bind (default CORRAL_API_PORT, 8000)")
    api.add_argument(
        "--worker", action="store_true", help="also run a worker for the configured engine, in this process"
    )
    worker = sub.add_parser(
        "worker", help="run a worker for the configured backend (Ollama or OpenAI-compatible)"
    )
    worker.add_argument("--check", action="store_true",
                        help="test the backend (reachable, auth, models, a 1-token generation) and exit: "
                        "0 ok, 4 unreachable, 5 auth refused, 6 no models, 7 generation failed")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral",
        description="Redis-queue job dispatcher for Ollama fleets",
        epilog="exit codes: 0 ok, 1 a job failed, 2 bad usage/settings/input, 3 API/Redis/backend unreachable, "
        "130 interrupted (docs/operations.md#exit-codes)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_part_parsers(sub)
    sub.add_parser("redis", help="run the embedded redis-server (infra/redis.conf, AOF on)")
    sub.add_parser("simulate", help="run the bundled Ollama simulator (corral simulate --help)")
    key_commands.add_parser(sub)
    host_commands.add_parsers(sub)
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
        add_api_options(p)
        if name == "submit":
            add_submit_options(p)
        if name in ("status", "watch", "cancel"):
            p.add_argument("id", help="the job id")
        if name == "drain":
            p.add_argument("id", help="the worker id")
        if name == "jobs":
            p.add_argument("--status", help="queued, running, succeeded, failed or cancelled")
            p.add_argument("--model", help="only this model's jobs")
            p.add_argument("--worker", help="only the jobs this worker ran")
            p.add_argument("--since", help="epoch seconds or ISO 8601")
            p.add_argument("--limit", type=int, help="jobs per page")
            p.add_argument("--cursor", help="next page (printed after a full page)")
    config_commands.add_parser(sub)
    config_commands.add_config_option(parser, sub)
    return parser


def add_submit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the model, e.g. llama3 (llama3:latest)")
    p.add_argument("prompt", nargs="?", help="the prompt (or --file)")
    p.add_argument("--file", help="many jobs: a prompt (or a JSON job body) per line; - reads stdin")
    p.add_argument("--system", help="a system prompt")
    p.add_argument("--follow", "--stream", dest="follow", action="store_true",
                   help="print the tokens as they arrive, until the job ends")  # fmt: skip
    p.add_argument("--wait", action="store_true",
                   help="wait for the job to end and print its text (--json: its final view)")  # fmt: skip
    p.add_argument("--queue-anyway", action="store_true",
                   help='queue the job even if no live worker has the model yet ("wait": true in the API)')  # fmt: skip


def check_submit(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command != "submit":
        return
    if (args.prompt is None) == (args.file is None):
        parser.error("submit takes a PROMPT or --file, one of the two")
    if args.file is not None and args.follow:
        parser.error("--follow follows one job; with --file a progress bar shows the batch")
    if args.follow and args.wait:
        parser.error("--follow already waits for the end; --wait prints only the result")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    tie_to_parent()  # a child of `corral up` dies with it
    if argv[:1] == ["simulate"]:  # the simulator has its own parser
        from corral.simulator import main as simulate

        def run_simulator() -> int:
            simulate(argv[1:])
            return failures.OK

        sys.exit(failures.run("simulate", run_simulator, "", ""))
    parser = build_parser()
    args = parser.parse_args(argv)
    check_submit(parser, args)
    settings = config_commands.load_settings(args.command, args.config)
    settings.data_dir = Path(settings.data_dir)
    args.argv = argv  # (`corral api` runs itself again with them: cmd_api)
    handlers: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
        "up": cmd_up,
        "api": cmd_api,
        "worker": cmd_worker,
        "redis": cmd_redis,
        "keys": key_commands.cmd_keys,
        "hosts": host_commands.cmd_hosts,
        "fleet": host_commands.cmd_fleet,
        "config": config_commands.cmd_config,
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
    api_url = api_base(args, settings) if hasattr(args, "api_url") else ""
    code = failures.run(args.command, lambda: handlers[args.command](args, settings), api_url,
                        settings.redis_url, debug=settings.log_level == "DEBUG")  # fmt: skip
    sys.exit(code)


if __name__ == "__main__":
    main()
