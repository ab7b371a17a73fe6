"""``corral models pull | rm | cp | load | ls | ops | cancel``: model management over the API, a progress bar per
host while a pull runs (docs/models.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from corral.common.settings import Settings

from .remote import add_api_options, api_client, fail
from .render import table

if TYPE_CHECKING:
    import httpx

BAR = 24
GB = 1e9


def size(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= GB / 10 else f"{n / 1e6:.0f} MB"


def bar_line(worker: str, model: str, state: dict[str, Any], width: int) -> str:
    """One host's line: bar, percent, bytes, speed, ETA and Ollama's step (or how it ended)."""
    status = str(state.get("status") or "queued")
    if state.get("total") and status in ("running", "succeeded"):
        pct = 100.0 if status == "succeeded" else float(state.get("percent") or 0)
        filled = round(BAR * pct / 100)
        done = state["total"] if status == "succeeded" else state.get("completed", 0)
        speed = f"{size(state['speed'])}/s" if state.get("speed") and status == "running" else ""
        eta = f"ETA {state['eta']:.0f}s" if state.get("eta") is not None and status == "running" else ""
        step = "done" if status == "succeeded" else str(state.get("step") or "")
        return (f"{worker:<{width}}  {model}  [{'#' * filled}{'.' * (BAR - filled)}] {pct:5.1f}%  "
                f"{size(done)}/{size(state['total'])}  {speed:>11}  {eta:>8}  {step}").rstrip()  # fmt: skip
    detail = state.get("error") or state.get("step") or ""
    return f"{worker:<{width}}  {model}  {status}{': ' + str(detail) if detail else ''}"


class Bars:
    """The hosts' lines: redrawn in place on a terminal, printed when they change (every 10 %) otherwise."""

    def __init__(self, model: str, hosts: list[str], out: TextIO) -> None:
        self.model = model
        self.states: dict[str, dict[str, Any]] = {h: {"status": "queued"} for h in hosts}
        self.out = out
        self.tty = out.isatty()
        self.drawn = 0
        self.printed: dict[str, tuple[str, int]] = {}

    def update(self, event: dict[str, Any]) -> None:
        kind, worker = event["type"], str(event.get("worker") or "")
        if kind == "progress":
            fields = ("total", "completed", "percent", "speed", "eta")
            state: dict[str, Any] = {k: event[k] for k in fields if k in event}
            self.states[worker] = {**self.states.get(worker, {}), **state, "status": "running",
                                   "step": event.get("status")}  # fmt: skip
        elif kind == "host":
            self.states[worker] = {**self.states.get(worker, {}), "status": event["status"],
                                   "error": event.get("error"), "step": None}  # fmt: skip
        elif kind == "moved":
            self.states[worker] = {"status": "moved", "step": f"worker gone: to {event['to']}"}
            self.states[str(event["to"])] = {"status": "queued"}
        self.draw()

    def draw(self) -> None:
        width = max(len(h) for h in self.states)
        if self.tty:
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")
            for worker, state in self.states.items():
                self.out.write("\x1b[2K" + bar_line(worker, self.model, state, width) + "\n")
            self.drawn = len(self.states)
        else:
            for worker, state in self.states.items():
                mark = (str(state.get("status")), int(float(state.get("percent") or 0) // 10))
                if self.printed.get(worker) != mark:
                    self.printed[worker] = mark
                    self.out.write(bar_line(worker, self.model, state, width) + "\n")
        self.out.flush()


def follow(client: httpx.Client, op: dict[str, Any], out: TextIO) -> dict[str, Any]:
    """Draw the operation's progress until it ends; its last event."""
    bars = Bars(str(op["model"]), list(op["hosts"]), out)
    bars.draw()
    last: dict[str, Any] = {}
    with client.stream("GET", f"/models/ops/{op['id']}/events") as response:
        for line in response.iter_lines():
            if line.strip():
                last = json.loads(line)
                if last["type"] != "tick":
                    bars.update(last)
    return last


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    with api_client(args, settings) as client:
        if args.action == "ls":
            return list_models(client, args.json)
        if args.action == "ops":
            response = client.get("/models/ops", params={"active": args.active})
            if response.status_code >= 400:
                return fail(response)
            print(json.dumps(response.json(), indent=2))
            return 0
        if args.action == "cancel":
            response = client.delete(f"/models/ops/{args.id}")
            return fail(response) if response.status_code >= 400 else print_op(response.json(), args.json)
        path, body = request_of(args)
        started = time.monotonic()
        response = client.post(path, json=body)
        if response.status_code >= 400:
            return fail(response)
        op = response.json()
        if args.json or getattr(args, "no_wait", False):
            print(json.dumps(op, indent=2))
            return 0
        print(f"{op['kind']} {op['model']} on {', '.join(op['hosts'])} (operation {op['id']}"
              f"{', joined a pull under way' if op.get('coalesced') else ''})")  # fmt: skip
        last = follow(client, op, sys.stdout)
        print(f"{last.get('status') or last.get('type')} in {time.monotonic() - started:.1f}s"
              + (f": {last['error']}" if last.get("error") else ""))  # fmt: skip
        return 0 if last.get("type") == "done" else 1


def request_of(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {}
    if getattr(args, "hosts", None):
        body["hosts"] = [h for h in args.hosts.split(",") if h]
    if getattr(args, "all", False):
        body["all"] = True
    if getattr(args, "replicas", None) is not None:
        body["replicas"] = args.replicas
    if args.action == "cp":
        return "/models/copy", {**body, "source": args.source, "destination": args.destination}
    if args.action == "load" and args.keep_alive is not None:
        body["keep_alive"] = args.keep_alive
    path = {"pull": "/models/pull", "rm": "/models/delete", "load": "/models/load"}[args.action]
    return path, {**body, "model": args.model}


def list_models(client: httpx.Client, as_json: bool) -> int:
    response = client.get("/models")
    if response.status_code >= 400:
        return fail(response)
    models = response.json()["models"]
    if as_json:
        print(json.dumps(models, indent=2))
        return 0
    rows = [[m["name"], size(max([h.get("size", 0) for h in m.get("hosts", [])] or [0])),
             str(m.get("queued", 0)),
             ", ".join(h["worker"] + (" (loaded)" if h.get("loaded") else "") for h in m.get("hosts", []))]
            for m in models]  # fmt: skip
    print(table(rows, ["MODEL", "SIZE", "QUEUED", "HOSTS"]))
    return 0


def print_op(op: dict[str, Any], as_json: bool) -> int:
    print(json.dumps(op, indent=2) if as_json else f"{op['id']}: {op['status']}")
    return 0


def add_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="model management: pull, rm, cp, load, ls, ops, cancel")
    actions = models.add_subparsers(dest="action", required=True)

    def action(name: str, helptext: str, placed: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=helptext)
        add_api_options(p)
        if placed:
            p.add_argument("--hosts", help="comma-separated worker ids")
        return p

    pull = action("pull", "pull a model onto hosts, with a progress bar per host")
    pull.add_argument("model", help="the model, e.g. llama3 (llama3:latest)")
    pull.add_argument("--all", action="store_true", help="every host")
    pull.add_argument("--replicas", type=int, help="this many hosts, chosen by the scheduler")
    pull.add_argument("--no-wait", action="store_true", help="print the operation and return")
    action("rm", "delete a model from every host that has it (or --hosts)").add_argument(
        "model", help="the model to delete"
    )
    cp = action("cp", "copy a model on every host that has it (or --hosts)")
    cp.add_argument("source", help="the model to copy")
    cp.add_argument("destination", help="the new name")
    load = action("load", "warm a model on N hosts that have it")
    load.add_argument("model", help="the model to load and keep warm")
    load.add_argument("--replicas", type=int, help="hosts to warm it on (default 1)")
    load.add_argument("--keep-alive", help="how long it stays loaded, as Ollama takes it (10m, -1 = forever)")
    action("ls", "which host has which model, loaded or on disk, its size", placed=False)
    ops = action("ops", "the newest model operations", placed=False)
    ops.add_argument("--active", action="store_true", help="only those not ended")
    action("cancel", "cancel a model operation", placed=False).add_argument(
        "id", help="the operation id (corral models ops)"
    )
