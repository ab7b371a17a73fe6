"""Client commands that talk to the API over HTTP: ``submit``, ``status``, ``cancel``, ``jobs``, ``workers``,
``queues``, ``drain``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

from corral.common.settings import Settings

from .render import render


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
