"""How the worker reaches an engine over HTTP: the connection settings, a pool of lean clients (one per slot plus
one for housekeeping) and the mapping of HTTP errors to the backend errors."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from corral.common.settings import Settings

from ..http import LeanClient, Response, Sent, TransportError
from .errors import BackendAuthRefused, BackendError, BackendModelMissing, BackendUnavailable


@dataclass(frozen=True)
class Connection:
    """How to reach a backend: URL, headers (may hold secrets: ``repr`` hides them), TLS, timeouts."""

    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    verify: str = "true"
    connect_timeout: float = 10.0
    read_timeout: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Connection:
        return cls(settings.engine_url, settings.engine_headers(), settings.backend_verify,
                   settings.backend_connect_timeout, settings.backend_read_timeout)  # fmt: skip

    def ssl_context(self) -> ssl.SSLContext | None:
        """For an ``https`` URL: verification on (system CAs), off, or against a CA bundle file."""
        if not self.url.startswith("https:"):
            return None
        if self.verify == "false":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if self.verify == "true":
            return ssl.create_default_context()
        return ssl.create_default_context(cafile=self.verify)

    def read_timeout_for(self, stream: bool) -> float | None:
        """Model lists answer fast (10 s unless set); a generation may wait long for its first token."""
        return self.read_timeout or (None if stream else 10.0)


async def error_message(response: Response) -> str:
    """The message of an Ollama (``{"error": "…"}``) or OpenAI (``{"error": {"message": "…"}}``) error body."""
    body = await response.read()
    text = body.decode(errors="replace")
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return text or f"HTTP {response.status_code}"
    if isinstance(error, dict):
        error = error.get("message")
    return str(error or text or f"HTTP {response.status_code}")


async def raise_for_status(response: Response) -> None:
    if response.status_code < 400:
        return
    message = await error_message(response)
    if response.status_code in (401, 403):
        raise BackendAuthRefused(f"authentication refused: {message}", response.status_code)
    if response.status_code == 404:
        raise BackendModelMissing(message, response.status_code)
    if response.status_code >= 500 or response.status_code == 429:
        raise BackendUnavailable(message, status=response.status_code)
    raise BackendError(message, response.status_code)


class Early:
    """A streamed request written before its job's task ran (``HttpPool.send_now``): the pool's client it holds
    and what it sent. ``HttpPool.stream`` reads the answer; ``discard`` (idempotent, and a no-op once the answer
    is being read) closes the connection unread and gives the client back, as a task cancelled before it ran
    must."""

    __slots__ = ("client", "pool", "sent", "used")

    def __init__(self, pool: HttpPool, client: LeanClient, sent: Sent) -> None:
        self.pool = pool
        self.client = client
        self.sent = sent
        self.used = False

    def take(self) -> LeanClient:
        self.used = True
        return self.client

    def discard(self) -> None:
        if not self.used:
            self.used = True
            self.client.drop()
            self.pool.give_back(self.client)


class HttpPool:
    """A pool of lean one-connection clients (worker/http.py), one per slot plus one for housekeeping: a slot
    never needs more than one connection, and httpx's machinery cost a third of a worker's CPU per job."""

    def __init__(self, connection: Connection, slots: int) -> None:
        self.connection = connection
        self.url = connection.url
        self._clients: asyncio.Queue[LeanClient] = asyncio.Queue()
        self._all = []
        context = connection.ssl_context()
        for _ in range(slots + 1):
            client = LeanClient(self.url, headers=connection.headers, connect_timeout=connection.connect_timeout,
                                ssl_context=context, read_timeout=connection.read_timeout_for(stream=True))  # fmt: skip
            self._all.append(client)
            self._clients.put_nowait(client)

    async def close(self) -> None:
        for client in self._all:
            await client.aclose()

    def give_back(self, client: LeanClient) -> None:
        self._clients.put_nowait(client)

    @asynccontextmanager
    async def _client(self, early: Early | None = None) -> AsyncIterator[LeanClient]:
        client = early.take() if early is not None else await self._clients.get()
        try:
            yield client
        finally:
            self._clients.put_nowait(client)

    def send_now(self, path: str, body: dict[str, Any]) -> Early | None:
        """A streamed POST written at once on a free client's kept connection; None when no client is free or
        the free one has no open connection (``stream`` then sends it)."""
        try:
            client = self._clients.get_nowait()
        except asyncio.QueueEmpty:
            return None
        sent = client.send_now("POST", path, body)
        if sent is None:
            self._clients.put_nowait(client)
            return None
        return Early(self, client, sent)

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request and its JSON answer; a long one (``body`` given) has the streaming read timeout."""
        async with self._client() as client:
            try:
                async with asyncio.timeout(self.connection.read_timeout_for(stream=body is not None)):
                    response = await client.request(method, path, body)
            except (TransportError, TimeoutError) as exc:
                raise BackendUnavailable(f"backend at {self.url} unreachable: {describe(exc)}") from exc
            await raise_for_status(response)
            raw = await response.read()
            try:
                return json.loads(raw)
            except ValueError as exc:
                raise BackendUnavailable(f"backend at {self.url}: not JSON: {raw[:200]!r}") from exc

    async def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        """One request and its raw answer (Ollama's delete and copy answer 200 with an empty body)."""
        async with self._client() as client:
            try:
                async with asyncio.timeout(self.connection.read_timeout_for(stream=False)):
                    response = await client.request(method, path, body)
            except (TransportError, TimeoutError) as exc:
                raise BackendUnavailable(f"backend at {self.url} unreachable: {describe(exc)}") from exc
            await raise_for_status(response)
            return bytes(await response.read())

    @asynccontextmanager
    async def stream(
        self, path: str, body: dict[str, Any], early: Early | None = None
    ) -> AsyncIterator[Response]:
        """A streamed POST (``early``: written already by ``send_now``). Leaving the block (or cancelling the task)
        closes the connection: the engine stops. The read timeout (``CORRAL_BACKEND_READ_TIMEOUT``, none by
        default) bounds each wait for data."""
        async with self._client(early) as client:
            try:
                async with client.stream(
                    "POST", path, body, early.sent if early is not None else None
                ) as resp:
                    await raise_for_status(resp)
                    yield resp
            except TransportError as exc:
                raise BackendUnavailable(f"backend at {self.url}: {describe(exc)}") from exc


def describe(exc: Exception) -> str:
    """A readable reason: the error's message, or its class name when it has none (a timeout often has none)."""
    return str(exc) or type(exc).__name__
