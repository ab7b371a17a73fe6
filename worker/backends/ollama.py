"""Ollama's API: ``/api/tags``, ``/api/ps``, NDJSON ``/api/generate`` and ``/api/chat``, ``/api/embed``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from corral.common import jsonfast

from ..http import Response
from .base import Chunks
from .errors import BackendError
from .pool import Connection, Early, HttpPool


class OllamaBackend:
    """An Ollama server (the ``Backend`` protocol)."""

    kind = "ollama"

    def __init__(self, connection: Connection, slots: int) -> None:
        self.http = HttpPool(connection, slots)
        self.url = connection.url

    async def close(self) -> None:
        await self.http.close()

    async def list_models(self) -> list[dict[str, Any]]:
        """The models on disk (``GET /api/tags``), as Ollama describes them."""
        return list((await self.http.request("GET", "/api/tags")).get("models") or [])

    async def loaded_models(self) -> list[dict[str, Any]]:
        """The models in memory (``GET /api/ps``)."""
        return list((await self.http.request("GET", "/api/ps")).get("models") or [])

    def send_now(self, kind: str, request: dict[str, Any]) -> Early | None:
        return self.http.send_now("/api/chat" if kind == "chat" else "/api/generate", request)

    @asynccontextmanager
    async def stream(
        self, kind: str, request: dict[str, Any], early: Early | None = None
    ) -> AsyncIterator[Chunks]:
        path = "/api/chat" if kind == "chat" else "/api/generate"
        async with self.http.stream(path, request, early) as response:
            chunks = ndjson_chunks(response)
            yield chunks
            async for _ in chunks:  # read to the end: the connection is kept alive
                pass

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.http.request("POST", "/api/embed", request))

    async def show(self, model: str) -> dict[str, Any]:
        return dict(await self.http.request("POST", "/api/show", {"model": model}))

    async def version(self) -> str | None:
        found = (await self.http.request("GET", "/api/version")).get("version")
        return str(found) if found else None


async def ndjson_chunks(response: Response) -> Chunks:
    """Ollama's NDJSON lines as dicts; an ``{"error": …}`` line raises (Ollama ends the stream after it)."""
    async for line in response.aiter_lines():
        if not line.strip():
            continue
        chunk = jsonfast.loads(line)
        if "error" in chunk:
            raise BackendError(str(chunk["error"]), -1)
        yield chunk
