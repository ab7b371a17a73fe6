"""The baselines of the scheduling benchmark: a small async Ollama proxy in front of several Ollama hosts.

``--policy round-robin`` sends each request to the next host (what Open WebUI's multi-host setting and simple
gateways do); ``--policy least-busy`` to the host with the fewest requests in flight. Neither knows what a host
has loaded. Run: ``python -m bench.proxy --port 9000 --policy round-robin URL1 URL2 URL3``.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


class Balancer:
    def __init__(self, backends: list[str], policy: str) -> None:
        self.backends = backends
        self.policy = policy
        self.inflight = dict.fromkeys(backends, 0)
        self._next = itertools.cycle(backends)

    def choose(self) -> str:
        if self.policy == "least-busy":
            return min(self.backends, key=lambda b: self.inflight[b])
        return next(self._next)


def build_app(backends: list[str], policy: str) -> Starlette:
    balancer = Balancer(backends, policy)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(600, connect=10), limits=httpx.Limits(max_connections=None)
    )

    async def relay(backend: str, request: Request, body: bytes) -> AsyncIterator[bytes]:
        balancer.inflight[backend] += 1
        try:
            headers = {"content-type": "application/json"}
            async with http.stream(
                "POST", backend + request.url.path, content=body, headers=headers
            ) as answer:
                async for chunk in answer.aiter_raw():
                    yield chunk
        finally:
            balancer.inflight[backend] -= 1

    async def forward(request: Request) -> Response:
        body = await request.body()
        backend = balancer.choose()
        stream = relay(backend, request, body)
        return StreamingResponse(stream, media_type="application/x-ndjson")

    async def tags(request: Request) -> Response:
        answer = await http.get(backends[0] + "/api/tags")
        return Response(answer.content, media_type="application/json")

    routes: list[Any] = [
        Route("/api/generate", forward, methods=["POST"]),
        Route("/api/chat", forward, methods=["POST"]),
        Route("/api/tags", tags, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--policy", choices=["round-robin", "least-busy"], default="round-robin")
    parser.add_argument("backends", nargs="+")
    args = parser.parse_args(argv)
    app = build_app(args.backends, args.policy)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
