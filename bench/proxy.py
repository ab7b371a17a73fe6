"""The baselines of the scheduling benchmark: a small async Ollama proxy in front of several Ollama hosts.

``--policy round-robin`` sends each request to the next host (what Open WebUI's multi-host setting and simple
gateways do); ``--policy least-busy`` to the host with the fewest requests in flight (counted from the moment it is
chosen, so a burst spreads instead of landing on the host that looked idle); ``--policy static`` to the host a fixed
model -> host index map (``--assign '{"m": 0}'``) names, as an operator who placed models by hand would. None knows
what a host has loaded. Run: ``python -m bench.proxy --port 9000 --policy round-robin URL1 URL2 URL3``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


class Balancer:
    def __init__(self, backends: list[str], policy: str, assign: dict[str, int] | None = None) -> None:
        self.backends = backends
        self.policy = policy
        self.assign = assign or {}
        self.inflight = dict.fromkeys(backends, 0)
        self._next = itertools.cycle(backends)

    def choose(self, model: str) -> str:
        """The host for a request of ``model``, counted in flight at once (``release`` when it ends)."""
        if self.policy == "least-busy":
            backend = min(self.backends, key=lambda b: self.inflight[b])
        elif self.policy == "static":
            backend = self.backends[self.assign.get(model, 0) % len(self.backends)]
        else:
            backend = next(self._next)
        self.inflight[backend] += 1
        return backend

    def release(self, backend: str) -> None:
        self.inflight[backend] -= 1


def build_app(backends: list[str], policy: str, assign: dict[str, int] | None = None) -> Starlette:
    balancer = Balancer(backends, policy, assign)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(600, connect=10), limits=httpx.Limits(max_connections=None)
    )

    async def relay(backend: str, request: Request, body: bytes) -> AsyncIterator[bytes]:
        try:
            headers = {"content-type": "application/json"}
            async with http.stream(
                "POST", backend + request.url.path, content=body, headers=headers
            ) as answer:
                async for chunk in answer.aiter_raw():
                    yield chunk
        finally:
            balancer.release(backend)

    async def forward(request: Request) -> Response:
        body = await request.body()
        try:
            model = str(json.loads(body).get("model", ""))
        except (ValueError, AttributeError):
            model = ""
        backend = balancer.choose(model)
        stream = relay(backend, request, body)
        return StreamingResponse(stream, media_type="application/x-ndjson")

    async def tags(request: Request) -> Response:
        answer = await http.get(backends[0] + "/api/tags")
        return Response(answer.content, media_type="application/json")

    routes: list[Any] = [
        Route("/api/generate", forward, methods=["POST"]),
        Route("/api/chat", forward, methods=["POST"]),
        Route("/v1/chat/completions", forward, methods=["POST"]),  # an OpenAI-flavoured host's
        Route("/api/tags", tags, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--policy", choices=["round-robin", "least-busy", "static"], default="round-robin")
    parser.add_argument("--assign", default="{}", help="static: JSON map of model -> host index")
    parser.add_argument("backends", nargs="+")
    args = parser.parse_args(argv)
    app = build_app(args.backends, args.policy, json.loads(args.assign))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
