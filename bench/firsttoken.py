"""Added time to first token, three routes, keep-alive and new connections, on a quiet and on a busy machine:
``python -m bench.firsttoken [--pairs N] [--rounds R] [TREE ...]`` (``make bench-ttft``).

Each route through Corral is paired with the simulator (20 ms to the first token) called directly with the same
request shape, right before it: ``POST /jobs`` streamed against the simulator's ``/api/generate``, ``/api/chat``
against its ``/api/chat``, ``/v1/chat/completions`` against its ``/api/chat`` (what the worker calls). "added" is the
difference of a pair. A round measures every route and connection mode, pair by pair in turn, once quiet and once
busy; the table gives each cell's median over the rounds (min-max in brackets). Busy: ``BUSY_PROCESSES`` processes
that sleep and wake as servers do (a few milliseconds asleep, then up to a millisecond of work), about half a core's
worth between them, started for the busy half of a round and stopped at its end. With more than one TREE, each gets
its own stack (Redis, simulator, worker, API, from that tree's ``.venv``) and the client alternates between them.

The client is a raw socket: it writes the request in one ``sendall`` and times the first token's line, so the
numbers are Corral's and the engine's, not an HTTP library's. No real-time priority, no pinning.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import orjson

from . import harness
from .core import ttft_stack
from .harness import pct

BUSY_PROCESSES = 6
BUSY_SLEEP = 0.005  # mean pause of a busy process (exponential), s
BUSY_WORK = 0.001  # longest burst of work after a pause (uniform), s


def ndjson_token(line: bytes) -> bool:
    obj = orjson.loads(line)
    return bool(obj.get("response") or (obj.get("message") or {}).get("content"))


def job_chunk(line: bytes) -> bool:
    return bool(orjson.loads(line).get("type") == "chunk")


def sse_token(line: bytes) -> bool:
    if not line.startswith(b"data: {"):
        return False
    choices = orjson.loads(line[6:]).get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


@dataclass(frozen=True)
class Route:
    name: str
    path: str  # on the dispatcher
    direct_path: str  # on the engine, for the pair's direct call
    chat: bool
    is_token: Callable[[bytes], bool]
    accept: str = "application/x-ndjson"
    direct_token: Callable[[bytes], bool] = ndjson_token
    direct_accept: str = "application/x-ndjson"


ROUTES = [
    Route("POST /jobs (stream)", "/jobs", "/api/generate", False, job_chunk),
    Route("/api/chat", "/api/chat", "/api/chat", True, ndjson_token),
    Route("/v1/chat/completions", "/v1/chat/completions", "/api/chat", True, sse_token, "text/event-stream"),
]


@dataclass(frozen=True)
class Lane:
    """One route of one dispatcher: its URL, the engine's URL for the direct call, headers it needs."""

    route: Route
    via: str
    direct: str
    headers: tuple[tuple[str, str], ...] = ()


def body_of(route: Route, prompt: str) -> bytes:
    if route.chat:
        return orjson.dumps(
            {"model": "llama3", "messages": [{"role": "user", "content": prompt}], "stream": True}
        )
    return orjson.dumps({"model": "llama3", "prompt": prompt, "stream": True})


