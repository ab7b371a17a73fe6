"""``corral hosts add | ls | rm | test`` (through the API's ``/hosts``, an admin key) and ``corral fleet`` (one
process serving every registered host): engines used by URL, with nothing installed beside them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from corral.common.hosts import HostSpec, configured_hosts
from corral.common.settings import Settings

from .remote import add_api_options, api_client, fail
from .render import table


def add_host_options(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """The options of one host (``hosts add``), or the URLs of many (``fleet``, ``up``: ``--host`` repeated)."""
    if many:
        parser.add_argument("--host", action="append", default=[], metavar="URL", dest="hosts",
                            help="register and serve this engine (repeat for more); its name is host-port")  # fmt: skip
        return
    parser.add_argument("url", help="the engine's base URL, e.g. http://gpu-1:11434 or https://vllm:8000/v1")
    parser.add_argument("--name", default="", help="the host's name and worker id (default: host-port)")
    parser.add_argument("--kind", choices=("auto", "ollama", "openai"), default="auto",
                        help="the engine's API; auto: openai when the URL ends in /v1")  # fmt: skip
    parser.add_argument("--token", help="bearer token for the engine ('-' reads it from stdin)")
    parser.add_argument("--header", action="append", default=[], metavar="NAME=VALUE", help="extra header")
    parser.add_argument("--slots", type=int, default=4, help="concurrent jobs on this host")
    parser.add_argument("--weight", type=float, default=1.0, help="scheduler weight / priority")
    parser.add_argument("--max-loaded-models", type=int, default=0, help="models it can hold at once")
    parser.add_argument(
        "--verify", default="true", help="TLS: true, false or a CA bundle path (on the fleet)"
    )


def add_parsers(sub: Any) -> None:
    hosts = sub.add_parser("hosts", help="engines registered by URL, served by `corral fleet` (admin key)")
    actions = hosts.add_subparsers(dest="action", required=True)
    add = actions.add_parser(
        "add", help="register an engine by URL (a fleet process serves it within seconds)"
    )
    add_host_options(add)
    actions.add_parser("ls", help="the registered hosts and their health")
    rm = actions.add_parser("rm", help="unregister a host (its worker drains first)")
    rm.add_argument("name", help="the host's name (corral hosts ls)")
    test = actions.add_parser(
        "test", help="connection test: reachable, version, models, a one-token generation"
    )
    test.add_argument("name", help="the host's name (corral hosts ls)")
    for action in (add, rm, test, actions.choices["ls"]):
        add_api_options(action)
    fleet = sub.add_parser("fleet", help="one process serving every registered host (a worker each)")
    add_host_options(fleet, many=True)


def host_body(args: argparse.Namespace) -> dict[str, Any]:
    token = sys.stdin.readline().strip() if args.token == "-" else args.token
    names = ("url", "name", "kind", "slots", "weight", "max_loaded_models", "verify")
    body: dict[str, Any] = {name: getattr(args, name) for name in names}
    if token:
        body["token"] = token
    if args.header:
        body["headers"] = ",".join(args.header)
    return body


def host_rows(hosts: list[dict[str, Any]]) -> str:
    rows = []
    for host in hosts:
        health = host.get("health") or {}
        busy = f"{health.get('slots_busy', 0)}/{host['slots']}"
        rows.append([host["name"], health.get("status", "-"), host["url"], host["kind"], busy,
                     ",".join(health.get("models") or []) or "-", health.get("served_by") or "-"])  # fmt: skip
    return table(rows, ["HOST", "STATUS", "URL", "KIND", "SLOTS", "MODELS", "FLEET"])


def print_test(answer: dict[str, Any]) -> int:
    for check in answer.get("checks", []):
        print(f"{'✓' if check['ok'] else '✗'} {check['text']}")
    print(
        f"{'OK' if answer.get('ok') else 'FAILED'}: host {answer.get('name')} (tested by {answer.get('served_by')})"
    )
    return int(answer.get("code", 1))


def cmd_hosts(args: argparse.Namespace, settings: Settings) -> int:
    with api_client(args, settings) as http:
        if args.action == "add":
            response = http.post("/hosts", json=host_body(args))
        elif args.action == "ls":
            response = http.get("/hosts")
        elif args.action == "rm":
            response = http.delete(f"/hosts/{args.name}")
        else:
            response = http.post(f"/hosts/{args.name}/test", timeout=60)
        if response.status_code >= 400:
            return fail(response)
        body = response.json()
    if args.json:
        print(json.dumps(body, indent=2))
        return int(body.get("code", 0)) if args.action == "test" else 0
    if args.action == "ls":
        print(host_rows(body["hosts"]))
    elif args.action == "add":
        print(f"host {body['name']} registered: {body['url']} ({body['kind']}, {body['slots']} slots)")
    elif args.action == "rm":
        print(f"host {body['name']} removed: its worker drains, then stops")
    else:
        return print_test(body)
    return 0


def cmd_fleet(args: argparse.Namespace, settings: Settings) -> int:
    from corral.worker.fleet import run_fleet

    from .stack import setup_logging

    try:
        hosts = [HostSpec(url=url) for url in args.hosts] + configured_hosts(settings)
    except ValidationError as exc:
        print(f"corral fleet: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"corral fleet: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)
    run_fleet(settings, hosts)
    return 0
