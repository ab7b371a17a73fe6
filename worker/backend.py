"""The worker's client of its local Ollama (asyncio): model lists and streamed generation over NDJSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from common.errors import CorralError

from .http import LeanClient, Response, TransportError


class OllamaError(CorralError):
    """Ollama answered with an error.

    OllamaError
    ├── OllamaUnavailable   cannot connect, 5xx, 503 busy: the host is the problem, re-queue the job
    ├── OllamaModelMissing  404: this host lacks the model, re-queue for another
    └── (itself)            4xx or an error line: the request is the problem, fail the job
    """

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message, status=status)
        self.status = status


class OllamaUnavailable(OllamaError):
    pass


class OllamaModelMissing(OllamaError):
    pass


async def _error_message(response: Response) -> str:
    body = await response.read()
    try:
        return str(json.loads(body).get("error") or body.decode(errors="replace"))
    except (ValueError, AttributeError):
        return body.decode(errors="replace") or f"HTTP {response.status_code}"


async def raise_for_status(response: Response) -> None:
    if response.status_code < 400:
        return
    message = await _error_message(response)
    if response.status_code == 404:
        raise OllamaModelMissing(message, response.status_code)
    if response.status_code >= 500:
        raise OllamaUnavailable(message, response.status_code)
    raise OllamaError(message, response.status_code)


class OllamaClient:
    """A pool of lean one-connection clients, one per slot (plus one for housekeeping): a slot never needs
    more than one connection, and a shared pool costs CPU per request (see worker/http.py)."""

    def __init__(self, base_url: str, slots: int, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._clients: asyncio.Queue[LeanClient] = asyncio.Queue()
        self._all = []
        for _ in range(slots + 1):
            client = LeanClient(self.base_url, connect_timeout=timeout)
            self._all.append(client)
            self._clients.put_nowait(client)

    async def close(self) -> None:
        for client in self._all:
            await client.aclose()

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[LeanClient]:
        client = await self._clients.get()
        try:
            yield client
        finally:
            self._clients.put_nowait(client)

    async def _get(self, path: str) -> dict[str, Any]:
        async with self._client() as client:
            try:
                async with asyncio.timeout(self.timeout):
                    response = await client.request("GET", path)
            except (TransportError, TimeoutError) as exc:
                raise OllamaUnavailable(f"ollama at {self.base_url} unreachable: {exc}") from exc
            await raise_for_status(response)
            return await _json(response)

    async def list_models(self) -> list[dict[str, Any]]:
        """The models on disk (``GET /api/tags``), as Ollama describes them."""
        return list((await self._get("/api/tags")).get("models") or [])

    async def loaded_models(self) -> list[dict[str, Any]]:
        """The models in memory (``GET /api/ps``)."""
        return list((await self._get("/api/ps")).get("models") or [])

    @asynccontextmanager
    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[Response]:
        """A streamed POST. Leaving the block (or cancelling the task) closes the connection: Ollama stops."""
        async with self._client() as client:
            try:
                async with client.stream("POST", path, body) as resp:
                    await raise_for_status(resp)
                    yield resp
            except TransportError as exc:
                raise OllamaUnavailable(f"ollama at {self.base_url}: {exc}") from exc

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._client() as client:
            try:
                response = await client.request("POST", path, body)
            except TransportError as exc:
                raise OllamaUnavailable(f"ollama at {self.base_url} unreachable: {exc}") from exc
            await raise_for_status(response)
            return await _json(response)


async def _json(response: Response) -> dict[str, Any]:
    try:
        answer = await response.json()
    except ValueError as exc:
        raise OllamaUnavailable(f"ollama answered something that is not JSON: {exc}") from exc
    if not isinstance(answer, dict):
        raise OllamaError("ollama answered JSON that is not an object", response.status_code)
    return answer


async def chunks(response: Response) -> AsyncIterator[dict[str, Any]]:
    """Ollama's NDJSON lines as dicts; an ``{"error": …}`` line raises (Ollama ends the stream after it)."""
    async for line in response.aiter_lines():
        if not line.strip():
            continue
        chunk = json.loads(line)
        if "error" in chunk:
            raise OllamaError(str(chunk["error"]), -1)
        yield chunk