class Endpoint:
    """One HTTP server; with ``keep_alive`` one connection reused across requests, else a new one each time."""

    def __init__(self, url: str, keep_alive: bool) -> None:
        parsed = urlparse(url)
        self.addr = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.keep_alive = keep_alive
        self.sock: socket.socket | None = None

    def connect(self) -> socket.socket:
        sock = socket.create_connection(self.addr)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(30)
        return sock

    def first_token(
        self, path: str, body: bytes, accept: str, is_token: Callable[[bytes], bool], extra: str = ""
    ) -> float:
        """Seconds from the request's start (the connect, for a new connection) to its first token's line; the
        response is read to its end. ``extra``: more header lines, each ending in CRLF."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.addr[0]}\r\nContent-Type: application/json\r\nAccept: {accept}\r\n"
            f"{extra}Content-Length: {len(body)}\r\nConnection: {'keep-alive' if self.keep_alive else 'close'}\r\n\r\n"
        )
        start = time.perf_counter()
        sock = self.sock or self.connect()
        sock.sendall(head.encode() + body)
        first = 0.0
        for line in read_lines(sock):
            if not first and line.strip() and is_token(line):
                first = time.perf_counter() - start
        if self.keep_alive:
            self.sock = sock
        else:
            sock.close()
        assert first, f"no token from {path}"
        return first

    def close(self) -> None:
        if self.sock:
            self.sock.close()


def read_lines(sock: socket.socket) -> Iterator[bytes]:
    """The lines of a chunked HTTP/1.1 response's body, each as soon as it is complete."""
    buf = b""

    def fill() -> None:
        nonlocal buf
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed mid-response")
        buf += data

    while b"\r\n\r\n" not in buf:
        fill()
    head, _, buf = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert status == 200 and b"chunked" in head.lower(), head
    body = b""
    while True:
        while b"\r\n" not in buf:
            fill()
        size_line, _, buf = buf.partition(b"\r\n")
        size = int(size_line, 16)
        while len(buf) < size + 2:
            fill()
        body, buf = body + buf[:size], buf[size + 2 :]
        *lines, body = body.split(b"\n")
        yield from lines
        if size == 0:
            return


def busy_process(seed: int, until: float) -> None:
    """Sleep a few milliseconds, work up to one, until ``until`` (a bound even if nobody stops it)."""
    rng = random.Random(seed)
    while time.time() < until:
        time.sleep(rng.expovariate(1 / BUSY_SLEEP))
        end = time.perf_counter() + rng.uniform(0, BUSY_WORK)
        while time.perf_counter() < end:
            pass


@contextmanager
def busy(bound: float) -> Iterator[list[multiprocessing.process.BaseProcess]]:
    """``BUSY_PROCESSES`` sleeping-and-waking processes for the block's duration (at most ``bound`` seconds)."""
    ctx = multiprocessing.get_context("spawn")
    until = time.time() + bound
    procs = [ctx.Process(target=busy_process, args=(k, until), daemon=True) for k in range(BUSY_PROCESSES)]
    for proc in procs:
        proc.start()
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(10)


@dataclass
class Stack:
    """A dispatcher under test (a Corral stack of one tree, or a peer) and its lanes."""

    name: str
    lanes: list[Lane]
    rig: harness.Rig | None = None  # closed with the stack (peers share one, closed by whoever started them)
    ends: dict[tuple[str, bool], Endpoint] = field(default_factory=dict)

    def endpoint(self, url: str, keep_alive: bool) -> Endpoint:
        key = (url, keep_alive)
        if key not in self.ends:
            self.ends[key] = Endpoint(url, keep_alive)
        return self.ends[key]

    def added(self, lane: Lane, keep_alive: bool, prompt: str) -> float:
        route = lane.route
        body = body_of(route, prompt)
        extra = "".join(f"{name}: {value}\r\n" for name, value in lane.headers)
        engine, via = self.endpoint(lane.direct, keep_alive), self.endpoint(lane.via, keep_alive)
        direct = engine.first_token(route.direct_path, body, route.direct_accept, route.direct_token)
        return via.first_token(route.path, body, route.accept, route.is_token, extra) - direct

    def close(self) -> None:
        for end in self.ends.values():
            end.close()
        if self.rig:
            self.rig.close()


def start_stack(tree: Path, one_process: bool = False) -> Stack:
    harness.ROOT = tree
    rig = harness.Rig()
    try:
        sim, api = ttft_stack(rig, one_process)
    except BaseException:
        rig.close()
        raise
    name = f"{tree} (api --worker)" if one_process else str(tree)
    return Stack(name, [Lane(route, api, sim) for route in ROUTES], rig)


Cell = tuple[str, str, bool, str]  # stack, route, keep-alive, scenario


