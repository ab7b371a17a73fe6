"""``corral keys create | list | revoke``: API keys stored hashed in Redis (see docs/security.md)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from corral.common.errors import CorralError
from corral.common.settings import Settings

from .render import table


def row(record: dict[str, Any]) -> list[str]:
    def limit(name: str) -> str:
        return "default" if record.get(name) is None else str(record[name])

    return [record["id"], record["scope"], record.get("name") or "-", limit("rate"), limit("max_jobs")]


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """API keys stored (hashed) in Redis: needs the Redis URL of a user that may write ``corral-auth:*``."""
    from corral.api import apikeys as auth
    from corral.common.connections import sync_redis

    client = sync_redis(settings.redis_url, name="corral-keys")
    try:
        if args.action == "create":
            scope = auth.Scope.parse(args.scope)
            key, principal = auth.create_key(client, scope, args.name or "", args.rate, args.max_jobs)
            print(key)
            print(
                f"id {principal.id}, scope {scope.word}: keep the key now, it is not stored", file=sys.stderr
            )
        elif args.action == "list":
            rows = auth.list_keys(client)
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                print(table([row(r) for r in rows], ["ID", "SCOPE", "NAME", "RATE/S", "MAX JOBS"]))
        else:
            gone = auth.revoke_key(client, args.id)
            if not gone:
                print(f"no key with id or name {args.id!r}", file=sys.stderr)
                return 2
            print("revoked " + ", ".join(gone))
        return 0
    except CorralError as exc:
        print(f"corral keys: {exc.message}", file=sys.stderr)
        return 2
    finally:
        client.close()


def add_parser(sub: Any) -> None:
    keys_cmd = sub.add_parser("keys", help="API keys stored hashed in Redis: create, list, revoke")
    actions = keys_cmd.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key (printed once; only its hash is stored)")
    create.add_argument("--scope", required=True, choices=["read", "submit", "admin"],
                        help="read ⊂ submit ⊂ admin (docs/security.md)")  # fmt: skip
    create.add_argument("--name", help="a label, e.g. the team or service using the key")
    create.add_argument("--rate", type=float, help="requests per second (default CORRAL_RATE_LIMIT)")
    create.add_argument(
        "--max-jobs", type=int, help="queued + running jobs (default CORRAL_MAX_JOBS_PER_KEY)"
    )
    listing = actions.add_parser("list", help="the keys: id, scope, name, limits (never the keys)")
    listing.add_argument("--json", action="store_true", help="print the keys as JSON (for scripts)")
    revoke = actions.add_parser("revoke", help="revoke the key(s) with this id or name")
    revoke.add_argument("id", help="the key's id or name (corral keys list)")
