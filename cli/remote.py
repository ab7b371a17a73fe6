"""Client commands that talk to the API over HTTP: ``submit``, ``status``, ``cancel``, ``jobs``, ``workers``,
``queues``, ``drain``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from corral.common.settings import Settings

from .render import render

if TYPE_CHECKING:
    import httpx


def add_api_options(parser: argparse.ArgumentParser) -> None:
    """``--api-url`` and ``--json``: every command that talks to the API takes them."""
    parser.add_argument("--api-url", "--api", dest="api_url", metavar="URL",
                        help="the API's base URL (default CORRAL_API_URL, else "
                        "http://CORRAL_API_HOST:CORRAL_API_PORT)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")


def api_base(args: argparse.Namespace, settings: Settings) -> str:
    """``--api-url``, else ``CORRAL_API_URL`` (or its older name ``CORRAL_API``), else the local API's address."""
    given = args.api_url or settings.api_url or os.environ.get("CORRAL_API")
    return (given or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")


def api_client(args: argparse.Namespace, settings: Settings) -> httpx.Client:
    import httpx  # (here: `corral api`, `worker` and `simulate` run through this package and need no HTTP client)

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
    import httpx

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
    """Submit one job: print its id, or its tokens as they arrive (``--follow``), or its text when it ends
    (``--wait``). Exit 1 when a followed or awaited job does not succeed."""
    body: dict[str, Any] = {"model": args.model, "prompt": args.prompt, "wait": args.queue_anyway}
    if args.system:
        body["system"] = args.system
    with api_client(args, settings) as http:
        response = http.post("/jobs", json=body)
        if response.status_code != 202:
            return fail(response)
        job = response.json()
        if not (args.follow or args.wait):
            print(job["id"] if not args.json else json.dumps(job))
            return 0
        last = stream_events(http, job["id"], show_tokens if args.follow else lambda event: None)
        if args.follow:
            print()
        elif last.get("type") == "done":
            view = http.get(f"/jobs/{job['id']}").json()
            print(json.dumps(view) if args.json else view.get("text", ""))
        if last.get("type") != "done":
            print(f"job {job['id']}: {last.get('type')}: {last.get('error') or last.get('reason')}",
                  file=sys.stderr)  # fmt: skip
            return 1
        return 0


def show_tokens(event: dict[str, Any]) -> None:
    if event["type"] == "chunk":
        print(event["text"], end="", flush=True)
    elif event["type"] == "retry":
        print(f"\n[retry: {event.get('reason')}]", file=sys.stderr)


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