def one_round(stacks: list[Stack], pairs: int, scenario: str, out: dict[Cell, list[list[float]]]) -> None:
    """``pairs`` pairs of every lane and connection mode; each pair's order alternates, route by route, then
    stack by stack (so two trees' stacks, or a peer and Corral on one route, take turns)."""
    samples: dict[Cell, list[float]] = {}
    cells = [(keep, stack, lane) for name in route_names(stacks) for keep in (True, False) for stack in stacks
             for lane in stack.lanes if lane.route.name == name]  # fmt: skip
    for i in range(pairs):
        for keep, stack, lane in cells if i % 2 == 0 else cells[::-1]:
            added = stack.added(lane, keep, f"p {i}")
            samples.setdefault((stack.name, lane.route.name, keep, scenario), []).append(added)
    for cell, values in samples.items():
        out.setdefault(cell, []).append(values)


def route_names(stacks: list[Stack]) -> list[str]:
    return list(dict.fromkeys(lane.route.name for stack in stacks for lane in stack.lanes))


def table(stacks: list[Stack], out: dict[Cell, list[list[float]]]) -> str:
    def stat(runs: list[list[float]], q: float) -> str:
        each = [(statistics.median(r) if q == 0.5 else pct(r, q)) * 1e3 for r in runs]
        return f"{statistics.median(each):.2f} ({min(each):.2f}-{max(each):.2f})"

    lines = [
        "| dispatcher | route | connection | quiet p50 | quiet p95 | busy p50 | busy p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for stack in stacks:
        for lane in stack.lanes:
            for keep in (True, False):
                quiet, busy_ = (out[(stack.name, lane.route.name, keep, s)] for s in ("quiet", "busy"))
                lines.append(
                    f"| {Path(stack.name).name} | {lane.route.name} | {'keep-alive' if keep else 'new'} | "
                    f"{stat(quiet, 0.5)} | {stat(quiet, 0.95)} | {stat(busy_, 0.5)} | {stat(busy_, 0.95)} |"
                )
    return "\n".join(lines)


def layouts(value: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    if not chosen or set(chosen) - {"two", "one"}:
        raise argparse.ArgumentTypeError(f"layouts are two and one, comma-separated; not {value!r}")
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.firsttoken", description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", type=Path, default=[harness.ROOT])
    parser.add_argument("--pairs", type=int, default=60, help="pairs per cell per round and scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--layouts",
        type=layouts,
        default="two,one",
        help="Corral's layouts, comma-separated: two (the API and a worker, two processes), one (corral api "
        "--worker: the worker in the API's process); both by default (a TREE from before 2026-12-07's "
        "corral api --worker takes only two)",
    )
    parser.add_argument(
        "--peers", default="", help="other dispatchers too, e.g. bare,bare2,roundrobin,litellm,herd"
    )
    args = parser.parse_args(argv)
    from . import firsttoken_peers
    from .dispatchers import rerun_in_netns

    peers = firsttoken_peers.parse(args.peers)
    if "herd" in peers:
        rerun_in_netns("bench.firsttoken", sys.argv[1:] if argv is None else argv)
    stacks: list[Stack] = []
    out: dict[Cell, list[list[float]]] = {}
    peer_rig: harness.Rig | None = None
    try:
        for tree in args.trees:
            for layout in args.layouts:
                stacks.append(start_stack(tree.resolve(), one_process=layout == "one"))
        if peers:
            peer_rig, peer_stacks = firsttoken_peers.start(peers)
            stacks += peer_stacks
        one_round(stacks, 5, "warm-up", {})
        for r in range(args.rounds):
            for scenario in ("quiet", "busy") if r % 2 == 0 else ("busy", "quiet"):
                load = time.time()
                if scenario == "busy":
                    with busy(bound=600):
                        one_round(stacks, args.pairs, scenario, out)
                else:
                    one_round(stacks, args.pairs, scenario, out)
                print(f"round {r + 1} {scenario}: {time.time() - load:.0f} s", flush=True)
    finally:
        for stack in stacks:
            stack.close()
        if peer_rig:
            peer_rig.close()
    n = sum(len(stack.lanes) for stack in stacks) * 2
    loads = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\nadded TTFT (through the dispatcher - the engine direct, paired), ms: median over {args.rounds} "
        f"interleaved rounds of {args.pairs} pairs per cell (min-max of the rounds); {n} cells alternating pair by "
        f"pair; busy = {BUSY_PROCESSES} sleep-and-wake processes; load average at the end {loads}\n"
    )
    print(table(stacks, out))


if __name__ == "__main__":
    main()
