"""Model management over the API (``Client.models``, ``AsyncClient.models``): pull, delete, copy, create and load
with placement, the fleet's models, and an operation's state and live events (docs/models.md).

One class builds every request; its transport decides whether a method answers the JSON (``Client``) or an
awaitable of it (``AsyncClient``), so the two clients cannot drift apart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

import httpx

from .protocol import api_reached, raise_for

T = TypeVar("T")
LONG = httpx.Timeout(30.0, read=None)  # a write with ``wait`` answers at the operation's end


def placement(hosts: list[str] | str | None, every: bool, replicas: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if hosts:
        body["hosts"] = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    if every:
        body["all"] = True
    if replicas is not None:
        body["replicas"] = replicas
    return body


def answer(response: httpx.Response, field: str | None = None) -> Any:
    """The JSON of a response (or one field of it); an error answer raises its exception (``raise_for``)."""
    raise_for(response)
    data = response.json()
    return data[field] if field else data


def event_of(line: str) -> dict[str, Any] | None:
    """One NDJSON line of an operation's events; None for blank lines and the keep-alive ``tick``."""
    if not line.strip():
        return None
    event: dict[str, Any] = json.loads(line)
    return None if event.get("type") == "tick" else event


class Operations(Generic[T]):
    """The model operations over ``send(method, path, body, field)``: each write answers the operation (``id``,
    ``status``, ``hosts``: each host's state); ``wait=True`` answers at its end."""

    def __init__(self, send: Callable[[str, str, dict[str, Any] | None, str | None], T]) -> None:
        self._send = send

    def pull(self, model: str, *, hosts: list[str] | str | None = None, every: bool = False,
             replicas: int | None = None, wait: bool = False) -> T:  # fmt: skip
        """Pull ``model`` onto ``hosts``, ``every`` host or ``replicas`` of them (default: the API's
        ``CORRAL_PULL_REPLICAS``)."""
        body = {"model": model, "wait": wait, **placement(hosts, every, replicas)}
        return self._send("POST", "/models/pull", body, None)

    def delete(self, model: str, *, hosts: list[str] | str | None = None, wait: bool = True) -> T:
        """Delete ``model`` from every host that has it (or ``hosts``); its running jobs finish first."""
        body = {"model": model, "wait": wait, **placement(hosts, False, None)}
        return self._send("POST", "/models/delete", body, None)

    def copy(self, source: str, destination: str, *, hosts: list[str] | str | None = None,
             wait: bool = True) -> T:  # fmt: skip
        body = {"source": source, "destination": destination, "wait": wait, **placement(hosts, False, None)}
        return self._send("POST", "/models/copy", body, None)

    def load(self, model: str, *, replicas: int | None = None, hosts: list[str] | str | None = None,
             keep_alive: str | int | None = None, wait: bool = True) -> T:  # fmt: skip
        """Warm ``model`` on ``replicas`` hosts that have it (Ollama's empty generate with ``keep_alive``)."""
        body = {"model": model, "wait": wait, **placement(hosts, False, replicas)}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        return self._send("POST", "/models/load", body, None)

    def create(self, model: str, wait: bool = True, **request: Any) -> T:
        """Ollama's create (``from``, ``system``, …: forwarded as-is), placed like a pull."""
        return self._send("POST", "/models/create", {"model": model, "wait": wait, **request}, None)

    def list(self) -> T:
        """Each model of the live fleet with ``hosts``: the workers that have it, loaded or not, its size."""
        return self._send("GET", "/models", None, "models")

    def operation(self, op_id: str) -> T:
        return self._send("GET", f"/models/ops/{op_id}", None, None)

    def cancel(self, op_id: str) -> T:
        return self._send("DELETE", f"/models/ops/{op_id}", None, None)


class ModelOps(Operations[Any]):
    """``Client.models``: the answers as they come."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        super().__init__(self._call)

    def _call(self, method: str, path: str, body: dict[str, Any] | None, field: str | None) -> Any:
        with api_reached():
            return answer(self.http.request(method, path, json=body, timeout=LONG), field)

    def events(self, op_id: str, after: str = "0-0") -> Iterator[dict[str, Any]]:
        """The operation's events until its end (``progress`` per host: status, total, completed, percent,
        speed, eta; ``host`` when a host ends; then ``done``, ``error`` or ``cancelled``)."""
        path = f"/models/ops/{op_id}/events"
        with self.http.stream("GET", path, params={"after": after}, timeout=LONG) as response:
            if response.status_code >= 400:
                response.read()
                answer(response)
            for line in response.iter_lines():
                if (event := event_of(line)) is not None:
                    yield event


class AsyncModelOps(Operations[Awaitable[Any]]):
    """``AsyncClient.models``: the same methods, awaited (``events`` is an async iterator)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        super().__init__(self._call)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None, field: str | None) -> Any:
        with api_reached():
            return answer(await self.http.request(method, path, json=body, timeout=LONG), field)

    async def events(self, op_id: str, after: str = "0-0") -> AsyncIterator[dict[str, Any]]:
        """As ``ModelOps.events``."""
        path = f"/models/ops/{op_id}/events"
        async with self.http.stream("GET", path, params={"after": after}, timeout=LONG) as response:
            if response.status_code >= 400:
                await response.aread()
                answer(response)
            async for line in response.aiter_lines():
                if (event := event_of(line)) is not None:
                    yield event
