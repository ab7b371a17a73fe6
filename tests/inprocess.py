"""The API app in the test process (httpx.ASGITransport) against a real redis-server: thousands of requests in
seconds, for the fuzz and auth-matrix tests. The app's lifespan runs as in production (Redis, bus, janitor)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import redis

from corral.api import create_app
from corral.common.settings import Settings

# one key per scope, for CORRAL_API_KEYS
KEYS = {
    "read": "test-read-key-0123456789",
    "submit": "test-submit-key-0123456789",
    "admin": "test-admin-key-0123456789",
}
API_KEYS = ",".join(f"{key}:{scope}" for scope, key in KEYS.items())
PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")


class InProcessAPI:
    """``create_app(settings)`` with its lifespan entered, served through ``httpx.ASGITransport``."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = create_app(settings)
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self._lifespan.__aenter__())
        transport = httpx.ASGITransport(app=self.app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://corral.test")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        call = self.client.request(method, path, **kwargs)
        return self.loop.run_until_complete(asyncio.wait_for(call, 20))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self.loop.close()


def routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves, from its route table (FastAPI's included routers
    flattened), so that a route added later is in the fuzz and the auth matrix without anyone listing it."""
    found: set[tuple[str, str]] = set()

    def walk(items: list[Any]) -> None:
        for route in items:
            if hasattr(route, "effective_route_contexts"):  # FastAPI's lazily included router
                walk(list(route.effective_route_contexts()))
            elif hasattr(route, "routes") and not hasattr(route, "methods"):  # a Mount or a router
                walk(list(route.routes))
            else:
                for method in getattr(route, "methods", None) or ():
                    found.add((method, str(route.path)))

    walk(list(app.router.routes))
    return sorted(found, key=lambda mp: (mp[1], mp[0]))


def fill(template: str, values: dict[str, str]) -> str:
    """A path template with its parameters filled (``{job_id}`` → ``values['job_id']``)."""
    return PARAM.sub(lambda m: values.get(m.group(1), "x"), template)


def snapshot(client: redis.Redis) -> tuple[frozenset[bytes], tuple[tuple[bytes, int], ...]]:
    """Every key (the janitor's lock and the API's direct-link registration aside: the process' own, renewed on a
    timer) and the length of every list: what a request could have written."""
    names = frozenset(
        k for k in client.keys("*") if k != b"corral:janitor:lock" and not k.startswith(b"corral:link:")
    )
    lengths = tuple(sorted((k, int(client.llen(k))) for k in names if client.type(k) == b"list"))
    return names, lengths
